"""Sharpness knobs (sampling/sharpen.py): token temperature and top-p on every sampler's draws.

The defaults leave every sampler's tokens exactly as they were (GOLDEN: recorded before the knobs existed, same
seeds); T -> 0 is the argmax; top-p keeps exactly the smallest most-probable set with mass >= p; draws follow
softmax(logits / T) restricted to the nucleus (chi-square); energies and confidence read the model's own log-probs.
"""

import math

import pytest
import torch

from edlm.config.sampling import SamplerConfig
from edlm.diffusion.schedules import LogLinear
from edlm.energy.base import TableEnergy
from edlm.errors import EdlmError
from edlm.sampling.ar import ar_sample
from edlm.sampling.categorical import sample_categorical
from edlm.sampling.loop import sample
from edlm.sampling.sharpen import Sharpen, make_sharpen, nucleus
from edlm.sampling.sharpen import sharpened as sharpened_posterior

V, L, MASK = 5, 8, 5

# Tokens of each sampler for seed 0 (steps 4, batch 6, length 8) from the code before the knobs existed.
GOLDEN = {
    "mdlm": [[4, 4, 1, 1, 4, 3, 2, 2], [4, 1, 4, 1, 2, 3, 2, 2], [4, 0, 3, 2, 2, 3, 3, 2], [4, 4, 3, 1, 2, 3, 3, 2],
             [4, 3, 1, 0, 2, 1, 1, 2], [1, 4, 4, 1, 2, 3, 0, 2]],
    "edlm": [[4, 4, 1, 1, 4, 0, 1, 2], [4, 2, 3, 4, 2, 0, 3, 2], [4, 3, 1, 2, 2, 3, 1, 2], [0, 1, 1, 1, 2, 3, 4, 2],
             [4, 3, 3, 2, 0, 4, 1, 2], [4, 1, 2, 1, 2, 2, 0, 2]],
    "confidence": [[4, 4, 3, 1, 2, 3, 0, 2], [4, 3, 1, 1, 2, 3, 2, 2], [4, 3, 1, 1, 2, 3, 0, 2],
                   [4, 4, 1, 1, 2, 3, 2, 2], [4, 3, 3, 1, 2, 3, 2, 2], [4, 4, 3, 1, 2, 3, 0, 2]],
    "confidence+edlm": [[4, 4, 3, 1, 2, 3, 0, 2], [4, 4, 3, 1, 2, 3, 4, 2], [4, 4, 3, 2, 2, 3, 2, 2],
                        [4, 4, 0, 1, 2, 3, 0, 2], [4, 4, 3, 1, 4, 3, 2, 2], [4, 3, 3, 1, 2, 3, 0, 2]],
    "ar": [[4, 1, 1, 4, 1, 4, 2, 0], [2, 0, 3, 2, 0, 3, 1, 1], [1, 1, 1, 0, 3, 1, 4, 2], [4, 1, 1, 4, 2, 0, 2, 0],
           [2, 0, 2, 0, 3, 1, 1, 4], [4, 1, 0, 2, 0, 4, 1, 0]],
}


def table_denoiser():
    """SUBS log-probs whose logits at position l depend on the token at l-1 (MASK counts as a token)."""
    g = torch.Generator().manual_seed(123)
    w = torch.randn(L, V + 1, V, generator=g, dtype=torch.float64).float() * 1.5

    def denoise(x_t, t):
        prev = torch.cat([torch.full_like(x_t[:, :1], MASK), x_t[:, :-1]], 1)
        logits = w[torch.arange(L)[None, :], prev]  # (B, L, V)
        lp = torch.log_softmax(torch.cat([logits, torch.full_like(logits[..., :1], -torch.inf)], -1), -1)
        onehot = torch.nn.functional.one_hot(x_t, V + 1).bool()
        return torch.where((x_t != MASK)[..., None], torch.where(onehot, 0.0, -torch.inf), lp)
    return denoise


class TableAR:
    """An 'AR model' whose next-token logits depend on the last token only (what ar_sample asks of a model)."""

    def __init__(self):
        g = torch.Generator().manual_seed(7)
        self.w = torch.randn(V + 1, V + 1, generator=g, dtype=torch.float64).float() * 1.5

    def new_kv_caches(self):
        return None

    def __call__(self, inp, start=0, kv_caches=None):
        return self.w[inp]


def _energy():
    return TableEnergy(lambda x0: 0.6 * (x0 == 1).sum(-1).float() - 0.3 * (x0 == 2).sum(-1).float())


SAMPLERS = {"mdlm": {}, "edlm": {"k": 4}, "confidence": {"unmask": "confidence"},
            "confidence+edlm": {"k": 4, "unmask": "confidence"}}


def _run(name, batch=6, steps=4, **sharp):
    kw = SAMPLERS[name]
    g = torch.Generator().manual_seed(0)
    x, _ = sample(table_denoiser(), LogLinear(), MASK, SamplerConfig(steps=steps, **kw, **sharp), batch=batch,
                  length=L, energy=_energy() if "k" in kw else None, generator=g)
    return x


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_defaults_leave_every_sampler_bit_identical(name):
    assert _run(name).tolist() == GOLDEN[name]
    assert _run(name, token_temperature=1.0, top_p=1.0).tolist() == GOLDEN[name]


def test_defaults_leave_ar_bit_identical():
    g = torch.Generator().manual_seed(0)
    assert ar_sample(TableAR(), 6, L, V, generator=g).tolist() == GOLDEN["ar"]
    g = torch.Generator().manual_seed(0)
    assert ar_sample(TableAR(), 6, L, V, generator=g, sharpen=make_sharpen(1.0, 1.0)).tolist() == GOLDEN["ar"]


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_sharpened_path_at_one_draws_the_same_tokens(name, monkeypatch):
    """The sharpened draw path itself (forced on with T = 1, p = 1) is neutral: same uniforms, same tokens."""
    import edlm.sampling.loop as loop

    monkeypatch.setattr(loop, "sharpened", lambda post, sh: sharpened_posterior(post, Sharpen(1.0, 1.0)))
    assert _run(name).tolist() == GOLDEN[name]


def test_make_sharpen_is_none_at_one_and_checks_ranges():
    assert make_sharpen() is None and make_sharpen(1, 1) is None
    assert make_sharpen(0.5) == Sharpen(0.5, 1.0)
    for t, p in [(0, 1), (-1, 1), (math.inf, 1), (math.nan, 1), (1, 0), (1, 1.01), (1, -0.5), (True, 1)]:
        with pytest.raises(ValueError):
            make_sharpen(t, p)
        with pytest.raises(ValueError):
            SamplerConfig(token_temperature=t, top_p=p)


def test_low_temperature_approaches_the_argmax():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 50, generator=g) * 2
    arg = logits.argmax(-1, keepdim=True)
    logits.scatter_add_(1, arg, torch.full_like(arg, 0.1, dtype=logits.dtype))  # the mode leads by >= 0.1
    share = []
    for T in (1.0, 0.3, 0.1, 0.03, 1e-3):
        x = sample_categorical(logits, 16, torch.Generator().manual_seed(1), sharpen=Sharpen(T))
        share.append(float((x == arg).double().mean()))
    assert share == sorted(share) and share[-1] == 1.0  # 0.1 / 1e-3 = 100 nats: nothing else can be drawn
    x = sample_categorical(logits, 16, torch.Generator().manual_seed(1))
    assert (x == arg).double().mean() < 0.8  # T = 1 is not the argmax: the test can tell


def test_nucleus_keeps_the_smallest_set_with_mass_at_least_p():
    probs = torch.tensor([[0.1, 0.5, 0.25, 0.15]], dtype=torch.float64)
    lg = probs.log()
    keep = lambda p: nucleus(lg, p)[0].tolist()
    assert keep(0.3) == [False, True, False, False]  # the mode alone already has 0.5 >= 0.3
    assert keep(0.5 - 1e-9) == [False, True, False, False]
    assert keep(0.5 + 1e-9) == [False, True, True, False]
    assert keep(0.75 + 1e-9) == [False, True, True, True]
    assert keep(0.9 + 1e-9) == [True, True, True, True]
    assert keep(1.0) == [True, True, True, True]
    assert keep(1e-12) == [False, True, False, False]  # the mode always stays
    # random rows: the kept set is a most-probable prefix, has mass >= p, and dropping its least likely member
    # would fall below p (smallest)
    g = torch.Generator().manual_seed(0)
    lg = torch.randn(200, 30, generator=g, dtype=torch.float64) * 2
    pr = torch.softmax(lg, -1)
    for p in (0.1, 0.5, 0.9, 0.99):
        k = nucleus(lg, p)
        mass = (pr * k).sum(-1)
        least = torch.where(k, pr, torch.inf).min(-1).values
        most_dropped = torch.where(k, -torch.inf, pr).max(-1).values
        assert (mass >= p - 1e-12).all() and (mass - least < p).all() and (most_dropped <= least).all()


def _chi2_ok(counts, probs, alpha=1e-3):
    n = counts.sum()
    keep = probs > 0
    assert counts[~keep].sum() == 0  # nothing outside the support
    e = probs[keep] * n
    stat = float(((counts[keep] - e) ** 2 / e).sum())
    df = int(keep.sum()) - 1
    pval = float(torch.special.gammaincc(torch.tensor(df / 2.0, dtype=torch.float64),
                                         torch.tensor(stat / 2.0, dtype=torch.float64)))
    return pval > alpha


@pytest.mark.parametrize("T,p", [(1.0, 1.0), (0.5, 1.0), (2.0, 1.0), (1.0, 0.8), (0.5, 0.9)])
def test_draws_follow_the_sharpened_distribution(T, p):
    logits = torch.tensor([1.0, 0.3, -0.2, 0.8, -1.5, 0.0])
    n = 40000
    x = sample_categorical(logits.expand(n, -1), 1, torch.Generator().manual_seed(5), sharpen=Sharpen(T, p))
    counts = torch.bincount(x[:, 0], minlength=6).double()
    q = torch.softmax(logits.double() / T, -1)
    q = q * nucleus((logits / T)[None], p)[0]
    q = q / q.sum()
    assert _chi2_ok(counts, q)
    if T != 1.0:  # and not the unsharpened one: the test can tell them apart
        assert not _chi2_ok(counts, torch.softmax(logits.double(), -1))


def test_samplers_lose_entropy_at_low_temperature_and_ar_follows():
    from edlm.eval.stats import unigram_entropy

    H = lambda x: sum(unigram_entropy(x[:, i]) for i in range(L))  # per-position entropy across the batch
    for name in SAMPLERS:
        hot, cold = _run(name, batch=200), _run(name, batch=200, token_temperature=0.3)
        assert H(cold) < H(hot) - 0.1
        assert not (cold == MASK).any()
    g = torch.Generator().manual_seed(0)
    x = ar_sample(TableAR(), 500, L, V, generator=g, sharpen=Sharpen(1e-3))
    w = TableAR().w[:, :V]
    for i in range(1, L):  # greedy: each token the argmax after the one before
        assert torch.equal(x[:, i], w[x[:, i - 1]].argmax(-1))


def test_energy_and_confidence_read_the_models_own_log_probs():
    """EDLM's log mu is the model's log-prob of the candidate, not the sharpened proposal's."""
    seen = []

    class Spy:
        def energy(self, x0, x_t, t, *, log_mu=None):
            seen.append((x0.clone(), x_t.clone(), t.clone(), log_mu.clone()))
            return torch.zeros(x0.shape[0])

    den = table_denoiser()
    g = torch.Generator().manual_seed(0)
    sample(den, LogLinear(), MASK, SamplerConfig(steps=3, k=3, token_temperature=0.4, top_p=0.9), batch=4, length=L,
           energy=Spy(), generator=g)
    assert seen
    for x0, x_t, t, log_mu in seen:
        lp = den(x_t, t[0])
        want = lp.gather(-1, x0[..., None]).squeeze(-1).masked_fill(x_t != MASK, 0.0).sum(-1)
        assert torch.allclose(log_mu, want, atol=1e-5)


def test_run_sample_and_cli_check_the_knobs(micro_runs, tmp_path, capsys):
    import edlm
    from edlm.cli import main

    run = edlm.load(micro_runs / "mdlm")
    base = run.sample(num=4, steps=4, seed=3)
    assert "token_temperature" not in base.summary and "top_p" not in base.rows[0]
    cold = run.sample(num=4, steps=4, seed=3, token_temperature=0.5, top_p=0.9)
    assert cold.summary["token_temperature"] == 0.5 and cold.rows[0]["top_p"] == 0.9
    for bad in ({"token_temperature": 0}, {"top_p": 0}, {"top_p": 1.5}):
        with pytest.raises(EdlmError, match="token_temperature|top_p"):
            run.sample(num=2, steps=2, **bad)
    ar = edlm.load(micro_runs / "ar").sample(num=3, token_temperature=0.7, seed=1)
    assert ar.summary["token_temperature"] == 0.7
    out = tmp_path / "s.jsonl"
    assert main(["sample", "--ckpt", str(micro_runs / "mdlm"), "--out", str(out), "--num", "2", "--steps", "2",
                 "--token-temperature", "0.8", "--top-p", "0.95", "--quiet"]) == 0
    assert '"top_p": 0.95' in out.read_text()
    capsys.readouterr()
    for flag, val in (("--token-temperature", "0"), ("--top-p", "1.5")):
        assert main(["sample", "--ckpt", str(micro_runs / "mdlm"), "--out", str(tmp_path / "x.jsonl"), flag, val]) == 2
        assert flag in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()


def test_generate_request_check_names_a_bad_knob():
    """Every caller of generate (bench included) gets the knobs checked with the rest of the request."""
    from edlm.config.sampling import GenerateRequest

    GenerateRequest(ckpt="x", token_temperature=0.5, top_p=0.9).check()
    for bad in ({"token_temperature": 0.0}, {"token_temperature": float("inf")}, {"top_p": 0.0}, {"top_p": 1.01},
                {"top_p": True}):
        with pytest.raises(EdlmError, match="token_temperature|top_p"):
            GenerateRequest(ckpt="x", **bad).check()


def test_the_knobs_are_refused_with_samplers_that_ignore_them():
    """first-hit and threshold draw from the model's own distribution: sharpening them is an error, not a no-op."""
    from edlm.config.sampling import GenerateRequest

    for sampler in ("first-hit", "threshold"):
        GenerateRequest(ckpt="x", sampler=sampler).check()
        with pytest.raises(EdlmError, match="step"):
            GenerateRequest(ckpt="x", sampler=sampler, token_temperature=0.5).check()
