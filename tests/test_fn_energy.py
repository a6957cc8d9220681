"""Any function as the energy (edlm.fn_energy, a callable as `energy=`, `--energy py:MODULE:FUNCTION`): the law it
samples on an enumerable case (chi-square against the exact importance-resampling law), vetoes (-inf log-weights)
and the rule when every candidate of a step is vetoed, and functions that return the wrong thing."""

import itertools
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

import edlm
from edlm.config.sampling import SamplerConfig
from edlm.diffusion.schedules import LogLinear
from edlm.energy.lm import FunctionEnergy
from edlm.errors import EdlmError
from edlm.sampling.importance import importance_step
from edlm.sampling.loop import sample
from oracles import iid_denoiser


def chi2_critical(df, z=3.09):
    """Wilson-Hilferty upper quantile of chi-square (z = 3.09: alpha = 0.001)."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def sir_law(mu, w, k):
    """The exact law of importance resampling: k draws from mu, one kept with probability w_j / sum(w) (uniformly
    when every w is 0). P(x) = k mu(x) E_{Y_2..Y_k ~ mu}[w(x) / (w(x) + sum_j w(Y_j))] over all (k-1)-tuples."""
    n = len(mu)
    p = np.zeros(n)
    for rest in itertools.product(range(n), repeat=k - 1):
        q = np.prod([mu[j] for j in rest])
        tot = sum(w[j] for j in rest)
        for x in range(n):
            if w[x] + tot > 0:
                p[x] += k * mu[x] * q * w[x] / (w[x] + tot)
            else:
                p[x] += mu[x] * q  # every candidate vetoed: a uniform pick, i.e. one proposal draw
    return p


PROBS = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]], dtype=torch.float64)  # (L=2, V=3)
MASK = 3


def one_step(fn, k, n, seed=0):
    """n sequences of length 2, all masked, one EDLM step to t=0 with FunctionEnergy(fn) on ids."""
    x_t = torch.full((n, 2), MASK)
    logp = iid_denoiser(PROBS.float(), MASK)(x_t, 1.0)
    energy = FunctionEnergy(fn, inputs="ids")
    g = torch.Generator().manual_seed(seed)
    x, ess, _ = importance_step(logp, x_t, 1.0, 0.0, 1.0, energy, k, MASK, generator=g)
    return x[:, 0] * 3 + x[:, 1], ess


def test_a_finite_reward_samples_the_importance_resampling_law():
    r = torch.tensor([1.2, -0.8, 0.3, -1.5, 0.9, 0.0, 2.0, -0.4, 0.5], dtype=torch.float64)
    mu = (PROBS[0][:, None] * PROBS[1][None, :]).flatten().numpy()
    n, k = 30000, 3
    codes, ess = one_step(lambda x: r[x[:, 0] * 3 + x[:, 1]], k, n)
    counts = np.bincount(codes.numpy(), minlength=9).astype(float)
    law = sir_law(mu, np.exp(r.numpy()), k)
    assert abs(law.sum() - 1) < 1e-12
    stat = ((counts - n * law) ** 2 / (n * law)).sum()
    assert stat < chi2_critical(8), stat  # the law the reward says, at this k
    against_mu = ((counts - n * mu) ** 2 / (n * mu)).sum()
    assert against_mu > 20 * chi2_critical(8), against_mu  # and not the proposal: the reward moved it
    target = mu * np.exp(r.numpy())
    target /= target.sum()
    # the law sits between mu and mu * exp(r), and approaches the latter as k grows
    tv = lambda a, b: 0.5 * np.abs(a - b).sum()
    assert tv(sir_law(mu, np.exp(r.numpy()), 5), target) < tv(law, target) < tv(mu, target)
    assert (ess >= 1).all() and (ess <= k).all()


def test_vetoed_candidates_never_win_and_the_law_is_exact_with_vetoes():
    # veto every sequence whose first token is 0 (probability 0.6 under the proposal)
    mu = (PROBS[0][:, None] * PROBS[1][None, :]).flatten().numpy()
    n, k = 30000, 2
    codes, ess = one_step(lambda x: torch.where(x[:, 0] == 0, -math.inf, 0.0), k, n, seed=1)
    w = np.array([0.0 if c // 3 == 0 else 1.0 for c in range(9)])
    law = sir_law(mu, w, k)  # vetoed outcomes appear only when both candidates are vetoed (0.36)
    counts = np.bincount(codes.numpy(), minlength=9).astype(float)
    stat = ((counts - n * law) ** 2 / (n * law)).sum()
    assert stat < chi2_critical(8), stat
    all_vetoed = (ess == 0).double().mean().item()
    assert abs(all_vetoed - 0.6 ** k) < 0.01  # the ESS says where the rule applied
    assert ((codes // 3 == 0) == (ess == 0)).all()  # a vetoed outcome only where every candidate was vetoed


def test_a_vetoed_token_never_gets_through_the_sampler():
    L, n = 6, 400
    probs = torch.tensor([[0.4, 0.3, 0.2, 0.1]] * L)
    decode = lambda x: ["".join("abcd"[i] for i in row) for row in x.tolist()]
    energy = FunctionEnergy(lambda texts: [-math.inf if "d" in t else 0.0 for t in texts], decode=decode)
    calls = []
    x, stats = sample(iid_denoiser(probs, 4), LogLinear(), 4, SamplerConfig(steps=3, k=16), batch=n, length=L,
                      energy=energy, generator=torch.Generator().manual_seed(0), callback=lambda *a: calls.append(a))
    assert (x != 3).all()  # token 3 ('d') never appears
    assert not any(bool((e == 0).any()) for e in stats.ess)  # and no step fell back to a plain draw
    x_plain, _ = sample(iid_denoiser(probs, 4), LogLinear(), 4, SamplerConfig(steps=3), batch=n, length=L,
                        generator=torch.Generator().manual_seed(0))
    assert (x_plain == 3).any()  # where MDLM alone writes it


def test_every_candidate_vetoed_takes_a_proposal_draw_and_is_counted(micro_runs):
    run = edlm.load(micro_runs / "mdlm")
    out = run.sample(num=6, steps=4, k=3, batch_size=6, energy=lambda texts: [-math.inf] * len(texts))
    s = out.summary
    assert s["method"] == "edlm-fn" and s["mean_ess"] == 0.0
    assert s["all_vetoed"] > 0 and s["all_vetoed"] * 3 == s["energy_candidates_per_sample"] * 6
    assert len(out.texts) == 6 and all(0 <= i < 32 for r in out.rows for i in r["ids"])


def test_bad_functions_fail_before_sampling(micro_runs):
    run = edlm.load(micro_runs / "mdlm")
    seen = []

    def short(texts):
        seen.append(len(texts))
        return [0.0]

    with pytest.raises(EdlmError, match=r"shape \(1,\) for 2 candidates"):
        run.sample(num=4, steps=4, energy=short)
    assert seen == [2]  # only the probe ran
    with pytest.raises(EdlmError, match="returned NaN for candidate 1"):
        run.sample(num=4, steps=4, energy=lambda texts: [0.0, float("nan")][: len(texts)])
    with pytest.raises(EdlmError, match=r"returned \+inf"):
        run.sample(num=4, steps=4, energy=lambda texts: [math.inf] * len(texts))
    with pytest.raises(EdlmError, match="not 2 numbers"):
        run.sample(num=4, steps=4, energy=lambda texts: "no")
    with pytest.raises(EdlmError, match="not understood"):
        run.sample(num=4, steps=4, energy=42)
    with pytest.raises(EdlmError, match="inputs 'pixels'"):
        edlm.fn_energy(len, inputs="pixels")


def test_cli_py_function_energy(micro_runs, tmp_path):
    mod = tmp_path / "rewards.py"
    mod.write_text("import math\n\ndef no_a(texts):\n    return [-math.inf if 'a' in t else 0.0 for t in texts]\n")
    out = tmp_path / "s.jsonl"
    p = subprocess.run([sys.executable, "-m", "edlm", "sample", "--ckpt", str(micro_runs / "mdlm"), "--out", str(out),
                        "--num", "8", "--steps", "8", "--k", "8", "--energy", f"py:{mod}:no_a", "--energy-scale",
                        "2", "--quiet", "--device", "cpu", "--seed", "1"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    summ = json.loads(p.stdout.strip().splitlines()[-1])
    assert summ["method"] == "edlm-fn" and summ["energy"] == f"py:{mod}:no_a" and summ["energy_scale"] == 2.0
    assert summ["all_vetoed"] == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert not any("a" in r["text"] for r in rows)
    assert all(r["energy"] == f"py:{mod}:no_a" and r["energy_model"] is None for r in rows)
