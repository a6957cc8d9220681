"""Training loop: runs, resumes exactly, refuses to clobber a run, stops cleanly on a NaN loss."""

import json
from dataclasses import replace

import pytest
import torch

from conftest import micro_configs
from edlm.api.trainer import train_run as train
from edlm.errors import EdlmError


def _losses(run):
    return [r["loss"] for r in map(json.loads, open(run / "metrics.jsonl")) if "loss" in r]


@pytest.mark.parametrize("objective", ["mdlm", "ar"])
def test_resume_continues_exactly(synthetic_data, tmp_path, objective):
    m, t = micro_configs(objective, max_steps=6, save_every=3)
    train(t, m, tmp_path / "full", quiet=True)
    train(replace(t, max_steps=3), m, tmp_path / "half", quiet=True)
    train(t, m, tmp_path / "half", resume=True, max_steps=6, quiet=True)
    full, half = _losses(tmp_path / "full"), _losses(tmp_path / "half")
    assert len(full) == len(half) == 6
    assert full == pytest.approx(half, rel=0, abs=1e-6)


def test_resume_after_crash_between_log_and_save(synthetic_data, tmp_path):
    # Steps 4-5 were logged but never checkpointed (a crash): resuming from step 3 replays them, and the
    # metrics read as one uninterrupted run.
    m, t = micro_configs("mdlm", max_steps=6, save_every=3)
    train(t, m, tmp_path / "full", quiet=True)
    run = tmp_path / "crash"
    train(replace(t, max_steps=5, save_every=3), m, run, quiet=True)
    import shutil

    latest = json.loads((run / "latest.json").read_text())
    shutil.rmtree(run / latest["dir"])  # lose the step-5 checkpoint, as if we crashed before writing it
    (run / "latest.json").write_text(json.dumps({"step": 3, "dir": "checkpoints/step_0000003"}))
    assert (run / "checkpoints" / "step_0000003").exists()
    train(t, m, run, resume=True, max_steps=6, quiet=True)
    full, crash = _losses(tmp_path / "full"), _losses(run)
    assert len(crash) == 6
    assert full == pytest.approx(crash, rel=0, abs=1e-6)


def test_existing_run_is_never_overwritten(synthetic_data, tmp_path):
    m, t = micro_configs(max_steps=2)
    train(t, m, tmp_path / "r", quiet=True)
    before = (tmp_path / "r" / "latest.json").read_text()
    with pytest.raises(EdlmError, match="`resume=True`"):
        train(t, m, tmp_path / "r", quiet=True)
    assert (tmp_path / "r" / "latest.json").read_text() == before


def test_nan_loss_stops_and_keeps_last_good_checkpoint(synthetic_data, tmp_path, monkeypatch):
    from edlm.training import objectives

    m, t = micro_configs(max_steps=6, save_every=2)
    calls = {"n": 0}
    real = objectives.MDLMObjective.__call__

    def flaky(self, model, *a, **k):
        calls["n"] += model.training  # training steps only (the check before a save scores in eval mode)
        s, c, e = real(self, model, *a, **k)
        return (s * float("nan") if calls["n"] > 3 else s), c, e

    monkeypatch.setattr(objectives.MDLMObjective, "__call__", flaky)
    with pytest.raises(EdlmError, match="loss became nan at step 3"):
        train(t, m, tmp_path / "r", quiet=True)
    latest = json.loads((tmp_path / "r" / "latest.json").read_text())
    assert latest["step"] == 2
    from edlm.runs.load import load_model

    model, meta = load_model(tmp_path / "r")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_gradient_accumulation_matches_big_batch(synthetic_data, tmp_path):
    # Sums divided once by the global count: 2 x 4 sequences == 1 x 8 sequences (same blocks, same noise
    # per sequence is not guaranteed, so compare the AR objective, which has no noise).
    m, t = micro_configs("ar", max_steps=3, ema=0.0)
    train(replace(t, batch_size=8), m, tmp_path / "big", quiet=True)
    train(replace(t, batch_size=4, grad_accum=2), m, tmp_path / "acc", quiet=True)
    a, b = _losses(tmp_path / "big"), _losses(tmp_path / "acc")
    assert a == pytest.approx(b, abs=2e-5)


def test_ema_decay_warms_up():
    # With a fixed 0.999 decay a 400-step run's EMA would still hold 67% of the initial weights.
    from edlm.training.optim import EMA

    model = torch.nn.Linear(3, 3)
    ema = EMA(model, 0.999)
    assert ema.decay_at(0) == pytest.approx(0.1) and ema.decay_at(10 ** 6) == 0.999
    with torch.no_grad():
        model.weight.fill_(1.0)
    for step in range(400):
        ema.update(model, step)
    assert (ema.state_dict()["weight"] - 1.0).abs().max() < 0.05


def test_resume_without_training_state_is_a_clear_error(synthetic_data, tmp_path):
    m, t = micro_configs(max_steps=2)
    train(t, m, tmp_path / "r", quiet=True)
    from edlm.runs.checkpoint import save_checkpoint
    from edlm.runs.load import load_model

    model, _ = load_model(tmp_path / "r")
    save_checkpoint(tmp_path / "r", 2, model, None, None, {"converted_from": "mdlm-hf"})  # as `edlm convert` writes
    with pytest.raises(EdlmError, match="no training state to resume"):
        train(t, m, tmp_path / "r", resume=True, max_steps=4, quiet=True)
