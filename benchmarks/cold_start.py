"""Cold start: what the first sample of a new process costs, beyond starting Python, torch and CUDA.

    python benchmarks/cold_start.py --out results/cold_start.json
Makes a `small` MDLM run folder (12x768, GPT-2-size vocabulary 50257 + MASK, length 1024, random weights),
then times whole processes, wall clock from spawn to exit:
  bare     python -c "import torch; <one CUDA op>; import edlm.cli"      (the floor no command goes below)
  sample   edlm sample --num 1 --steps 1 (one sample, one step) with the fused kernels
           auto (the default: plain until a job is long enough to pay for compiling them), on (compile at
           the first call: the behaviour before), off; each with fresh compile caches (a new machine), and
           `on` once more with the caches the previous process left (what caching across processes buys);
  job      edlm sample --num 16 --steps 128 --batch-size 16 (default; and --compile, fresh caches): its JSON
           splits the time into fixed cost and per-step cost.
Every process gets its own TORCHINDUCTOR_CACHE_DIR / TRITON_CACHE_DIR unless it is the warm-cache run.
Also times the fused kernels against their plain versions in one process (`calibration`): the numbers
behind edlm.utils.FUSED_* (the auto rule's estimate of what a plain call loses and what compiling costs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import device_info, write_json  # noqa: E402

V = 50257


def make_run(root: Path) -> Path:
    """A `small` MDLM run folder with random weights; its corpus manifest names a wide synthetic tokenizer
    (ids shown as <id>), so nothing needs fetching."""
    import torch

    from edlm.config.model import TransformerConfig
    from edlm.models.transformer import Transformer
    from edlm.presets import small
    from edlm.runs.checkpoint import save_checkpoint
    from edlm.utils import atomic_write_json

    data = root / "data"
    atomic_write_json(data / "textfile" / "manifest.json", {
        "format_version": 1, "corpus": "textfile", "tokenizer": "synthetic", "vocab_size": V, "mask_id": V,
        "dtype": "uint16", "splits": {s: {"file": f"{s}.bin", "tokens": 0} for s in ("train", "valid", "test")}})
    mcfg, tcfg = small()
    mcfg = TransformerConfig(**{**mcfg.to_dict(), "vocab_size": V + 1})
    torch.manual_seed(0)
    model = Transformer(mcfg)
    torch.nn.init.normal_(model.final.linear.weight, std=0.02)
    run = root / "run"
    atomic_write_json(run / "run.json", {"objective": "mdlm", "data": "textfile", "tokenizer": "synthetic",
                                         "mask_id": V, "vocab_size": V, "model": mcfg.to_dict(),
                                         "train": {**tcfg.to_dict(), "data": "textfile"}, "global_batch": 32})
    save_checkpoint(run, 0, model, None, None, {})
    return run


def timed_process(cmd: list[str], env: dict) -> dict:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:  # recorded, not raised: the other measurements still run
        print(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-3000:]}", flush=True)
        return {"wall_s": float("nan"), "error": p.stderr[-1500:]}
    out = {"wall_s": wall}
    last = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""
    if last.startswith("{"):
        js = json.loads(last)
        out.update({k: js.get(k) for k in ("startup_s", "sampling_s", "per_step_s", "fixed_s", "steps_run", "fused",
                                           "seconds_per_sample")})
    return out


CALIBRATE = r"""
import json, time, torch
from edlm.sampling.categorical import _draw_plain
from edlm.diffusion.losses import _log_normaliser
from edlm.utils import fused_on_gpu, set_fused_default
set_fused_default("on")
V, W = 50257, 50304
out = {}
for name, fn, extra in (("draw", _draw_plain, "u"), ("log_normaliser", _log_normaliser, None)):
    fused = fused_on_gpu(fn)
    def args(n):
        x = torch.randn(n, W, device="cuda").to(torch.bfloat16)
        return (x, torch.rand(n, 1, dtype=torch.float64, device="cuda"), V) if extra else (x, V)
    a = args(256)
    torch.cuda.synchronize(); t0 = time.perf_counter(); fused(*a); torch.cuda.synchronize()
    rows = {"compile_s": time.perf_counter() - t0}
    for n in (16, 128, 1024, 16384):
        a = args(n)
        for label, f in (("plain", fn), ("fused", fused)):
            for _ in range(3): f(*a)
            torch.cuda.synchronize(); t0 = time.perf_counter()
            for _ in range(20): f(*a)
            torch.cuda.synchronize(); rows[f"{label}_s_{n}"] = (time.perf_counter() - t0) / 20
    out[name] = rows
print(json.dumps(out))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/cold_start.json")
    ap.add_argument("--repeats", type=int, default=3, help="bare start-ups and default one-sample runs")
    ap.add_argument("--skip-compile-job", action="store_true", help="leave out the --compile job (~1 min)")
    ap.add_argument("--job", default="16:128", help="NUM:STEPS of the job runs (batch = NUM)")
    ap.add_argument("--skip-calibration", action="store_true", help="leave out the fused-kernel timings (~30 s)")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="edlm_cold_"))
    run = make_run(tmp)
    py = sys.executable
    base_env = {**os.environ, "EDLM_DATA": str(tmp / "data"), "EDLM_NO_PROGRESS": "1"}
    base_env.pop("EDLM_FUSED", None)
    base_env.pop("EDLM_NO_FUSED", None)
    n_cache = [0]

    def env(fused=None, cache=None):
        if cache is None:  # fresh compile caches: a new machine
            n_cache[0] += 1
            cache = tmp / f"cache{n_cache[0]}"
        e = {**base_env, "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"), "TRITON_CACHE_DIR": str(cache / "triton")}
        if fused:
            e["EDLM_FUSED"] = fused
        return e, cache

    head = {**device_info(), "model": "small MDLM (12x768), vocabulary 50257 + MASK, length 1024, random weights",
            "note": "wall_s: spawn to exit of the whole process; startup_s/sampling_s/per_step_s/fixed_s: from "
                    "`edlm sample`'s JSON"}
    res: dict = {}

    def emit():
        write_json(a.out, {**head, **res}, quiet=True)

    bare = [py, "-c", "import torch; torch.ones(1, device='cuda' if torch.cuda.is_available() else 'cpu').sum()"
                      ".item(); import edlm.cli"]
    res["bare"] = [timed_process(bare, env()[0]) for _ in range(a.repeats)]
    # bare + loading the run's model onto the device: what loading costs
    load = [py, "-c", "import torch; from edlm.runs.load import load_model; from edlm.utils import pick_device; "
            f"d = pick_device(); load_model({str(run)!r}, d); torch.ones(1, device=d).sum().item(); import edlm.cli"]
    res["bare_and_load"] = [timed_process(load, env()[0]) for _ in range(a.repeats)]
    emit()
    one = [py, "-m", "edlm", "sample", "--ckpt", str(run), "--out", str(tmp / "o.jsonl"), "--num", "1", "--steps",
           "1", "--batch-size", "1", "--quiet"]
    res["one_sample_auto"] = [timed_process(one, env()[0]) for _ in range(a.repeats)]
    emit()
    e_on, cache_on = env("on")
    res["one_sample_on_fresh_cache"] = timed_process(one, e_on)
    res["one_sample_on_warm_cache"] = timed_process(one, env("on", cache_on)[0])
    res["one_sample_off"] = timed_process(one, env("off")[0])
    emit()
    num, steps = a.job.split(":")
    job = [py, "-m", "edlm", "sample", "--ckpt", str(run), "--out", str(tmp / "j.jsonl"), "--num", num, "--steps",
           steps, "--batch-size", num, "--quiet"]
    res[f"job_{num}x{steps}_auto"] = timed_process(job, env()[0])
    emit()
    if not a.skip_compile_job:
        res[f"job_{num}x{steps}_compile_fresh_cache"] = timed_process(job + ["--compile"], env()[0])
        emit()
    if "cuda" in head["device"] and not a.skip_calibration:
        p = subprocess.run([py, "-c", CALIBRATE], env=env()[0], capture_output=True, text=True)
        res["calibration"] = json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else p.stderr[-2000:]
    b = statistics.median(r["wall_s"] for r in res["bare"])
    s1 = statistics.median(r["wall_s"] for r in res["one_sample_auto"])
    res["summary"] = {"bare_s": b, "one_sample_s": s1, "one_sample_beyond_bare_s": s1 - b,
                      "load_beyond_bare_s": statistics.median(r["wall_s"] for r in res["bare_and_load"]) - b,
                      "one_sample_beyond_bare_max_s": max(r["wall_s"] for r in res["one_sample_auto"]) - b,
                      "one_sample_fused_on_fresh_cache_beyond_bare_s": res["one_sample_on_fresh_cache"]["wall_s"] - b,
                      "one_sample_fused_on_warm_cache_beyond_bare_s": res["one_sample_on_warm_cache"]["wall_s"] - b,
                      "target_beyond_bare_s": 1.5}
    emit()
    print(json.dumps(res["summary"], indent=1))


if __name__ == "__main__":
    main()
