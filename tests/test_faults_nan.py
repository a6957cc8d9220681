"""NaN / overflow: non-finite or diverged weights are never saved, "the last good checkpoint" is only said when
true, --resume can lower the learning rate, and sample/eval refuse a non-finite checkpoint."""

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import micro_configs
from edlm.api.trainer import train_run as train
from edlm.errors import EdlmError
from edlm.runs import checkpoint as ckpt
from faultlib import MICRO, assert_one_clear_error, cli, latest_dir


def _poison_weights_after(monkeypatch, n_steps):
    """The optimizer writes NaN into one weight from its n-th step on (what lr=inf or an fp16 overflow does)."""
    real, calls = torch.optim.AdamW.step, {"n": 0}

    def step(self, *a, **k):
        out = real(self, *a, **k)
        calls["n"] += 1
        if calls["n"] >= n_steps:
            with torch.no_grad():
                self.param_groups[0]["params"][0].view(-1)[0] = float("nan")
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", step)


def test_nan_weights_are_never_saved_and_the_last_good_checkpoint_is_finite(synthetic_data, tmp_path, monkeypatch):
    _poison_weights_after(monkeypatch, 3)
    m, t = micro_configs(max_steps=6, save_every=1)
    with pytest.raises(EdlmError, match=r"after step 3 the weights hold NaN/inf.*last good checkpoint \(step 2"):
        train(t, m, tmp_path / "r", quiet=True)
    run = tmp_path / "r"
    assert json.loads((run / "latest.json").read_text())["step"] == 2
    assert not (run / "checkpoints" / "step_0000003").exists()
    for name in ("model.safetensors", "ema.safetensors"):
        assert ckpt.non_finite(load_file(str(latest_dir(run) / name))) is None


def test_nan_loss_before_any_save_does_not_claim_a_good_checkpoint(synthetic_data, tmp_path, capsys):
    rc, err = cli(capsys, ["train", "--out", tmp_path / "r", *MICRO, "--lr", "1e6", "--save_every", "1"])
    assert_one_clear_error(rc, err, "No checkpoint was saved", "--resume --lr")
    assert "last good" not in err and not (tmp_path / "r" / "latest.json").exists()


def test_diverging_loss_stops_with_the_rule_in_the_message(synthetic_data, tmp_path, monkeypatch):
    from edlm.training import objectives

    real, calls = objectives.MDLMObjective.__call__, {"n": 0}

    def blowup(self, model, *a, **k):
        calls["n"] += model.training  # count training steps only (the save check scores in eval mode)
        s, c, e = real(self, model, *a, **k)
        return (s * 1e3 if calls["n"] > 4 else s), c, e

    monkeypatch.setattr(objectives.MDLMObjective, "__call__", blowup)
    m, t = micro_configs(max_steps=8, save_every=2)
    with pytest.raises(EdlmError, match=r"at step 5 is over 10x the first step's.*diverging.*last good checkpoint "
                                        r"\(step 4"):
        train(t, m, tmp_path / "r", quiet=True)


def test_diverged_but_finite_weights_are_not_saved(synthetic_data, tmp_path, capsys):
    # lr 10: the step-1 weights are finite but score ~100 nats/token; before, they became "the last good
    # checkpoint". Now the save refuses them.
    rc, err = cli(capsys, ["train", "--out", tmp_path / "r", *MICRO, "--lr", "10", "--save_every", "1"])
    assert_one_clear_error(rc, err, "after step 1 the weights score a validation loss", "No checkpoint was saved")
    assert not (tmp_path / "r" / "latest.json").exists()


def test_resume_with_a_lower_lr_wins_over_the_saved_lr(synthetic_data, tmp_path, capsys):
    run = tmp_path / "r"
    rc, _ = cli(capsys, ["train", "--out", run, *MICRO, "--lr", "10", "--save_every", "1"])
    assert rc == 2
    rc, err = cli(capsys, ["train", "--out", run, "--resume", "--lr", "0.002", "--max_steps", "4", "--quiet"])
    assert rc == 0, err
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in rows if "lr" in r] == [0.001, 0.002, 0.002, 0.002]  # warm-up 2, then 0.002
    meta = json.loads((run / "run.json").read_text())
    assert meta["train"]["lr"] == 0.002
    assert meta["resumed"] == [{"changed": {"lr": [10.0, 0.002], "max_steps": [10, 4]}}]


def _save_unguarded(run, monkeypatch, scale):
    """A checkpoint written by an older edlm (no guard): the run's weights times `scale`."""
    from edlm.runs.load import load_model

    model, _ = load_model(run)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    state = json.loads((latest_dir(run) / "state.json").read_text())
    with monkeypatch.context() as mp:
        mp.setattr(ckpt, "non_finite", lambda *a, **k: None)  # what an edlm without the guard wrote
        ckpt.save_checkpoint(run, 3, model, model, None, {k: state[k] for k in ("loader", "identity")})


@pytest.mark.parametrize("command", ["sample", "eval"])
def test_sample_and_eval_refuse_a_nan_checkpoint(synthetic_data, tmp_path, capsys, monkeypatch, command):
    run = tmp_path / "r"
    assert cli(capsys, ["train", "--out", run, *MICRO, "--max_steps", "2"])[0] == 0
    _save_unguarded(run, monkeypatch, float("nan"))
    argv = (["sample", "--ckpt", run, "--out", tmp_path / "s.jsonl"] if command == "sample"
            else ["eval", "nelbo", "--ckpt", run, "--max-blocks", "2"])
    rc, err = cli(capsys, argv)
    assert_one_clear_error(rc, err, "ema.safetensors holds NaN/inf weights")


def test_eval_refuses_to_report_a_non_finite_nll(synthetic_data, tmp_path, capsys, monkeypatch):
    run = tmp_path / "r"
    assert cli(capsys, ["train", "--out", run, *MICRO, "--max_steps", "2"])[0] == 0
    _save_unguarded(run, monkeypatch, 1e30)  # finite weights whose outputs overflow
    rc, err = cli(capsys, ["eval", "nelbo", "--ckpt", run, "--max-blocks", "2"])
    assert_one_clear_error(rc, err, "came out nan")
