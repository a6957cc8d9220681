"""2-process DDP on CPU (gloo, launched by torchrun) gives the same losses as 1 process on the same global batch."""

import json
import os
import subprocess
import sys

import pytest

ARGS = ["--n_layers", "2", "--d_model", "32", "--n_heads", "2", "--cond_dim", "16", "--max_len", "16",
        "--seq_len", "16", "--max_steps", "4", "--log_every", "1", "--ema", "0", "--eval_every", "0",
        "--save_every", "4", "--data", "synthetic", "--quiet", "--device", "cpu"]


def _losses(run):
    return [r["loss"] for r in map(json.loads, open(run / "metrics.jsonl")) if "loss" in r]


@pytest.mark.distributed
@pytest.mark.parametrize("objective", ["mdlm", "ar"])
def test_ddp_two_processes_match_one(synthetic_data, tmp_path, objective):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EDLM_NO_PROGRESS": "1"}
    one = tmp_path / "one"
    two = tmp_path / "two"
    subprocess.run([sys.executable, "-m", "edlm", "train", "--objective", objective, "--out", str(one),
                    "--batch_size", "8", *ARGS], check=True, env=env, capture_output=True)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                        "--master_port", str(29500 + os.getpid() % 1000), "-m", "edlm", "train",
                        "--objective", objective, "--out", str(two), "--batch_size", "4", *ARGS],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = _losses(one), _losses(two)
    assert len(a) == len(b) == 4
    assert a == pytest.approx(b, abs=1e-4)
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
