"""Training metrics to TensorBoard (`edlm train --log tensorboard`) as well as metrics.jsonl."""

import json
import sys

import pytest

from conftest import micro_configs
from edlm.api.trainer import train_run as train
from edlm.cli import main
from edlm.errors import EdlmError


def test_tensorboard_gets_the_metrics_of_metrics_jsonl(synthetic_data, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    m, t = micro_configs(max_steps=4, save_every=4, eval_every=2)
    train(t, m, tmp_path / "r", quiet=True, log="tensorboard")
    events = list((tmp_path / "r" / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0
    acc = EventAccumulator(str(tmp_path / "r" / "tensorboard"))
    acc.Reload()
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == [r["step"] for r in train_rows] == [1, 2, 3, 4]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in train_rows], rel=1e-6)
    assert [e.step for e in acc.Scalars("val/loss")] == [2, 4]
    assert {"train/lr", "train/grad_norm", "train/tokens_per_second"} <= set(acc.Tags()["scalars"])


def test_default_writes_metrics_jsonl_only(synthetic_data, tmp_path):
    m, t = micro_configs(max_steps=1, save_every=1)
    train(t, m, tmp_path / "r", quiet=True)
    assert (tmp_path / "r" / "metrics.jsonl").exists() and not (tmp_path / "r" / "tensorboard").exists()


def test_missing_tensorboard_is_one_clear_error_before_training(synthetic_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    m, t = micro_configs(max_steps=1)
    with pytest.raises(EdlmError, match=r"pip install 'edlm\[tensorboard\]'"):
        train(t, m, tmp_path / "api", quiet=True, log=["tensorboard"])
    assert not (tmp_path / "api").exists()
    capsys.readouterr()
    assert main(["train", "--preset", "micro", "--data", "synthetic", "--max_steps", "1", "--quiet",
                 "--log", "tensorboard", "--out", str(tmp_path / "cli")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["edlm train: error: logging to TensorBoard needs the tensorboard package: "
                   "pip install 'edlm[tensorboard]'"]
    assert not (tmp_path / "cli").exists()
    with pytest.raises(EdlmError, match="unknown log 'wandb'"):
        train(t, m, tmp_path / "api", quiet=True, log="wandb")
