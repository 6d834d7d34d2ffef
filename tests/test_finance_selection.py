"""Early stopping on the validation score: EMA snapshots are candidates of the do-no-harm selection."""

from __future__ import annotations

import json

import torch

from sciffusion.domains.finance import selection
from sciffusion.training.fit import load_trained
from sciffusion.training.snapshots import load_snapshot, snapshot_path, snapshots_before


def _train(data, run, small_train, *extra):
    from sciffusion.cli import main

    return main(["train", "scenarios", "--data", str(data), "--train-period", ":2012-12-31", "--context", "20",
                 "--horizon", "5", "--max-steps", "6", "--out", str(run), *small_train,
                 "--set", "trainer.snapshot_every=2", *extra])


def test_snapshots_are_candidates_and_the_chosen_one_is_what_the_run_samples_with(tmp_path, prices, small_train,
                                                                                     monkeypatch, capsys):
    data = tmp_path / "p.csv"
    prices.to_csv(data)
    assert _train(data, tmp_path / "a", small_train) == 0
    assert snapshots_before(tmp_path / "a", 10**9) == [2, 4]          # every 2 steps, not the last (step 6)
    sel = json.loads((tmp_path / "a" / "metadata.json").read_text())["metrics"]["net_weight_selection"]
    assert sorted(sel["snapshots"]) == ["2", "4"] and sel["alpha"] == 0.05 / 3   # 3 candidates: 2, 4 and 6
    assert set(sel["snapshots"]["2"]["mean_score_ratio_to_base"]) == {"0.0", "0.25", "0.5", "0.75", "1.0"}

    # force the choice of step 2's weights: the exported EMA weights must then be that snapshot's
    monkeypatch.setattr(selection, "choose_weight", lambda ratios, pvalues=None, **kw: (1.0, -2))
    assert _train(data, tmp_path / "b", small_train) == 0
    run = load_trained(tmp_path / "b")
    want = load_snapshot(tmp_path / "b", 2)
    got = run.module.ema.shadow.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert not all(torch.equal(got[k], v) for k, v in load_snapshot(tmp_path / "b", 4).items())
    sel = run.metadata["metrics"]["net_weight_selection"]
    assert sel["snapshot_step"] == 2 and "EMA weights of step 2 (of 6)" in sel["chosen"]
    assert run.config["sampling"]["net_weight"] == 1.0


def test_a_snapshot_left_by_a_longer_attempt_is_not_a_candidate(tmp_path):
    for step in (2, 4, 8):
        path = snapshot_path(tmp_path, step)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"w": torch.zeros(1)}, path)
    assert snapshots_before(tmp_path, 6) == [2, 4]
    assert snapshots_before(tmp_path / "none", 6) == []
