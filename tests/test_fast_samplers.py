"""The samplers that skip work (docs/fast_samplers.md): first-hit's law, the key/value cache's exactness when it is
refreshed on every call, threshold decoding's contract, block plans, and the AR energy's shared prefix."""

import itertools
import math

import pytest
import torch

from edlm.config.model import TransformerConfig
from edlm.config.sampling import SamplerConfig
from edlm.diffusion.schedules import LogLinear, pinned_alpha_of, time_of_alpha
from edlm.energy.ar import AREnergy
from edlm.models.transformer import Transformer
from edlm.sampling.blocks import block_plan, sample_blocks
from edlm.sampling.fast import block_denoiser, sampler_fn
from edlm.sampling.firsthit import next_event, sample_first_hit
from edlm.sampling.kvcache import BlockDenoiser
from edlm.sampling.loop import sample
from edlm.sampling.threshold import sample_threshold, threshold_positions
from test_sampling import _chi2_pvalue

MASK = 2  # binary tokens 0, 1; MASK = 2


def _toy_denoiser():
    """A denoiser over {0, 1}^3 whose conditionals depend on the other positions' current values, and that is
    the marginal of NO joint distribution: the order and grouping of unmasking change the sampler's law."""
    w = torch.tensor([0.3, -0.8, 1.2], dtype=torch.float64)
    A = torch.tensor([[0.0, 2.0, -1.5], [1.7, 0.0, 1.0], [-2.2, 0.9, 0.0]], dtype=torch.float64)

    def logits(x_t):  # (B, 3) -> (B, 3, 2) float64
        enc = torch.where(x_t == MASK, 0.0, 2.0 * x_t.double() - 1.0)
        z = w + enc @ A.T
        return torch.stack([torch.zeros_like(z), z], -1).log_softmax(-1)

    def denoise(x_t, t):
        lp = logits(x_t)
        carry = torch.full_like(lp, -math.inf).scatter(-1, x_t.clamp(max=1)[..., None], 0.0)
        return torch.where((x_t != MASK)[..., None], carry, lp).float()

    denoise.time_conditioning = False
    return denoise, logits


def _one_at_a_time_law(logits):
    """The exact law of unmasking one uniformly chosen position at a time (the continuous-time limit), by
    enumerating every state: (8,) over x = (x0, x1, x2), code x0*4 + x1*2 + x2."""
    law = torch.zeros(8, dtype=torch.float64)

    def walk(x, p):
        masked = [i for i in range(3) if x[i] == MASK]
        if not masked:
            law[x[0] * 4 + x[1] * 2 + x[2]] += p
            return
        lp = logits(torch.tensor([x]))[0]
        for i in masked:
            for v in (0, 1):
                y = list(x)
                y[i] = v
                walk(y, p / len(masked) * float(lp[i, v].exp()))

    walk([MASK] * 3, 1.0)
    return law


def _law_counts(x):
    return torch.bincount(x[:, 0] * 4 + x[:, 1] * 2 + x[:, 2], minlength=8).double()


def test_first_hit_has_the_step_samplers_law_in_the_limit_of_many_steps():
    denoise, logits = _toy_denoiser()
    target = _one_at_a_time_law(logits)
    n = 12000
    x_fh, st = sample_first_hit(denoise, LogLinear(), MASK, SamplerConfig(sampler="first-hit"), batch=n, length=3,
                                generator=torch.Generator().manual_seed(0))
    assert not (x_fh == MASK).any() and st.forwards == 3  # one network call per token
    assert _chi2_pvalue(_law_counts(x_fh), target) > 1e-3
    # the step sampler at many steps samples the same law (the test's target is right) ...
    x_many, _ = sample(denoise, LogLinear(), MASK, SamplerConfig(steps=300), batch=n, length=3,
                       generator=torch.Generator().manual_seed(1))
    assert _chi2_pvalue(_law_counts(x_many), target) > 1e-3
    # ... and at one step (all three drawn together) a different one, which the test tells apart
    x_one, _ = sample(denoise, LogLinear(), MASK, SamplerConfig(steps=1), batch=n, length=3,
                      generator=torch.Generator().manual_seed(2))
    assert _chi2_pvalue(_law_counts(x_one), target) < 1e-6


def test_first_hit_event_times_follow_the_schedule():
    # From t = 1 with n masked positions, P(next event before s) = ((1 - alpha_s) / (1 - alpha_t))^n.
    sched = LogLinear()
    n = torch.full((50000,), 4)
    s = next_event(sched, torch.ones(50000, dtype=torch.float64), n, torch.Generator().manual_seed(0))
    for q in (0.5, 0.8, 0.95):
        expect = float((1 - pinned_alpha_of(sched, torch.tensor(q, dtype=torch.float64))) ** 4)
        assert abs(float((s < q).double().mean()) - expect) < 0.01
    a = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    t = time_of_alpha(sched, a, torch.ones(3, dtype=torch.float64))
    assert torch.allclose(pinned_alpha_of(sched, t), a, atol=1e-12)


def _model(seed=0, **over):
    torch.manual_seed(seed)
    cfg = dict(vocab_size=9, out_vocab=8, n_layers=2, d_model=32, n_heads=2, cond_dim=16, max_len=16, init_std=0.5)
    return Transformer(TransformerConfig(**{**cfg, **over})).eval()


def test_span_features_over_current_keys_and_values_are_the_full_forward():
    m = _model()
    x = torch.randint(0, 8, (3, 16))
    f, kv = m.features_and_kv(x)
    assert torch.equal(f, m.features(x))
    keep = torch.ones(16, dtype=torch.bool)
    keep[5:11] = False
    span = m.span_features(x[:, 5:11], None, 5, m.kv_positions(kv, keep))
    assert torch.allclose(span, f[:, 5:11], atol=1e-5)


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_kv_cache_refreshed_every_call_gives_the_same_tokens_as_no_cache(cache):
    m = _model()
    plan = block_plan(40, 16, 8, 4)  # semi-AR windows of 16, 8 new tokens each, blocks of 4 inside
    outs = {}
    for kind, refresh in (("none", 0), (cache, 1), (cache, 0)):
        g = torch.Generator().manual_seed(3)
        dens = []

        def view(xv, tail, a, cb, oc, kind=kind, refresh=refresh, g=g, dens=dens):
            dens.append(block_denoiser(m, 8, tail, a, kind, refresh))
            return sample(dens[-1], LogLinear(), 8, SamplerConfig(steps=6), x_init=xv, generator=g, callback=cb)

        x, _ = sample_blocks(view, torch.full((5, 40), 8), plan, 8, 6)
        assert not (x == 8).any()
        outs[kind, refresh] = x, sum(d.refreshes for d in dens), sum(d.calls for d in dens)
    assert torch.equal(outs["none", 0][0], outs[cache, 1][0])
    assert outs[cache, 1][1] == outs[cache, 1][2]  # every call ran the whole window
    assert outs[cache, 0][1] < outs[cache, 0][2]  # without refreshes most calls ran the block alone


def test_stale_keys_and_values_are_an_approximation_the_cache_really_uses():
    m = _model(init_std=1.0)
    x = torch.randint(0, 8, (2, 12))
    x[:, 8:] = 8
    tail = torch.full((2, 4), 8)
    d = BlockDenoiser(m, 8, tail, 8, "dual", 0)
    d.features(x, 0.5)  # the refresh
    x2 = x.clone()
    x2[:, 8:10] = 3
    stale = d.features(x2, 0.5)[:, 8:]
    fresh = m.features(torch.cat([x2, tail], 1))[:, 8:12]
    assert d.refreshes == 1 and d.calls == 2
    assert not torch.allclose(stale, fresh, atol=1e-4)  # the tail's and prefix's keys are from before the change


def test_block_plan():
    assert block_plan(8, 8, 8) == [(0, 0, 8, 8)]
    assert block_plan(8, 8, 8, 3) == [(0, 0, 3, 8), (0, 3, 6, 8), (0, 6, 8, 8)]
    assert block_plan(24, 16, 8, 4) == [(0, 0, 4, 16), (0, 4, 8, 16), (0, 8, 12, 16), (0, 12, 16, 16),
                                        (8, 16, 20, 24), (8, 20, 24, 24)]
    assert [p[1:3] for p in block_plan(20, 16, 8)] == [(0, 16), (16, 20)]


def test_threshold_positions_take_at_least_the_most_confident():
    top = torch.tensor([[0.95, 0.5, -1.0, 0.99], [0.3, 0.6, 0.2, -1.0], [-1.0, -1.0, -1.0, -1.0]],
                       dtype=torch.float64)
    got = threshold_positions(top, 0.9)
    assert got.tolist() == [[True, False, False, True], [False, True, False, False], [False] * 4]


@pytest.mark.parametrize("threshold", [0.0, 0.6, 1.0])
def test_threshold_decoding_never_leaves_a_mask_and_keeps_fixed_tokens(threshold):
    m = _model()
    den = block_denoiser(m, 8, torch.zeros(4, 0, dtype=torch.long), 0)
    x0 = torch.full((4, 16), 8)
    x0[:, ::3] = torch.randint(0, 8, (4, 6))  # fixed tokens (an infill template)
    fixed = x0 != 8
    calls = []
    x, st = sample_threshold(den, LogLinear(), 8, SamplerConfig(sampler="threshold", threshold=threshold),
                             x_init=x0, generator=torch.Generator().manual_seed(0),
                             callback=lambda i, x, t, e: calls.append(int((x == 8).sum())))
    assert not (x == 8).any() and torch.equal(x[fixed], x0[fixed])
    blanks = int((~fixed[0]).sum())
    if threshold == 1.0:  # nothing is above 1: one position per step
        assert st.forwards == blanks and calls == [4 * (blanks - i - 1) for i in range(blanks)]
    if threshold == 0.0:  # everything is above 0: one step
        assert st.forwards == 1


def _ar_energy(share, seed=1):
    torch.manual_seed(seed)
    ar = Transformer(TransformerConfig(vocab_size=9, out_vocab=8, n_layers=2, d_model=32, n_heads=2, cond_dim=16,
                                       max_len=16, causal=True, init_std=0.5)).eval()
    return AREnergy(ar, None, 8, share_prefix=share)


@pytest.mark.parametrize("carry_over", [False, True])
def test_ar_energy_runs_the_shared_clean_prefix_once(carry_over):
    g = torch.Generator().manual_seed(0)
    B, k, L = 3, 4, 16
    x_t = torch.randint(0, 8, (B, L), generator=g)
    x_t[:, 9:] = 8
    x_t[1, 12] = 3  # a clean token after the first mask: not part of the shared prefix
    x_t[2, 6] = 8  # this sequence's first mask is earlier: the shared prefix is 6 tokens
    cand = x_t.repeat_interleave(k, 0)
    cand = torch.where(cand == 8, torch.randint(0, 8, cand.shape, generator=g), cand)
    shared, plain = _ar_energy(True), _ar_energy(False)
    shared.carry_over = plain.carry_over = carry_over
    lm = torch.zeros(B * k)
    e1 = shared.energy(cand, x_t.repeat_interleave(k, 0), torch.zeros(B * k), log_mu=lm)
    e0 = plain.energy(cand, x_t.repeat_interleave(k, 0), torch.zeros(B * k), log_mu=lm)
    assert torch.allclose(e1, e0, atol=1e-4)
    assert plain.tokens == [B * k * L, B * k * L]
    assert shared.tokens == [B * 6 + B * k * (L - 6), B * k * L]


def test_every_sampler_fills_every_block_with_an_energy():
    m = _model()
    energy = _ar_energy(True)
    for name, cache in itertools.product(("step", "first-hit", "threshold"), ("none", "prefix", "dual")):
        g = torch.Generator().manual_seed(0)
        cfg = SamplerConfig(steps=4, k=3, sampler=name, threshold=0.5)

        def view(xv, tail, a, cb, oc, cache=cache, g=g, cfg=cfg, name=name):
            return sampler_fn(name)(block_denoiser(m, 8, tail, a, cache), LogLinear(), 8, cfg, x_init=xv,
                                    energy=energy, generator=g, callback=cb)

        x, st = sample_blocks(view, torch.full((2, 24), 8), block_plan(24, 16, 8, 4), 8, 4)
        assert not (x == 8).any() and st.energy_steps > 0, (name, cache)


def test_api_and_cli_run_every_fast_option(micro_runs, tmp_path, capsys):
    import json

    import edlm
    from edlm.cli import main

    run = edlm.load(micro_runs / "mdlm")
    spec = f"ar:{micro_runs / 'ar'}"
    mask = run.meta.mask_id
    for kw in ({"sampler": "first-hit"}, {"sampler": "threshold", "threshold": 0.5, "energy": spec, "k": 2},
               {"block_size": 4, "kv_cache": "dual", "steps": 3}, {"stride": 8, "length": 40, "kv_cache": "prefix"},
               {"sampler": "threshold", "stride": 8, "length": 40, "block_size": 4, "kv_cache": "dual",
                "energy": spec, "k": 2}):
        out = run.sample(num=2, **{"steps": 4, **kw})
        assert not (out.tokens == mask).any(), kw
        assert out.summary["sampler"] == kw.get("sampler", "step") and out.summary["network_calls_per_batch"] > 0
    inf = run.infill("ab[MASK*6]cd[MASK*3]", num=2, sampler="threshold", block_size=4, kv_cache="prefix")
    assert all(t[:2] == "ab" and t[8:10] == "cd" for t in inf.texts)
    o = tmp_path / "s.jsonl"
    assert main(["sample", "--ckpt", str(micro_runs / "mdlm"), "--sampler", "threshold", "--threshold", "0.7",
                 "--kv-cache", "dual", "--block-size", "4", "--num", "2", "--out", str(o), "--quiet"]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert s["sampler"] == "threshold" and s["kv_cache"] == "dual" and s["block_size"] == 4
    assert all(mask not in json.loads(r)["ids"] for r in o.read_text().splitlines())


def test_fast_option_errors_name_the_fix(micro_runs, tmp_path, capsys):
    import edlm
    from edlm.cli import main
    from edlm.errors import EdlmError

    run, ar = edlm.load(micro_runs / "mdlm"), edlm.load(micro_runs / "ar")
    for kw, msg in (({"kv_cache": "prefix"}, "give `block_size`"), ({"kv_cache": "left"}, "use one of none"),
                    ({"sampler": "first-hit", "unmask": "confidence"}, "rule of the step sampler"),
                    ({"threshold": 1.5}, "probability in"), ({"block_size": 0}, "1 or more"),
                    ({"sampler": "fast"}, "use one of step")):
        with pytest.raises(EdlmError, match=msg):
            run.sample(num=1, **kw)
    with pytest.raises(EdlmError, match="applies to an MDLM run"):
        ar.sample(num=1, sampler="first-hit")
    for argv, msg in ((["--kv-cache", "prefix"], "give --block-size B"), (["--threshold", "2"], "--threshold"),
                      (["--sampler", "first-hit", "--unmask", "confidence"], "rule of the step sampler"),
                      (["--kv-refresh", "-1"], "--kv-refresh")):
        out = tmp_path / "x.jsonl"
        assert main(["sample", "--ckpt", str(micro_runs / "mdlm"), *argv, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err, err
        assert not out.exists()


def test_study_script_sweeps_and_reports(micro_runs, tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).parent.parent / "benchmarks" / "fast_samplers.py"
    spec = importlib.util.spec_from_file_location("fast_samplers_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = tmp_path / "cells.jsonl"
    args = ["sweep", "--mdlm", str(micro_runs / "mdlm"), "--ar", str(micro_runs / "ar"), "--length", "40",
            "--stride", "8", "--num", "4", "--batch-size", "2", "--out", str(rows),
            "--methods", "plain-32,prefix-8,threshold-0.9,plain-8+E,plain-8+E-noshare"]
    bench.main(args)
    bench.main(args)  # resumes: nothing left to run
    recs = [json.loads(line) for line in rows.read_text().splitlines()]
    assert len(recs) == 10 and all(len(r["ids"]) == 2 and len(r["ids"][0]) == 40 for r in recs)
    out = tmp_path / "report.json"
    bench.main(["report", str(rows), "--evaluator", "true", "--out", str(out), "--plot", str(tmp_path / "p.png")])
    rep = json.loads(out.read_text())["methods"]
    assert rep["plain-32"]["speedup_vs_plain"] == 1.0 and rep["prefix-8"]["minus_plain"]["ci"][0] is not None
    assert rep["plain-8+E"]["ar_tokens_run_over_plain"] < rep["plain-8+E-noshare"]["ar_tokens_run_over_plain"] == 1
    assert (tmp_path / "p.png").stat().st_size > 0


def test_study_script_counts_misspelt_lexicon_words_between_spaces():
    import importlib.util
    from pathlib import Path

    from edlm.data.languages import make_language

    path = Path(__file__).parent.parent / "benchmarks" / "fast_samplers.py"
    spec = importlib.util.spec_from_file_location("fast_samplers_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    lang = make_language("lexicon")
    words, sp = set(lang.words), lang.SPACE
    good = list(lang.words[0])
    wrong = [c for c in range(8) if tuple(good[:-1] + [c]) not in words][:1]
    bad = good[:-1] + wrong
    ids = [0, 1, sp, *good, sp, *bad, sp, *good, sp, sp, 3]  # ends cut; an empty word (two spaces) is misspelt
    assert bench.bad_words(ids, words, sp) == (2, 4)
    assert bench.bad_words([sp, *good, sp], words, sp) == (0, 1) and bench.bad_words(good, words, sp) == (0, 0)
    real = lang.sample(2, 200, generator=__import__("torch").Generator().manual_seed(0))
    assert all(bench.bad_words(r.tolist(), words, sp)[0] == 0 for r in real)
