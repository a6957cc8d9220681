"""Kill a training (SIGKILL, no clean-up runs) at every stage of a checkpoint save, before its first save and
mid-step, then resume: the losses and final weights are bit-identical to an uninterrupted run and no metric
row is duplicated.

The trainer runs in a forked child (no re-import: ~1 s per case) that SIGKILLs itself at the chosen point;
the parent resumes in-process. Both use one thread so that float sums are reproducible across them.
"""

import json
import os
import signal

import pytest
import torch
from safetensors.torch import load_file

from conftest import micro_configs
from edlm.api.trainer import train_run as train
from edlm.runs import checkpoint as ckpt

STEPS, SAVE_EVERY, KILL_AT = 6, 2, 4  # the kill hits the save of step 4; the step-2 checkpoint is complete


def _rows(run):
    """The metric rows without their timings (tokens_per_second, elapsed)."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("tokens_per_second", "elapsed")} for r in rows]


def _final_weights(run):
    d = ckpt.checkpoint_dir(run)
    return load_file(str(d / "model.safetensors")), load_file(str(d / "ema.safetensors"))


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def reference(synthetic_data, tmp_path_factory):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    m, t = micro_configs(max_steps=STEPS, save_every=SAVE_EVERY)
    run = tmp_path_factory.mktemp("ref") / "run"
    train(t, m, run, quiet=True)
    torch.set_num_threads(n)
    return run


def _die():
    os.kill(os.getpid(), signal.SIGKILL)


def _arm(stage: str):
    """Patch the checkpoint writer so this process SIGKILLs itself at `stage` of the step-KILL_AT save."""
    state = {"armed": False, "fsync": 0, "json": 0}
    real_save, real_fsync, real_json = ckpt.save_checkpoint, ckpt.fsync_path, ckpt.atomic_write_json
    # fsync order within a save: model, rng, ema, optim files; then the temp folder; then checkpoints/
    fsync_stage = {"after-model": 1, "after-rng": 2, "after-ema": 3, "after-optim": 4, "before-rename": 5,
                   "after-rename": 6}

    def save(run, step, *a, **k):
        if step == KILL_AT:
            if stage == "before-save":  # rows of this step are logged, nothing of its save is written
                _die()
            state["armed"] = True
        return real_save(run, step, *a, **k)

    def fsync(p):
        real_fsync(p)
        if state["armed"]:
            state["fsync"] += 1
            if fsync_stage.get(stage) == state["fsync"]:
                _die()

    def write_json(p, obj):
        if state["armed"]:
            state["json"] += 1
            if (stage, state["json"]) in (("before-state", 1), ("before-latest", 2)):
                _die()
        real_json(p, obj)
        if state["armed"] and (stage, state["json"]) == ("after-latest", 2):
            _die()  # latest.json moved; the old checkpoint folder not yet deleted

    ckpt.save_checkpoint, ckpt.fsync_path, ckpt.atomic_write_json = save, fsync, write_json


def _killed_run(run, stage, **over):
    """Train in a child that dies at `stage`; returns its exit signal."""
    m, t = micro_configs(**{"max_steps": STEPS, "save_every": SAVE_EVERY, **over})
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            torch.set_num_threads(1)
            if stage == "mid-step":
                from edlm.training import objectives

                real, calls = objectives.MDLMObjective.__call__, {"n": 0}

                def call(self, model, *a, **k):
                    calls["n"] += model.training  # training steps only (the save check scores in eval mode)
                    if calls["n"] == KILL_AT + 1:
                        _die()
                    return real(self, model, *a, **k)

                objectives.MDLMObjective.__call__ = call
            else:
                _arm(stage)
            train(t, m, run, quiet=True)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.waitstatus_to_exitcode(status)


STAGES = ["before-save", "after-model", "after-rng", "after-ema", "after-optim", "before-state", "before-rename",
          "after-rename", "before-latest", "after-latest", "mid-step"]


@pytest.mark.parametrize("stage", STAGES)
def test_kill_at_each_save_stage_then_resume_is_bit_identical(reference, tmp_path, one_thread, stage):
    run = tmp_path / "run"
    assert _killed_run(run, stage) == signal.SIGKILL
    expect_step = KILL_AT if stage in ("after-latest", "mid-step") else SAVE_EVERY
    assert json.loads((run / "latest.json").read_text())["step"] == expect_step
    m, t = micro_configs(max_steps=STEPS, save_every=SAVE_EVERY)
    train(t, m, run, resume=True, quiet=True)
    assert _rows(run) == _rows(reference)  # every row once, every float bit-identical
    for a, b in zip(_final_weights(run), _final_weights(reference), strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not list((run / "checkpoints").glob(".tmp-*"))  # the crash's half-built folder is gone
    assert not (run / "train.lock").exists()


def test_kill_before_first_save_resumes_without_duplicate_rows(reference, tmp_path, one_thread):
    run = tmp_path / "run"
    assert _killed_run(run, "mid-step", save_every=100) == signal.SIGKILL
    assert not (run / "latest.json").exists() and len(_rows(run)) == KILL_AT
    m, t = micro_configs(max_steps=STEPS, save_every=SAVE_EVERY)
    train(t, m, run, resume=True, quiet=True)
    steps = [r["step"] for r in _rows(run) if "loss" in r]
    assert steps == list(range(1, STEPS + 1))
    assert _rows(run) == _rows(reference)


def test_resume_after_torn_last_metrics_line_replays_it(reference, tmp_path, one_thread):
    run = tmp_path / "run"
    assert _killed_run(run, "mid-step") == signal.SIGKILL
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "loss": 3.1')  # a row cut off by the kill
    m, t = micro_configs(max_steps=STEPS, save_every=SAVE_EVERY)
    train(t, m, run, resume=True, quiet=True)
    assert _rows(run) == _rows(reference)
