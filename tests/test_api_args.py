"""The Python API checks its arguments as strictly as the CLI checks its flags: each bad value is one EdlmError
that names the argument (never a --flag), raised before anything is loaded, sampled or written."""

import numpy as np
import pytest
import torch

import edlm
from edlm.config.sampling import KPolicy
from edlm.errors import EdlmError


@pytest.fixture(scope="module")
def runs(micro_runs):
    return edlm.load(micro_runs / "mdlm"), edlm.load(micro_runs / "ar")  # 16 tokens, 32 symbols, MASK = 32


SAMPLE_CASES = [
    ({"prefix": b"ab"}, "prefix is bytes"),
    ({"prefix": bytearray(b"ab")}, "prefix is bytes"),
    ({"prefix": [1, 99]}, "prefix: token 99 at position 1 is outside the vocabulary (0..31)"),
    ({"prefix": [-1]}, "prefix: token -1 at position 0 is outside the vocabulary"),
    ({"prefix": [1, 32]}, "prefix: position 1 holds the MASK id 32"),
    ({"prefix": [1.5]}, "prefix: position 0 holds 1.5, not an integer token id"),
    ({"prefix": [True]}, "prefix: position 0 holds True"),
    ({"prefix": [[1, 2]]}, "1 prefixes for num=2 samples: give one per sample"),  # a list of lists: per sample
    ({"prefix": [[1, 99], [1]]}, "prefix 0: token 99 at position 1 is outside the vocabulary"),
    ({"prefix": [[1, [2]], [1]]}, "prefix 0: position 1 holds [2]"),
    ({"prefix": torch.tensor([[1, 2]])}, "is not understood: give text or a list of integer token ids"),
    ({"prefix": 7}, "prefix 7 is not understood"),
    ({"length": 0}, "length must be an integer >= 1"),
    ({"length": -3}, "length must be an integer >= 1"),
    ({"length": 2.5}, "length must be an integer >= 1"),
    ({"seed": 2 ** 64}, "`seed` must be below 2**64"),
    ({"seed": -1}, "`seed` must be an integer >= 0"),
    ({"temperature": 1e-310}, "`temperature` 1e-310 is below 1e-06"),
    ({"temperature": 1e-45}, "`temperature` 1e-45 is below 1e-06"),
    ({"temperature": "1"}, "`temperature` must be a finite number"),
    ({"window": 5}, "window 5: need (t_lo, t_hi)"),
    ({"window": "ab"}, "window 'ab': need (t_lo, t_hi)"),
    ({"unmask": "left"}, "`unmask` 'left': use random or confidence"),
    ({"precision": "fp8"}, "`precision` 'fp8': use auto, bf16 or fp32"),
    ({"min_unmask": 0}, "min_unmask must be an integer >= 1"),
    ({"min_unmask": 2}, "min_unmask > 1 skips the energy"),
    ({"k_policy": KPolicy()}, "k_policy adapts the EDLM candidates per step: give an energy"),
    ({"k_policy": "ess"}, "k_policy adapts the EDLM candidates per step: give an energy"),  # "ess" is a policy
    ({"k_policy": "adaptive", "energy": "AR"}, "k_policy 'adaptive': use one of"),
    ({"k": 40, "k_policy": KPolicy(k_max=16), "energy": "AR"}, "k 40 is the first step's k under k_policy"),
    ({"callback": 5}, "callback must be a function"),
    ({"on_batch": "rows.jsonl"}, "on_batch must be a function"),
    ({"trace_mdlm": True}, "trace_mdlm puts plain MDLM beside EDLM"),
    ({"trace": "."}, "trace . is a folder"),
    ({"steps": 10 ** 11}, "`steps` 100000000000 is more than 1000000"),
    ({"batch_size": 2.0}, "batch_size must be an integer >= 1"),
    ({"num": True}, "num must be an integer >= 1"),
    ({"infill": [1.5, None]}, "infill: position 0 holds 1.5"),
    ({"infill": ["a", None]}, "infill: position 0 holds 'a'"),
    ({"infill": f"ab[MASK*{10 ** 11}]"}, "makes it longer than 16777216 tokens"),
    ({"energy": "AR", "k": 10 ** 9}, "lower `batch_size` or `k`"),
]


@pytest.mark.parametrize("kw,msg", SAMPLE_CASES, ids=[repr(c[0])[:40] for c in SAMPLE_CASES])
def test_bad_sample_argument_is_one_error_naming_it(runs, kw, msg):
    run, ar = runs
    kw = {k: (edlm.ar_energy(ar) if v == "AR" else v) for k, v in kw.items()}
    with pytest.raises(EdlmError) as e:
        run.sample(**{"num": 2, "steps": 2, **kw})
    assert msg in str(e.value) and "--" not in str(e.value), str(e.value)


NELBO_CASES = [
    ({"seed": 2 ** 64}, "seed must be below 2**64"),
    ({"seed": -1}, "seed must be an integer >= 0"),
    ({"temperature": 1e-45}, "temperature 1e-45 is below 1e-06"),
    ({"temperature": "hot"}, "temperature must be a finite number"),
    ({"steps": 10 ** 11}, "steps 100000000000 is more than 1000000"),
    ({"steps": 0}, "steps must be an integer >= 1"),
    ({"t_samples": 10 ** 11}, "t_samples 100000000000 is more than 1000000"),
    ({"bound_draws": 10 ** 7}, "bound_draws 10000000 is more than 1000000"),
    ({"k": 1.5}, "k must be an integer >= 1"),
    ({"t_eps": "x"}, "t_eps must be a finite number"),
    ({"t_eps": 1.0}, "t_eps must be a finite number with 0 < t_eps < 1"),
    ({"window": 3}, "window 3: need (t_lo, t_hi)"),
    ({"logz_samples": 1}, "logz_samples must be >= 2"),
    ({"energy": "AR", "steps": 2, "k": 10 ** 9}, "lower `batch_size`, `k` or `logz_samples`"),
]


@pytest.mark.parametrize("kw,msg", NELBO_CASES, ids=[repr(c[0])[:40] for c in NELBO_CASES])
def test_bad_nelbo_argument_is_one_error_naming_it(runs, kw, msg):
    run, ar = runs
    kw = {k: (edlm.ar_energy(ar) if v == "AR" else v) for k, v in kw.items()}
    with pytest.raises(EdlmError) as e:
        run.nelbo(**{"max_blocks": 4, **kw})
    assert msg in str(e.value) and "--" not in str(e.value), str(e.value)


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "meta", "CPU", 3])
def test_load_on_an_unknown_device_is_one_error(micro_runs, device):
    with pytest.raises(EdlmError, match="is not understood: use auto, cpu, cuda or cuda:N"):
        edlm.load(micro_runs / "mdlm", device=device)


def test_good_values_at_the_edges_still_work(runs):
    run, _ = runs
    assert run.sample(num=1, steps=2, length=None).tokens.shape == (1, 16)  # None: the training length
    for prefix in ([1, 2], (1, 2), torch.tensor([1, 2]), np.array([1, 2])):
        out = run.sample(num=1, steps=2, prefix=prefix)
        assert out.tokens[0, :2].tolist() == [1, 2]
    assert len(run.sample(num=1, steps=2, seed=2 ** 64 - 1)) == 1
    assert len(run.sample(num=1, steps=2, temperature=1e-6)) == 1
