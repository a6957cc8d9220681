"""Bounds before work: a job too big for the device's free memory, a loop count past sense, an edge value
(device, seed, denormal temperature, a huge [MASK*N], a malformed samples row) is one clear error (CLI:
exit 2, one line, nothing written) before any work; and the memory estimate holds against measured peaks."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edlm.errors import EdlmError
from edlm.sampling import budget
from faultlib import assert_one_clear_error, cli

ROOT = Path(__file__).resolve().parents[1]
HUGE = str(10 ** 11)


@pytest.fixture(scope="module")
def runs(micro_runs):
    return micro_runs  # ROOT/mdlm and ROOT/ar, 16 tokens, the synthetic corpus


def _sample(runs, tmp_path, *extra):
    argv = ["sample", "--ckpt", runs / "mdlm", "--out", tmp_path / "s.jsonl", "--num", "2", "--steps", "2"]
    return argv + [a.replace("AR", str(runs / "ar")) for a in extra]


SAMPLE_CASES = [
    (["--device", "tpu"], "device 'tpu' is not understood"),
    (["--device", "cuda:x"], "device 'cuda:x' is not understood"),
    (["--device", "meta"], "device 'meta' is not understood"),
    (["--seed", str(2 ** 64)], "--seed must be below 2**64"),
    (["--temperature", "1e-310"], "--temperature 1e-310 is below 1e-06"),
    (["--temperature", "1e-45", "--energy", "ar:AR"], "--temperature 1e-45 is below 1e-06"),
    (["--steps", HUGE], f"--steps {HUGE} is more than 1000000"),
    (["--energy", "ar:AR", "--k", str(10 ** 9)], "lower --batch-size or --k "),
    (["--energy", "ar:AR", "--k-policy", "ess", "--k-max", str(10 ** 9)], "lower --batch-size or --k-max"),
    (["--num", HUGE], "lower --num or --length"),
    (["--num", HUGE, "--batch-size", HUGE], "lower --batch-size"),
    (["--length", HUGE, "--stride", "8"], "lower --num or --length"),
    (["--infill", f"ab[MASK*{HUGE}]"], "makes it longer than 16777216 tokens"),
    (["--infill", "ab[MASK*" + "9" * 5000 + "]"], "(5000 digits)] makes it longer than 16777216 tokens"),
]


@pytest.mark.parametrize("extra,msg", SAMPLE_CASES, ids=[" ".join(c[0])[:40] for c in SAMPLE_CASES])
def test_sample_edges_are_one_error_and_write_nothing(runs, tmp_path, capsys, extra, msg):
    rc, err = cli(capsys, _sample(runs, tmp_path, *extra))
    assert_one_clear_error(rc, err, msg)
    assert list(tmp_path.iterdir()) == []


EVAL_CASES = [
    (["--device", "tpu"], "device 'tpu' is not understood"),
    (["--seed", str(2 ** 64)], "--seed must be below 2**64"),
    (["--energy", "ar:AR", "--steps", "2", "--temperature", "1e-45"], "--temperature 1e-45 is below 1e-06"),
    (["--steps", HUGE], f"--steps {HUGE} is more than 1000000"),
    (["--t-samples", HUGE], f"--t-samples {HUGE} is more than 1000000"),
    (["--energy", "ar:AR", "--steps", "2", "--bound-draws", HUGE], f"--bound-draws {HUGE} is more than"),
    (["--energy", "ar:AR", "--steps", "2", "--k", str(10 ** 9)], "lower --batch-size, --k or --logz-samples"),
    (["--energy", "ar:AR", "--logz-samples", str(10 ** 9)], "lower --batch-size, --k or --logz-samples"),
]


@pytest.mark.parametrize("extra,msg", EVAL_CASES, ids=[" ".join(c[0])[:40] for c in EVAL_CASES])
def test_eval_edges_are_one_error_and_write_nothing(runs, tmp_path, capsys, extra, msg):
    argv = ["eval", "nelbo", "--ckpt", runs / "mdlm", "--max-blocks", "4", "--quiet", "--json-out", tmp_path / "j"]
    rc, err = cli(capsys, argv + [a.replace("AR", str(runs / "ar")) for a in extra])
    assert_one_clear_error(rc, err, msg)
    assert list(tmp_path.iterdir()) == []


BENCH_CASES = [
    (["--seed", str(2 ** 64)], "--seed must be below 2**64"),
    (["--steps", f"2,{HUGE}"], f"--steps {HUGE} is more than 1000000"),
    (["--k", f"2,{10 ** 9}"], "lower --batch-size or --k"),  # the second setting's bound, before the first runs
    (["--device", "tpu"], "device 'tpu' is not understood"),
]


@pytest.mark.parametrize("extra,msg", BENCH_CASES, ids=[" ".join(c[0])[:40] for c in BENCH_CASES])
def test_bench_edges_are_one_error_before_any_setting(runs, tmp_path, capsys, extra, msg):
    argv = ["bench", "--mdlm", runs / "mdlm", "--ar", runs / "ar", "--methods", "mdlm,edlm-ar", "--num", "2",
            "--steps", "2", "--out", tmp_path / "b", "--quiet", *extra]
    rc, err = cli(capsys, argv)
    assert_one_clear_error(rc, err, msg)
    assert list(tmp_path.iterdir()) == []


ROW_CASES = [
    ({"text": 5}, 'no "ids" list'),
    ({"ids": "abc"}, 'no "ids" list'),
    ({"ids": [[1, 2], [3]]}, 'no "ids" list'),
    ({"ids": [1, 2], "text": 5}, '"text" must be a string'),
    ({"ids": [1, 2], "corpus": 5}, '"corpus" must be a corpus name'),
    ({"ids": [1, 2], "corpus": ["synthetic"]}, '"corpus" must be a corpus name'),
    ({"ids": [1, 2], "seconds": float("nan")}, '"seconds" must be a finite number >= 0'),
    ({"ids": [1, 2], "seconds": -3}, '"seconds" must be a finite number >= 0'),
    ({"ids": [1, 2], "seconds": "fast"}, '"seconds" must be a finite number >= 0'),
]


@pytest.mark.parametrize("row,msg", ROW_CASES, ids=[json.dumps(c[0])[:40] for c in ROW_CASES])
def test_malformed_samples_row_is_one_error(runs, tmp_path, capsys, row, msg):
    f = tmp_path / "rows.jsonl"
    f.write_text(json.dumps(row) + "\n")
    rc, err = cli(capsys, ["eval", "samples", "--samples", f, "--evaluator", "true", "--quiet"])
    assert_one_clear_error(rc, err, msg, "line 1")


def test_train_seed_past_64_bits_is_one_error(synthetic_data, tmp_path, capsys):
    rc, err = cli(capsys, ["train", "--out", tmp_path / "r", "--preset", "micro", "--data", "synthetic", "--quiet",
                           "--max_steps", "1", "--seed", str(2 ** 64)])
    assert_one_clear_error(rc, err, "--seed must be below 2**64")
    assert not (tmp_path / "r").exists()


# The memory bound itself

def test_refusal_names_the_arguments_the_figures_and_writes_nothing(runs, tmp_path, monkeypatch):
    import edlm

    run, ar = edlm.load(runs / "mdlm"), edlm.load(runs / "ar")
    monkeypatch.setattr(budget, "free_bytes", lambda device: 10 ** 6)  # a device with 1 MB free
    with pytest.raises(EdlmError) as e:
        run.sample(num=2, steps=2, energy=edlm.ar_energy(ar), k=4, trace=tmp_path / "t.html")
    msg = str(e.value)
    assert "`batch_size=16`" in msg and "`k=4`" in msg and "cpu has 1 MB free" in msg and "--" not in msg
    assert "lower `batch_size` or `k`" in msg
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(EdlmError, match="lower `batch_size`"):
        run.nelbo(max_blocks=4)
    monkeypatch.setenv("EDLM_MEMORY_CHECK", "0")  # the escape hatch: the job runs
    assert len(run.sample(num=2, steps=2)) == 2


def test_need_grows_with_every_knob():
    from edlm.config.model import TransformerConfig

    cfg = TransformerConfig(vocab_size=1001, d_model=64, n_layers=2, n_heads=2, max_len=128)

    class Energy:  # an AR energy's shape, without a network
        ar, mask_id, batch_size = type("N", (), {"cfg": cfg})(), 1000, 0

        def seqs_per_forward(self, length):
            return 10 ** 9

    base = dict(batch=8, num=8, length=128, steps=16, k=4, energy=Energy())
    ref = budget.sample_need(cfg, 1000, **base).total
    for knob in ("batch", "num", "length", "k"):
        bigger = {**base, knob: base[knob] * 8}
        if knob == "batch":
            bigger["num"] = 64
        assert budget.sample_need(cfg, 1000, **bigger).total > ref, knob
    assert budget.sample_need(cfg, 1000, **{**base, "steps": 10 ** 6}).parts["steps"] > 10 ** 7
    assert budget.sample_need(cfg, 1000, **{**base, "energy": None}).total < ref
    ev = dict(objective="mdlm", batch=8, blocks=8, length=128)
    assert budget.nelbo_need(cfg, 1000, **ev, k=8, logz_samples=8, energy=Energy()).total > \
        budget.nelbo_need(cfg, 1000, **ev).total


def test_free_memory_follows_an_address_space_limit_and_the_job_is_refused(runs):
    """Under `ulimit -v` (RLIMIT_AS) the free memory is what the limit leaves, and a job that needs more is one
    EdlmError instead of the allocator's RuntimeError."""
    code = f"""
import resource, edlm
from pathlib import Path
from edlm.errors import EdlmError
from edlm.sampling import budget
run, ar = edlm.load({str(runs / 'mdlm')!r}), edlm.load({str(runs / 'ar')!r})
status = Path('/proc/self/status').read_text().splitlines()
vm = next(int(x.split()[1]) * 1024 for x in status if x.startswith('VmSize'))
resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), resource.RLIM_INFINITY))
free = budget.free_bytes('cpu')
assert 0 < free <= 1 << 30, free
try:
    run.sample(num=2, steps=2, energy=edlm.ar_energy(ar), k=20000)
except EdlmError as e:
    print('REFUSED', e)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "REFUSED" in r.stdout and "lower `batch_size` or `k`" in r.stdout, r.stdout


def test_estimate_covers_the_measured_peak_within_3x():
    """benchmarks/budget_check.py: fresh processes, random-weight networks; peak resident set (VmHWM, reset
    before the job) minus the resident set before it. An EDLM-AR sampling job and a likelihood job with an
    8192-token vocabulary, each a few hundred MB."""
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "budget_check.py"), "--cases", "cheap"],
                       capture_output=True, text=True, timeout=600)
    rows = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    assert len(rows) == 2 and all("error" not in x for x in rows), r.stdout + r.stderr[-2000:]
    for x in rows:
        assert x["measured_mb"] > 150, x  # a job big enough that the allocator's noise does not decide
        assert 1.0 <= x["ratio"] <= 3.0, x
