"""Adaptive k (sampling/adaptive.py): off = today's sampler token for token; on = k moves the right way, stays in
[k_min, k_max], and the sampler contract (no MASK emitted, clean tokens kept) holds."""

import json

import pytest
import torch

from edlm.cli import main
from edlm.config.sampling import SamplerConfig
from edlm.diffusion.schedules import LogLinear
from edlm.energy.base import TableEnergy
from edlm.sampling.adaptive import KPolicy, parse_k_policy
from edlm.sampling.loop import sample
from oracles import iid_denoiser

MASK = 3
PROBS = torch.tensor([[0.5, 0.3, 0.2]] * 12)


class HashEnergy:
    """A candidate's energy is `scale` x a fixed pseudo-random number of its tokens: scale 0 gives uniform
    weights (ESS = k), a large scale lets one candidate take all the weight (ESS ~ 1)."""

    def __init__(self, scale):
        self.scale = scale

    def energy(self, x0, x_t, t, *, log_mu=None):
        code = (x0 * torch.arange(1, x0.shape[1] + 1) ** 3).sum(-1) % 9973
        return self.scale * (code.float() / 9973.0)


def _run(cfg, energy, seed=5, batch=32, x_init=None):
    g = torch.Generator().manual_seed(seed)
    return sample(iid_denoiser(PROBS, MASK), LogLinear(), MASK, cfg, batch=batch, length=12, x_init=x_init,
                  energy=energy, generator=g)


def test_policy_off_is_the_fixed_k_sampler_token_for_token():
    # k_policy=None is the default; a policy pinned to k (k_min = k_max = k) never changes k: both must give the
    # same tokens as the plain fixed-k sampler for the seed (the policy consumes no randomness).
    energy = TableEnergy(lambda x0: x0.sum(-1).float())
    x0, st0 = _run(SamplerConfig(steps=6, k=4), energy)
    x1, st1 = _run(SamplerConfig(steps=6, k=4, k_policy=KPolicy(k_max=4, k_min=4)), energy)
    assert torch.equal(x0, x1) and st0.ks == st1.ks == [4] * st0.energy_steps
    assert st0.candidates == 4 * sum(e.numel() for e in st0.ess)


def _own_ks(st, b):
    """The k sequence b drew on each EDLM step it took part in."""
    return [int(k[b]) for k in st.seq_ks if k[b] > 0]


def test_uniform_weights_drive_k_down_to_plain_mdlm():
    # k_min = 1: ESS = k every time: each sequence halves its own k on each of its EDLM steps until k = 1, then
    # its energy stops (absorbing)
    x, st = _run(SamplerConfig(steps=10, k=8, k_policy=KPolicy(k_max=8, k_min=1)), HashEnergy(0.0))
    assert all(_own_ks(st, b) == [8, 4, 2] for b in range(32)) and not (x == MASK).any()
    assert st.candidates == 32 * (8 + 4 + 2)


def test_the_default_k_min_keeps_the_energy_on():
    _, st = _run(SamplerConfig(steps=10, k=8, k_policy=KPolicy(k_max=8)), HashEnergy(0.0))
    for b in range(32):
        own = _own_ks(st, b)
        assert own[:3] == [8, 4, 2] and set(own[3:]) <= {2}
    assert st.energy_steps == 10


def test_one_dominant_candidate_drives_k_up_to_k_max():
    _, st = _run(SamplerConfig(steps=10, k=2, k_policy=KPolicy(k_max=16)), HashEnergy(1e4))
    assert st.ks[:4] == [2, 4, 8, 16]  # later, with few masks left, the k candidates can coincide (ESS = k)
    assert max(float(e.mean()) for e in st.ess[:3]) < 1.5


@pytest.mark.parametrize("scale", [0.0, 0.5, 3.0, 1e4])
@pytest.mark.parametrize("unmask", ["random", "confidence"])
def test_k_in_range_no_mask_emitted_clean_tokens_kept(scale, unmask):
    pol = KPolicy(k_max=8, k_min=2)
    x_init = torch.full((16, 12), MASK)
    x_init[:, ::3] = torch.randint(0, 3, (16, 4), generator=torch.Generator().manual_seed(1))
    x, st = _run(SamplerConfig(steps=8, k=3, k_policy=pol, unmask=unmask), HashEnergy(scale), batch=16,
                 x_init=x_init)
    assert st.ks and all(2 <= k <= 8 for k in st.ks) and st.ks[0] == 3
    assert not (x == MASK).any()
    keep = x_init != MASK
    assert torch.equal(x[keep], x_init[keep])


def test_next_k_rule():
    p = KPolicy(k_max=16, k_min=1, double_below=0.25, halve_above=0.75)
    ess = torch.tensor
    assert p.next_k(4, ess([1.0, 1.3])) == 8  # usage (1.15 - 1) / 3 = 0.05: double
    assert p.next_k(16, ess([1.0])) == 16  # capped
    assert p.next_k(4, ess([4.0, 3.4])) == 2  # usage 0.9: halve
    assert p.next_k(2, ess([2.0])) == 1
    assert p.next_k(4, ess([2.5])) == 4  # usage 0.5: keep
    assert p.next_k(1, ess([])) == 1
    assert KPolicy(k_max=8, k_min=2).next_k(2, ess([2.0])) == 2
    assert p.start(32) == 16 and KPolicy(k_min=2).start(1) == 2
    with pytest.raises(ValueError):
        KPolicy(k_max=2, k_min=4)
    with pytest.raises(ValueError):
        KPolicy(double_below=0.8, halve_above=0.5)
    assert parse_k_policy("fixed") is None and parse_k_policy("ess", 8) == KPolicy(k_max=8)


def test_cli_k_policy_reports_its_cost(synthetic_data, tmp_path, capsys):
    runs = tmp_path / "runs"
    micro = ["--preset", "micro", "--data", "synthetic", "--max_steps", "3", "--quiet"]
    for obj in ("mdlm", "ar"):
        assert main(["train", "--objective", obj, "--out", str(runs / obj), *micro]) == 0
    capsys.readouterr()
    out = tmp_path / "e.jsonl"
    assert main(["sample", "--ckpt", str(runs / "mdlm"), "--energy", f"ar:{runs / 'ar'}", "--k", "4",
                 "--k-policy", "ess", "--k-max", "8", "--num", "4", "--steps", "4", "--out", str(out),
                 "--quiet"]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert s["k_policy"] == "ess" and s["k_max"] == 8
    assert 1 <= s["mean_k"] <= 8 and s["energy_candidates_per_sample"] > 0
    assert main(["sample", "--ckpt", str(runs / "mdlm"), "--k-policy", "ess", "--num", "2", "--steps", "2",
                 "--out", str(tmp_path / "m.jsonl"), "--quiet"]) != 0  # needs --energy


def test_min_unmask_runs_the_energy_only_where_enough_positions_unmask():
    seen, before = [], {}

    def cb(i, x, t, ess):
        if i in before:
            seen.append((before[i], x.clone()))
        before.clear()
        before[i + 1] = x.clone()

    steps_active = {}

    def oc(i, active, chosen, w):
        steps_active[i] = active.clone()

    g = torch.Generator().manual_seed(2)
    x_init = torch.full((32, 12), MASK)
    before[0] = x_init.clone()
    x, st = sample(iid_denoiser(PROBS, MASK), LogLinear(), MASK, SamplerConfig(steps=12, k=4, min_unmask=2),
                   x_init=x_init, energy=HashEnergy(3.0), generator=g, callback=cb, on_choice=oc)
    assert not (x == MASK).any() and st.energy_steps == len(steps_active) > 0
    singles = 0
    for i, (xb, xa) in enumerate(seen):
        moved = (xb != xa).sum(1)
        act = steps_active.get(i, torch.zeros(0, dtype=torch.long))
        assert (moved[act] >= 2).all()
        rest = torch.ones(32, dtype=torch.bool)
        rest[act] = False
        assert (moved[rest] <= 1).all()
        singles += int((moved[rest] == 1).sum())
    assert singles > 0  # some sequences did take the plain draw
    assert st.candidates == 4 * sum(e.numel() for e in st.ess)


def test_min_unmask_above_length_never_runs_the_energy():
    x_init = torch.full((16, 12), MASK)
    x_init[:, ::4] = 1
    x, st = _run(SamplerConfig(steps=5, k=4, min_unmask=13), HashEnergy(3.0), batch=16, x_init=x_init)
    assert st.energy_steps == 0 and st.candidates == 0 and not (x == MASK).any()
    assert (x[:, ::4] == 1).all()
    with pytest.raises(ValueError):
        SamplerConfig(min_unmask=2, unmask="confidence")


class TypedEnergy:
    """Rows whose first (fixed) token is 0 prefer 1s (E = -beta x their count: the weights discriminate, their
    k doubles); rows starting with 1 get E = 0 (flat weights: their k halves)."""

    def __init__(self, beta):
        self.beta = beta

    def energy(self, x0, x_t, t, *, log_mu=None):
        return torch.where(x0[:, 0] == 0, -self.beta * (x0[:, 1:] == 1).sum(-1).float(), 0.0)


def _typed(n_pref, n_flat, seed, steps=6, L=8):
    x_init = torch.full((n_pref + n_flat, L), 2)
    x_init[:n_pref, 0], x_init[n_pref:, 0] = 0, 1
    probs = torch.full((L, 2), 0.5)
    cfg = SamplerConfig(steps=steps, k=4, k_policy="ess")
    return sample(iid_denoiser(probs, 2), LogLinear(), 2, cfg, x_init=x_init, energy=TypedEnergy(3.0),
                  generator=torch.Generator().manual_seed(seed))


def test_each_sequence_k_follows_its_own_ess():
    # Each sequence's k on its next EDLM step is the policy's rule applied to ITS k and ESS on this one, whatever
    # the other sequences' weights did (half the rows have discriminating weights, half flat ones).
    x, st = _typed(16, 16, seed=0)
    pol, last = KPolicy(), {}
    for seq_k, ess in zip(st.seq_ks, st.ess, strict=True):
        active = seq_k.nonzero().squeeze(1)
        for b, e in zip(active.tolist(), ess.tolist(), strict=True):
            if b in last:
                assert int(seq_k[b]) == int(pol.next_ks(*last[b])[0])
            last[b] = (seq_k[b:b + 1], torch.tensor([e], dtype=torch.float64))
    grew = [max(_own_ks(st, b)) for b in range(16)]
    assert max(grew) > 4 and all(set(_own_ks(st, b)[1:]) == {2} for b in range(16, 32))  # flat: down to 2


def test_a_sequence_law_does_not_depend_on_its_batch():
    # The same preferring rows, alone or beside as many flat-weight rows (which, with a batch-mean rule, pulled
    # everyone's k down): the mean count of 1s they end with agrees within sampling error (512 rows each).
    alone, _ = _typed(512, 0, seed=1)
    mixed, _ = _typed(512, 512, seed=2)
    a = (alone[:, 1:] == 1).sum(1).double()
    m = (mixed[:512, 1:] == 1).sum(1).double()
    se = (a.var() / 512 + m.var() / 512).sqrt()
    assert abs(float(a.mean() - m.mean())) < 4 * float(se), (float(a.mean()), float(m.mean()), float(se))
