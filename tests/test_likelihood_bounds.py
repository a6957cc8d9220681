"""Every likelihood labelled a bound is >= the exact NLL it bounds, on problems small enough to enumerate.

A random (untrained, arbitrary) denoiser over V = 3 tokens and L = 3 positions, and an arbitrary energy
table: the bounds must hold for ANY model, not just a good one. The exact NLLs come from dynamic
programming over every state of the sampler's chain (T-step samplers, MDLM and EDLM with k candidates)
or from enumerating unmasking orders (the continuous-time model); the exact bounds from enumerating every
mask pattern, move set, fill and candidate tuple. The Monte-Carlo estimators of eval/likelihood.py must
average to the exact bounds. See docs/likelihood.md for the proofs.
"""

import itertools
import math

import numpy as np
import pytest
import torch

from edlm.config.sampling import SamplerConfig
from edlm.diffusion.schedules import Cosine, LogLinear, pinned_alpha
from edlm.energy.base import TableEnergy
from edlm.eval.likelihood import EDLMSampler, discrete_nelbo, edlm_estimate, mdlm_nelbo
from edlm.sampling.ancestral import time_grid
from edlm.sampling.loop import in_window, sample

V, MASK, L = 3, 3, 3
ALL = list(itertools.product(range(V), repeat=L))


class Toy(torch.nn.Module):
    """logits[l, v] = W[l, v] + sum_j U[l, j, x_t^j, v]: an arbitrary context-dependent denoiser."""

    def __init__(self, seed=0, scale=1.0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W = torch.randn(L, V, generator=g, dtype=torch.float64) * scale
        self.U = torch.randn(L, L, V + 1, V, generator=g, dtype=torch.float64) * scale

    def logp(self, x_t):  # (B, L) -> (B, L, V) float64
        lg = self.W[None].expand(x_t.shape[0], -1, -1).clone()
        for j in range(L):
            lg = lg + self.U[:, j][:, x_t[:, j]].permute(1, 0, 2)
        return torch.log_softmax(lg, -1)

    def forward(self, x_t, t=None):
        lp = self.logp(x_t).float()
        return torch.cat([lp, torch.full_like(lp[..., :1], -1e9)], -1)


def _energy_table(seed=1, scale=1.5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(V ** L, generator=g, dtype=torch.float64) * scale


def _code(x):
    return sum(int(x[i]) * V ** (L - 1 - i) for i in range(L))


def _pos_logp(model, state):
    return model.logp(torch.tensor([state]))[0]  # (L, V)


def _consistent(state):
    return [x for x in ALL if all(s == MASK or s == v for s, v in zip(state, x, strict=True))]


def _mu(model, state):
    """mu(x0 | x_t) over the sequences consistent with x_t: {x0: prob}."""
    lp = _pos_logp(model, state)
    return {x: math.exp(sum(float(lp[i, x[i]]) for i in range(L) if state[i] == MASK)) for x in _consistent(state)}


def _qk(model, state, table, k, tau=1.0):
    """The distribution of the candidate the k-candidate importance step picks: exact, by enumeration."""
    mu = _mu(model, state)
    if k == 1:
        return mu
    xs = list(mu)
    a = {x: -float(table[_code(x)]) / tau for x in xs}
    out = {}
    for x in xs:
        acc = 0.0
        for others in itertools.product(xs, repeat=k - 1):
            p = math.prod(mu[o] for o in others)
            acc += p * k * math.exp(a[x]) / (math.exp(a[x]) + sum(math.exp(a[o]) for o in others))
        out[x] = mu[x] * acc
    return out


def _alphas(schedule, steps, i):
    grid = time_grid(steps)
    return grid[i], pinned_alpha(schedule, grid[i]), pinned_alpha(schedule, grid[i + 1])


def exact_sampler_nll(model, schedule, steps, table=None, k=1, window=(0.0, 1.0)):
    """-log p(x0) of the T-step sampler (MDLM, or EDLM with k candidates), for every x0."""
    dist = {(MASK,) * L: 1.0}
    for i in range(steps):
        t, a_t, a_s = _alphas(schedule, steps, i)
        a = (a_s - a_t) / (1 - a_t)
        nxt = {}
        for state, p in dist.items():
            use_k = k if (table is not None and in_window(t, window)) else 1
            q = _qk(model, state, table, use_k)
            masked = [j for j in range(L) if state[j] == MASK]
            for r in range(len(masked) + 1):
                for M in itertools.combinations(masked, r):
                    pm = a ** r * (1 - a) ** (len(masked) - r)
                    if pm == 0:
                        continue
                    for x, qx in q.items():
                        s2 = tuple(x[j] if j in M else state[j] for j in range(L))
                        nxt[s2] = nxt.get(s2, 0.0) + p * pm * qx
        dist = nxt
    return {x: -math.log(dist[x]) for x in ALL}


def exact_discrete_bound(model, schedule, steps, x0, table=None, k=1, window=(0.0, 1.0)):
    """The exact T-step NELBO of eval/likelihood.discrete_nelbo (expectation over everything it draws)."""
    total = 0.0
    for i in range(steps):
        t, a_t, a_s = _alphas(schedule, steps, i)
        a = (a_s - a_t) / (1 - a_t)
        for pattern in itertools.product((0, 1), repeat=L):  # 1 = masked in x_t
            pq = math.prod((1 - a_t) if m else a_t for m in pattern)
            if pq == 0:
                continue
            state = tuple(MASK if m else v for m, v in zip(pattern, x0, strict=True))
            lp = _pos_logp(model, state)
            masked = [j for j in range(L) if pattern[j]]
            cost = sum(a * -float(lp[j, x0[j]]) for j in masked)
            if table is not None and k > 1 and in_window(t, window):
                mu = _mu(model, state)
                xs = list(mu)
                for r in range(1, len(masked) + 1):
                    for M in itertools.combinations(masked, r):
                        pm = a ** r * (1 - a) ** (len(masked) - r)
                        if pm == 0:
                            continue
                        rest = [j for j in masked if j not in M]
                        e = 0.0
                        for fill in itertools.product(range(V), repeat=len(rest)):
                            star = list(x0)
                            for j, v in zip(rest, fill, strict=True):
                                star[j] = v
                            pf = math.prod(math.exp(float(lp[j, v])) for j, v in zip(rest, fill, strict=True))
                            a_star = -float(table[_code(star)])
                            for others in itertools.product(xs, repeat=k - 1):
                                po = math.prod(mu[o] for o in others)
                                s = math.exp(a_star) + sum(math.exp(-float(table[_code(o)])) for o in others)
                                e += pf * po * -math.log(k * math.exp(a_star) / s)
                        cost += pm * e
            total += pq * cost
    return total


@pytest.mark.parametrize("schedule", [LogLinear(), Cosine()], ids=["loglinear", "cosine"])
@pytest.mark.parametrize("steps", [1, 2, 4])
def test_mdlm_discrete_bound_holds_for_every_sequence(schedule, steps):
    model = Toy(0)
    nll = exact_sampler_nll(model, schedule, steps)
    assert abs(sum(math.exp(-v) for v in nll.values()) - 1) < 1e-9  # the DP is a distribution
    for x0 in ALL:
        assert exact_discrete_bound(model, schedule, steps, x0) >= nll[x0] - 1e-9, x0


@pytest.mark.parametrize("k,window,steps", [(2, (0.0, 1.0), 2), (3, (0.0, 1.0), 1), (2, (0.0, 0.6), 3)])
def test_edlm_sampler_bound_holds_for_every_sequence(k, window, steps):
    model, table = Toy(0), _energy_table()
    nll = exact_sampler_nll(model, LogLinear(), steps, table, k, window)
    assert abs(sum(math.exp(-v) for v in nll.values()) - 1) < 1e-9
    for x0 in ALL:
        b = exact_discrete_bound(model, LogLinear(), steps, x0, table, k, window)
        assert b >= nll[x0] - 1e-9, (x0, b, nll[x0])


def test_exact_sampler_distribution_is_what_the_sampler_draws():
    # The DP above describes the sampler the code runs (so the bound is about that sampler): chi-square.
    model, table, k, steps, n = Toy(0), _energy_table(), 2, 2, 30000
    nll = exact_sampler_nll(model, LogLinear(), steps, table, k)
    g = torch.Generator().manual_seed(0)

    def den(x_t, t):
        return model.logp(x_t).float()

    x, _ = sample(den, LogLinear(), MASK, SamplerConfig(steps=steps, k=k), batch=n, length=L,
                  energy=TableEnergy(lambda x0: table[x0[:, 0] * 9 + x0[:, 1] * 3 + x0[:, 2]].float()), generator=g)
    counts = np.bincount((x[:, 0] * 9 + x[:, 1] * 3 + x[:, 2]).numpy(), minlength=27)
    expect = np.array([math.exp(-nll[c]) for c in ALL]) * n
    chi2 = float(((counts - expect) ** 2 / expect).sum())
    assert chi2 < 60, chi2  # 26 degrees of freedom: P(chi2 > 60) ~ 2e-4


@pytest.mark.parametrize("with_energy", [False, True])
def test_discrete_bound_estimator_averages_to_the_exact_bound(with_energy):
    model, table, k, steps, n = Toy(0), _energy_table(), 2, 2, 40000
    sampler = EDLMSampler(TableEnergy(lambda x0: table[x0[:, 0] * 9 + x0[:, 1] * 3 + x0[:, 2]].float()), k=k) \
        if with_energy else None
    g = torch.Generator().manual_seed(1)
    for x0 in [(0, 1, 2), (2, 2, 0)]:
        exact = exact_discrete_bound(model, LogLinear(), steps, x0, table if with_energy else None, k)
        est = discrete_nelbo(model, torch.tensor([x0] * n), LogLinear(), MASK, g, steps=steps, sampler=sampler)
        v = est["edlm_steps" if with_energy else "mdlm_steps"]
        se = v.std().item() / n ** 0.5
        assert abs(v.mean().item() - exact) < 4.5 * se + 1e-4, (x0, v.mean().item(), exact, se)


# ---- continuous time ----------------------------------------------------------------------------------
def exact_continuous_nll(model, schedule, x0, t_eps):
    """-log p(x0) of the model mdlm_nelbo bounds: top jump to alpha(1), continuous reverse to t_eps (reveal
    times i.i.d., so the reveal order is uniform), then one factorised decode of what is left."""
    a1, ab = float(schedule.alpha(1.0)), float(schedule.alpha(t_eps))
    beta = (ab - a1) / (1 - a1)
    lp0 = _pos_logp(model, (MASK,) * L)
    total = 0.0
    for A in itertools.chain.from_iterable(itertools.combinations(range(L), r) for r in range(L + 1)):
        pA = a1 ** len(A) * (1 - a1) ** (L - len(A)) * math.prod(math.exp(float(lp0[j, x0[j]])) for j in A)
        rest = [j for j in range(L) if j not in A]
        for B in itertools.chain.from_iterable(itertools.combinations(rest, r) for r in range(len(rest) + 1)):
            pB = beta ** len(B) * (1 - beta) ** (len(rest) - len(B))
            orders = list(itertools.permutations(B))
            acc = 0.0
            for order in orders:
                state, p = [x0[j] if j in A else MASK for j in range(L)], 1.0
                for j in order:
                    p *= math.exp(float(_pos_logp(model, tuple(state))[j, x0[j]]))
                    state[j] = x0[j]
                lp = _pos_logp(model, tuple(state))
                p *= math.prod(math.exp(float(lp[j, x0[j]])) for j in range(L) if state[j] == MASK)
                acc += p / len(orders)
            total += pA * pB * acc
    return -math.log(total)


def exact_continuous_bound(model, schedule, x0, t_eps):
    a1 = float(schedule.alpha(1.0))
    top = a1 * -sum(float(_pos_logp(model, (MASK,) * L)[j, x0[j]]) for j in range(L))

    def f(pattern):  # sum over masked of -log p(x0^l | x_t)
        state = tuple(MASK if m else v for m, v in zip(pattern, x0, strict=True))
        lp = _pos_logp(model, state)
        return sum(-float(lp[j, x0[j]]) for j in range(L) if pattern[j])

    pats = [(p, f(p)) for p in itertools.product((0, 1), repeat=L)]
    nodes, wts = np.polynomial.legendre.leggauss(64)
    edges = np.geomspace(t_eps, 1.0, 41)
    body = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        for z, wz in zip(nodes, wts, strict=True):
            t = torch.tensor((hi - lo) / 2 * z + (hi + lo) / 2, dtype=torch.float64)
            al, w = float(schedule.alpha(t)), float(-schedule.dalpha(t) / (1 - schedule.alpha(t)))
            ex = sum((1 - al) ** sum(p) * al ** (L - sum(p)) * v for p, v in pats)
            body += (hi - lo) / 2 * wz * w * ex
    ab = float(schedule.alpha(t_eps))
    bottom = sum((1 - ab) ** sum(p) * ab ** (L - sum(p)) * v for p, v in pats)
    return top + body + bottom


@pytest.mark.parametrize("schedule", [LogLinear(eps=0.05), Cosine(eps=0.05)], ids=["loglinear", "cosine"])
def test_continuous_mdlm_bound_holds_and_the_estimator_matches_it(schedule):
    model, t_eps, n = Toy(2, scale=1.5), 0.02, 40000
    g = torch.Generator().manual_seed(3)
    for x0 in [(0, 1, 2), (1, 1, 1), (2, 0, 0)]:
        nll = exact_continuous_nll(model, schedule, x0, t_eps)
        bound = exact_continuous_bound(model, schedule, x0, t_eps)
        assert bound >= nll - 1e-9, (x0, bound, nll)
        est = mdlm_nelbo(model, torch.tensor([x0] * n), schedule, MASK, g, t_eps=t_eps)
        se = est.std().item() / n ** 0.5
        assert abs(est.mean().item() - bound) < 4.5 * se + 1e-4, (x0, est.mean().item(), bound, se)


def test_paper_formula_is_not_a_bound_on_the_correlated_pair():
    # Data (0,0) or (1,1) with probability 1/2; a uniform MDLM; the exact AR energy. The joint log p(x0|x_t)
    # inside the continuous NELBO gives log2/4 = 0.173 nats/token: half the true entropy (log 2)/2 = 0.347.
    # An exact AR energy makes mu * exp(-E) = p_AR, so log Z(x_t) = log P_AR(sequences agreeing with x_t).
    class Uniform(torch.nn.Module):
        def forward(self, x_t, t=None):
            out = torch.zeros(*x_t.shape, 3)
            out[..., 2] = -1e9  # token 2 never appears; column 3 would be MASK: V = mask_id = 2 here
            return out[..., :3]

    mask = 2

    class PairAR:
        def energy(self, x0, x_t, t, *, log_mu=None):
            log_p = torch.where(x0[:, 0] == x0[:, 1], math.log(0.5), -1e4).double()
            return (-log_p + log_mu.double()).float()

    n = 40000
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, 2, (n, 1), generator=g).expand(n, 2).contiguous()
    est = edlm_estimate(Uniform(), x0, LogLinear(eps=1e-6), mask, g, PairAR(), t_eps=1e-6, logz_samples=64)
    per_token = est["hi"].mean().item() / 2
    assert abs(per_token - math.log(2) / 4) < 0.01, per_token
    assert per_token < math.log(2) / 2 - 0.15  # below the entropy: so it cannot be an upper bound


def test_without_the_end_jumps_the_continuous_formula_is_not_a_bound():
    # What eval printed before: E_{t ~ U[t_eps, 1]}[w(t) ...] with neither the top jump (alpha(1) = eps > 0,
    # but sampling starts from all MASK) nor the final decode at t_eps. For some x0 it falls below the exact
    # NLL of the model that is sampled; with both jumps counted it never does (test above).
    model, schedule, t_eps = Toy(2, scale=1.5), LogLinear(eps=0.05), 0.02
    gaps = []
    for x0 in ALL:
        a1, ab = float(schedule.alpha(1.0)), float(schedule.alpha(t_eps))
        top = a1 * -sum(float(_pos_logp(model, (MASK,) * L)[j, x0[j]]) for j in range(L))
        bottom = 0.0
        for p in itertools.product((0, 1), repeat=L):
            state = tuple(MASK if m else v for m, v in zip(p, x0, strict=True))
            lp = _pos_logp(model, state)
            bottom += (1 - ab) ** sum(p) * ab ** (L - sum(p)) * sum(-float(lp[j, x0[j]]) for j in range(L) if p[j])
        old = (exact_continuous_bound(model, schedule, x0, t_eps) - top - bottom) / (1 - t_eps)
        gaps.append(old - exact_continuous_nll(model, schedule, x0, t_eps))
    assert min(gaps) < -0.1, min(gaps)


def test_evaluation_uses_the_runs_own_t_eps_and_schedule():
    from edlm.eval.likelihood import evaluate_split

    model = Toy(0)
    x0 = torch.tensor([[0, 1, 2], [2, 2, 1]] * 8)
    meta = {"mask_id": MASK, "objective": "mdlm", "train": {"schedule": "cosine", "t_eps": 0.3}}
    got = evaluate_split(model, meta, [x0], seed=5)["sums"]["mdlm"]
    want = mdlm_nelbo(model, x0, Cosine(), MASK, torch.Generator().manual_seed(5), t_eps=0.3).sum().item()
    assert got == pytest.approx(want, rel=1e-9)
    meta["train"]["t_eps"] = 1e-3
    assert evaluate_split(model, meta, [x0], seed=5)["sums"]["mdlm"] != pytest.approx(got, rel=1e-6)


def test_cli_labels_every_likelihood_and_withholds_a_negative_estimate(synthetic_data, tmp_path):
    # Untrained micro runs: the EDLM estimate's log Z draws are degenerate, so it must be withheld (null,
    # with a warning) rather than printed negative; the bounds are labelled; nothing is called a bound but
    # the bounds.
    import json
    import subprocess
    import sys

    from conftest import micro_configs
    from edlm.api.trainer import train_run as train

    for obj in ("mdlm", "ar"):
        m, t = micro_configs(obj, max_steps=2, save_every=2)
        train(t, m, tmp_path / obj, quiet=True)
    r = subprocess.run([sys.executable, "-m", "edlm", "eval", "nelbo", "--ckpt", str(tmp_path / "mdlm"), "--energy",
                        f"ar:{tmp_path / 'ar'}", "--steps", "4", "--k", "2", "--bound-draws", "2", "--max-blocks",
                        "16", "--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    d = json.loads(r.stdout.strip().splitlines()[-1])
    kinds = {k: v["kind"] for k, v in d["results"].items()}
    assert kinds == {"mdlm": "upper bound", "mdlm_steps": "upper bound", "edlm_steps": "upper bound",
                     "edlm_estimate": "estimate"}
    for v in d["results"].values():
        assert v["nll"] is None or v["nll"] >= 0
    assert "bound" not in d  # the old field that called the EDLM formula an upper bound
    assert d["primary"] == "edlm_steps" and d["nll"] == d["results"]["edlm_steps"]["nll"]


def test_the_edlm_bound_skips_the_energy_where_the_sampler_does():
    # min_unmask as the sampler's: a step that unmasks fewer positions of a sequence takes a plain MDLM draw, so
    # its bound term is MDLM's; above the length no step runs the energy, and the EDLM bound IS the MDLM one.
    model, table, n = Toy(0), _energy_table(), 4000
    energy = TableEnergy(lambda x0: table[x0[:, 0] * 9 + x0[:, 1] * 3 + x0[:, 2]].float())
    x0 = torch.tensor([(0, 1, 2)] * n)
    est = discrete_nelbo(model, x0, LogLinear(), MASK, torch.Generator().manual_seed(2), steps=2,
                         sampler=EDLMSampler(energy, k=2, min_unmask=L + 1))
    assert torch.equal(est["edlm_steps"], est["mdlm_steps"])
    on = discrete_nelbo(model, x0, LogLinear(), MASK, torch.Generator().manual_seed(2), steps=2,
                        sampler=EDLMSampler(energy, k=2))
    assert not torch.equal(on["edlm_steps"], on["mdlm_steps"])
    assert EDLMSampler(energy).k == 4  # the sampler's own default (Run.sample, edlm sample)
