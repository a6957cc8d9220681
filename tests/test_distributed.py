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


@pytest.mark.distributed
@pytest.mark.skipif(not _fsdp_available(), reason="this torch has no FSDP2 (fully_shard)")
def test_fsdp2_with_one_process_saves_and_resumes_plain(synthetic_data, tmp_path):
    # torchrun with ONE process and --parallel fsdp shards over a group of one (the path measured on one GPU);
    # its checkpoint resumes in a plain process, and the losses equal an uninterrupted plain run.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EDLM_NO_PROGRESS": "1"}
    common = ARGS[:ARGS.index("--max_steps")] + ARGS[ARGS.index("--log_every"):ARGS.index("--ema")] + \
        ARGS[ARGS.index("--eval_every"):ARGS.index("--save_every")] + ARGS[ARGS.index("--data"):]
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, "-m", "edlm", "train", "--out", str(one), "--batch_size", "8", "--max_steps", "4",
                    "--save_every", "2", *common], check=True, env=env, capture_output=True)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1",
                        "--master_port", str(31500 + os.getpid() % 1000), "-m", "edlm", "train", "--out", str(two),
                        "--batch_size", "8", "--max_steps", "2", "--save_every", "2", "--parallel", "fsdp", *common],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["fsdp"] is True and summary["world_size"] == 1
    r = subprocess.run([sys.executable, "-m", "edlm", "train", "--out", str(two), "--resume", "--max_steps", "4"],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["fsdp"] is False
    assert _losses(one) == pytest.approx(_losses(two), abs=1e-4)


GPU_RUN = os.environ.get("EDLM_FSDP_GPU_RUN")


@pytest.mark.distributed
@pytest.mark.skipif(not GPU_RUN, reason="set EDLM_FSDP_GPU_RUN to a run folder saved by FSDP2 on one GPU "
                    "(benchmarks/gpu_round3.sh writes one, as fsdp1_run.tar.gz)")
def test_gpu_fsdp2_checkpoint_resumes_on_cpu_gloo(synthetic_data, tmp_path):
    # A checkpoint written by FSDP2 with world size 1 on a GPU (NCCL, bf16 autocast; data `synthetic`) resumes on
    # the CPU under torchrun with 2 processes on gloo, sharded again, for 2 more steps: finite losses, the step
    # count goes on.
    import shutil

    run = tmp_path / "run"
    shutil.copytree(GPU_RUN, run)
    meta = json.loads((run / "run.json").read_text())
    saved = max(r["step"] for r in map(json.loads, open(run / "metrics.jsonl")) if "loss" in r)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EDLM_NO_PROGRESS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                        "--master_port", str(32500 + os.getpid() % 1000), "-m", "edlm", "train", "--out", str(run),
                        "--resume", "--max_steps", str(saved + 2), "--device", "cpu", "--parallel", "fsdp",
                        "--eval_batches", "1", "--accept-data-change"], env=env, capture_output=True, text=True)
    # --accept-data-change: the `synthetic` corpus there was prepared by another torch / numpy build, whose
    # floating-point transition table (and so the manifest hash) need not match this one's to the last bit
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["steps"] == saved + 2 and summary["fsdp"] is True and summary["device"] == "cpu"
    losses = _losses(run)
    assert len(losses) >= saved + 2 and all(x == x and abs(x) < 1e4 for x in losses)
    assert meta["train"]["parallel"] == "fsdp"
