"""A lower layer never imports a higher one (brief: maths < networks < training < tasks < domains < cli)."""

import ast
import pathlib

LAYERS = ["diffusion", "nets", "training", "tasks", "domains", "cli"]
ROOT = pathlib.Path(__file__).resolve().parents[1] / "sciffusion"


def imported_layers(path: pathlib.Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level >= 2 or mod.startswith("sciffusion."):
                head = mod.split(".")[1 if mod.startswith("sciffusion.") else 0] if mod else ""
                found.add(head)
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("sciffusion.")}
    return found & set(LAYERS)


def test_no_upward_imports():
    checked = 0
    for i, layer in enumerate(LAYERS):
        pkg = ROOT / layer
        for path in pkg.rglob("*.py") if pkg.is_dir() else [p for p in [ROOT / f"{layer}.py"] if p.exists()]:
            higher = imported_layers(path) & set(LAYERS[i + 1:])
            assert not higher, f"{path.relative_to(ROOT)} (layer {layer}) imports higher layer(s) {higher}"
            checked += 1
    assert checked >= 8
