"""EDLM parallel importance sampling (Algorithm 1 of Xu et al. 2025), one denoising step.

    1. k candidates x0^(1..k) ~ mu_theta(.|x_t) for every sequence, one batched float64 draw;
    2. E_j = E(x0^(j), x_t, t) for all B*k candidates in one batched energy call;
    3. j ~ softmax(-E / tau) over each sequence's own k candidates;
    4. x_s ~ q(x_s | x_t, x0^(j)).
Candidates of sequence b are rows b*k .. b*k+k-1 of the flattened batch (kept together by
construction: built as (B, k, L) and only ever reshaped, never re-ordered).
"""

from __future__ import annotations

import torch

from edlm.sampling.ancestral import unmask_draw
from edlm.sampling.categorical import sample_rows
from edlm.sampling.denoiser import as_posterior


def draw_at_masked(post, x_t: torch.Tensor, k: int, mask_id: int, generator=None, seqs=None, u=None):
    """k tokens at every masked position (of the sequences `seqs`, default all), in one float64 draw per chunk
    of rows -> tokens (B*L, k) (x_t's own elsewhere) and their log-probs (B*L, k) (0 at clean positions).
    u: optional pre-drawn uniforms (B, L, k) (see draw_candidates)."""
    B, L = x_t.shape
    post = as_posterior(post)
    masked = x_t == mask_id
    if seqs is not None:
        keep = torch.zeros(B, dtype=torch.bool, device=x_t.device)
        keep[seqs] = True
        masked = masked & keep[:, None]
    rows = masked.flatten().nonzero().squeeze(1)
    cand = x_t.reshape(-1, 1).repeat(1, k)  # (B*L, k)
    lp = torch.zeros(B * L, k, dtype=torch.float32, device=x_t.device)
    if rows.numel():
        ur = None if u is None else u.reshape(B * L, k)[rows]
        cand[rows], lp[rows] = sample_rows(post, rows, mask_id, k, generator, u=ur)
    return cand, lp


def draw_candidates(post, x_t: torch.Tensor, k: int, mask_id: int, generator=None, seqs=None, u=None):
    """post: a posterior at x_t (sampling/denoiser.py) or (B, L, V) SUBS log-probs.
    -> candidates (B, k, L) and their log mu_theta(x0|x_t) (B, k) (masked positions only).
    seqs: indices of the sequences to draw for (default all); the outputs then have len(seqs) rows.
    u: optional pre-drawn float64 uniforms (B, L, k), one per position and candidate: the draw then uses
    no generator, so how many positions are masked cannot shift anyone's random stream (DDP ranks).
    Log-probs exist one chunk of rows at a time (float64 for the draw), never for all of (B, L, V)."""
    B, L = x_t.shape
    cand, lp = draw_at_masked(post, x_t, k, mask_id, generator, seqs, u)
    cand, lp = cand.view(B, L, k).permute(0, 2, 1), lp.view(B, L, k).sum(1)
    return (cand, lp) if seqs is None else (cand[seqs], lp[seqs])


def candidate_energies(energy, cand: torch.Tensor, log_mu: torch.Tensor, x_t: torch.Tensor, t,
                       ks: torch.Tensor | None = None) -> torch.Tensor:
    """Energies (Ba, K) of candidates (Ba, K, L) with their log mu (Ba, K), sequence b's at x_t[b], in one batched
    call. t: a float or one time per sequence (Ba,) (first-hit, threshold). ks (Ba,): sequence b uses only its
    first ks[b] candidates; the others get no energy call and +inf (weight 0 in `select`), so each sequence is
    an exact ks[b]-candidate importance step of its own."""
    Ba, K, L = cand.shape
    if ks is None or bool((ks == K).all()):
        t_flat = (t.repeat_interleave(K) if torch.is_tensor(t) else torch.full((Ba * K,), t, device=x_t.device))
        return energy.energy(cand.reshape(Ba * K, L), x_t.repeat_interleave(K, dim=0), t_flat,
                             log_mu=log_mu.reshape(Ba * K)).view(Ba, K)
    valid = torch.arange(K, device=cand.device)[None] < ks[:, None]  # (Ba, K)
    rows = valid.nonzero()[:, 0]
    t_rows = t[rows] if torch.is_tensor(t) else torch.full((rows.numel(),), t, device=x_t.device)
    e = energy.energy(cand[valid], x_t[rows], t_rows, log_mu=log_mu[valid])
    out = torch.full((Ba, K), float("inf"), dtype=e.dtype, device=e.device)
    out[valid] = e
    return out


def select(energies: torch.Tensor, temperature: float = 1.0, generator=None):
    """energies (B, k) -> chosen index (B,), weights (B, k) float64, effective sample size (B,).

    E = +inf vetoes a candidate (weight 0). A sequence whose k candidates are ALL vetoed has no valid candidate
    to weight: it takes one of them uniformly, which is one plain proposal draw (the MDLM step), and its ESS is
    reported as 0, so that the summary can count such steps (`all_vetoed`): the veto did not hold there."""
    e = energies.double() / temperature
    vetoed = torch.isposinf(e).all(-1, keepdim=True)  # no host sync: the rule applies row by row
    e = torch.where(vetoed, torch.zeros_like(e), e)
    w = torch.softmax(-e, dim=-1)  # lower energy -> more weight
    j = torch.multinomial(w, 1, generator=generator).squeeze(-1)
    ess = torch.where(vetoed.squeeze(-1), torch.zeros_like(w[:, 0]), 1.0 / (w ** 2).sum(-1))
    return j, w, ess


def importance_step(post, x_t: torch.Tensor, t, alpha_t: float, alpha_s: float,
                    energy, k: int, mask_id: int, temperature: float = 1.0, generator=None, on_choice=None,
                    min_unmask: int = 1, move: torch.Tensor | None = None):
    """One EDLM step. post: the proposal's posterior at x_t (or (B, L, V) SUBS log-probs).
    Returns x_s (B, L), ess (B_active,) on the device, and how many positions unmasked (int).
    on_choice(active (Ba,), chosen (Ba,), weights (Ba, k)): optional, told which candidate won (traces).
    k: an int, or a (B,) tensor: one k per sequence (the adaptive policy, sampling/adaptive.py); a sequence with
    k = 1 then takes a plain MDLM draw.

    Which positions unmask does not depend on the chosen x0, so it is drawn first. A sequence where no
    position unmasks keeps x_t whatever candidate wins: it gets no candidates and no energy forward, and
    no ESS (its ESS would be meaningless, and counting it would inflate the mean).
    min_unmask: a sequence that unmasks fewer positions than this (but some) takes a plain MDLM draw for them,
    no energy: the energy corrects the DEPENDENCE between the tokens a step fixes together, and a single token
    drawn from exact marginals is already exact (while importance resampling with finite k only approximates
    that marginal). The choice depends on the positions drawn, never on the candidates, so it biases nothing.
    move: (B, L) bool, the positions to unmask when a sampler chose them itself (first-hit, threshold; the
    alphas are then unused); t: a float or one time per sequence (B,)."""
    B, L = x_t.shape
    if move is None:
        move = unmask_draw(x_t, alpha_t, alpha_s, mask_id, generator)
    ks = k if torch.is_tensor(k) else None
    if min_unmask > 1 or ks is not None:
        n_move = move.sum(1)
        energised = n_move >= max(min_unmask, 1)
        if ks is not None:
            energised &= ks > 1
        active = energised.nonzero().squeeze(1)
        single = ((n_move > 0) & ~energised).nonzero().squeeze(1)
    else:
        active, single = move.any(1).nonzero().squeeze(1), None  # syncs once
    x_t = _plain_draw(post, x_t, move, single, mask_id, generator)
    n_active = active.numel()
    if n_active == 0:
        return x_t, x_t.new_zeros(0, dtype=torch.float64), int(move.sum()) if single is not None else 0
    ka = None if ks is None else ks[active]
    width = k if ka is None else int(ka.max())
    cand, log_mu = draw_candidates(post, x_t, width, mask_id, generator, seqs=active)  # (Ba, k, L); syncs once
    xa = x_t[active]
    e = candidate_energies(energy, cand, log_mu, xa, t[active] if torch.is_tensor(t) else t, ka)  # row b*k+j: b
    j, w, ess = select(e, temperature, generator)
    if on_choice is not None:
        on_choice(active, j, w)
    x0 = cand[torch.arange(n_active, device=x_t.device), j]
    x_s = x_t.clone()
    x_s[active] = torch.where(move[active], x0, xa)
    return x_s, ess, int(move.sum())


def energy_move(post, x, t, move, energy, k: int, mask_id: int, cfg, generator, on_choice, i: int, stats, ess: list):
    """One EDLM move of the samplers that pick their own positions (first-hit, threshold): the positions `move`
    drawn by importance_step at time t (a tensor, one per sequence), the step's ESS appended to `ess` and counted in
    `stats` (a SampleStats). -> (x, the ESS per sequence, the next step's k under cfg.k_policy)."""
    chose = None if on_choice is None else (lambda a, j, w: on_choice(i, a, j, w))
    x, e, _ = importance_step(post, x, t, 0.0, 0.0, energy, k, mask_id, cfg.temperature, generator,
                              on_choice=chose, move=move)
    stats.energy_steps += 1
    stats.ks.append(k)
    stats.candidates += e.numel() * k
    ess.append(e)
    return x, e, (cfg.k_policy.next_k(k, e) if cfg.k_policy is not None else k)


def _plain_draw(post, x_t, move, seqs, mask_id, generator):
    """The sequences `seqs` (or none) take their `move` positions from one factorised draw (an MDLM step)."""
    if seqs is None or seqs.numel() == 0:
        return x_t
    cand, _ = draw_candidates(post, x_t, 1, mask_id, generator, seqs=seqs)  # (Bs, 1, L)
    x_s = x_t.clone()
    x_s[seqs] = torch.where(move[seqs], cand[:, 0], x_t[seqs])
    return x_s
