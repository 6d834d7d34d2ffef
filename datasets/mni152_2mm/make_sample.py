"""How the 2 mm sample was cut from nilearn's copy of the MNI ICBM152 2009 templates (run once, needs nilearn).

2 x 2 x 2 block means of the 1 mm T1 and white-matter maps (the last 1 mm plane of each axis is dropped to make
the sizes even), rounded back to uint8; the affine's origin moves to the centre of the first block.
"""

import pathlib

import nibabel as nib
import numpy as np
from nilearn.datasets import data as nilearn_data

SRC = pathlib.Path(nilearn_data.__file__).parent
OUT = pathlib.Path(__file__).parent

for name, src in [("t1", "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"),
                  ("wm", "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz")]:
    img = nib.load(SRC / src)
    a = np.asanyarray(img.dataobj).astype(np.float64)
    a = a[: a.shape[0] // 2 * 2, : a.shape[1] // 2 * 2, : a.shape[2] // 2 * 2]
    b = a.reshape(a.shape[0] // 2, 2, a.shape[1] // 2, 2, a.shape[2] // 2, 2).mean(axis=(1, 3, 5))
    affine = img.affine.copy()
    affine[:3, :3] *= 2
    affine[:3, 3] += img.affine[:3, :3] @ np.full(3, 0.5)
    out = nib.Nifti1Image(np.round(b).astype(np.uint8), affine)
    out.header.set_xyzt_units("mm")
    out.header["descrip"] = b"MNI ICBM152 2009a sym, 2mm block mean"
    nib.save(out, OUT / f"mni152_{name}_2mm.nii.gz")
