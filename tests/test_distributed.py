"""2-process DDP on CPU (gloo, launched by torchrun) gives the same losses as 1 process on the same global batch."""

import json
import os
import subprocess
import sys

import pytest

ARGS = ["--n_layers", "2", "--d_model", "32", "--n_heads", "2", "--cond_dim", "16", "--max_len", "16",
        "--seq_len", "16", "--max_steps", "4", "--log_every", "1", "--ema", "0", "--eval_every", "0",
        "--save_every", "4", "--data", "synthetic", "--quiet", "--device", "cpu"]


def _losses(run, key="loss"):
    return [r[key] for r in map(json.loads, open(run / "metrics.jsonl")) if key in r]


@pytest.mark.distributed
@pytest.mark.parametrize("objective", ["mdlm", "ar", "nce"])
def test_ddp_two_processes_match_one(synthetic_data, tmp_path, objective):
    # NCE too: its negatives are drawn at the masked positions, a count that differs between ranks; the
    # draw must not shift the ranks' random streams apart (the losses would then differ from step 2 on).
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EDLM_NO_PROGRESS": "1"}
    one = tmp_path / "one"
    two = tmp_path / "two"
    extra = []
    if objective == "nce":
        subprocess.run([sys.executable, "-m", "edlm", "train", "--objective", "mdlm", "--out", str(tmp_path / "m"),
                        "--batch_size", "8", *ARGS], check=True, env=env, capture_output=True)
        # NCE losses move slowly from log 4 (the energy head starts at zero): more steps, a larger lr, and a
        # tight tolerance on the loss and the negatives' mean energy (the drift seen before was 1e-4 - 1e-3)
        extra = ["--diffusion", str(tmp_path / "m"), "--lr", "1e-2", "--max_steps", "8"]
    subprocess.run([sys.executable, "-m", "edlm", "train", "--objective", objective, "--out", str(one),
                    "--batch_size", "8", *ARGS, *extra], check=True, env=env, capture_output=True)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                        "--master_port", str(29500 + os.getpid() % 1000), "-m", "edlm", "train",
                        "--objective", objective, "--out", str(two), "--batch_size", "4", *ARGS, *extra],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = _losses(one), _losses(two)
    assert len(a) == len(b) == (8 if objective == "nce" else 4)
    assert a == pytest.approx(b, abs=2e-5 if objective == "nce" else 1e-4)
    if objective == "nce":
        assert _losses(one, "e_neg") == pytest.approx(_losses(two, "e_neg"), abs=2e-5)
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["world_size"] == 2


def _fsdp_available():
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.distributed
@pytest.mark.skipif(not _fsdp_available(), reason="this torch has no FSDP2 (fully_shard)")
def test_fsdp2_save_and_resume_on_another_world_size(synthetic_data, tmp_path):
    # FSDP2 on 2 CPU processes (gloo) for 2 steps, saved as full tensors, resumed by ONE process to 4 steps:
    # the losses equal an uninterrupted single-process run (same global batch, noise from one global draw).
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EDLM_NO_PROGRESS": "1"}
    common = ARGS[:ARGS.index("--max_steps")] + ARGS[ARGS.index("--log_every"):ARGS.index("--save_every")] + \
        ARGS[ARGS.index("--data"):]
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, "-m", "edlm", "train", "--objective", "mdlm", "--out", str(one),
                    "--batch_size", "8", "--max_steps", "4", "--save_every", "2", *common],
                   check=True, env=env, capture_output=True)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                        "--master_port", str(30500 + os.getpid() % 1000), "-m", "edlm", "train",
                        "--objective", "mdlm", "--out", str(two), "--batch_size", "4", "--max_steps", "2",
                        "--save_every", "2", "--parallel", "fsdp", *common],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run([sys.executable, "-m", "edlm", "train", "--out", str(two), "--resume", "--max_steps", "4",
                        "--quiet"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _losses(one) == pytest.approx(_losses(two), abs=1e-4)
