"""What a sampler asks of a denoiser: SUBS log-probs x_theta(x0 | x_t) at the positions it draws.

    post = posterior_of(denoise)(x_t, t)    # nothing runs yet
    logits = post.logits(rows)              # (N, >=V) unnormalised log-probs at flat positions `rows`
                                            # of x_t (masked ones); only the first V = mask_id columns count

Any callable denoise(x_t, t) -> (B, L, V) SUBS log-probs works: FullPosterior slices its output.
ModelDenoiser runs a DiT's trunk once per x_t, on first use, and its vocabulary projection only at
the rows asked for. An MDLM step at 128 steps and 1024 tokens unmasks ~8 positions per sequence, so
it projects and normalises 8 rows instead of 1024; a step where nothing unmasks runs nothing.
At masked rows SUBS is just the softmax without the MASK column, so both give the same numbers.
"""

from __future__ import annotations

import torch

from edlm.diffusion.subs import subs_log_probs


class FullPosterior:
    """Log-probs already computed for every position: (B, L, V)."""

    forwards = 1

    def __init__(self, logp: torch.Tensor):
        self.logp = logp.reshape(-1, logp.shape[-1])

    def logits(self, rows: torch.Tensor) -> torch.Tensor:
        return self.logp[rows]


class LazyPosterior:
    """Runs the trunk on the first logits call, then projects only the rows asked for."""

    def __init__(self, den: ModelDenoiser, x_t: torch.Tensor, t):
        self.den, self.x_t, self.t = den, x_t, t
        self.features = None
        self.forwards = 0

    def logits(self, rows: torch.Tensor) -> torch.Tensor:
        if self.features is None:
            self.features = self.den.features(self.x_t, self.t).flatten(0, 1)
            self.forwards = 1
        return self.den.model.head(self.features[rows])  # MASK's column is past V = mask_id: never drawn


def _times(t, x_t):
    return t if torch.is_tensor(t) else torch.full((x_t.shape[0],), float(t), device=x_t.device)


class ModelDenoiser:
    """A DiT as a denoiser. Call it for full (B, L, V) SUBS log-probs (energies, likelihood), or ask for
    `posterior(x_t, t)` (samplers). Precision is the caller's: run it under torch.autocast for bf16."""

    def __init__(self, model, mask_id: int):
        self.model, self.mask_id = model, mask_id
        self.time_conditioning = bool(getattr(model.cfg, "time_conditioning", False))

    def __call__(self, x_t: torch.Tensor, t) -> torch.Tensor:
        return subs_log_probs(self.model(x_t, _times(t, x_t)), x_t, self.mask_id)

    def features(self, x_t: torch.Tensor, t) -> torch.Tensor:
        return self.model.trunk(x_t, _times(t, x_t))

    def posterior(self, x_t: torch.Tensor, t) -> LazyPosterior:
        return LazyPosterior(self, x_t, t)


def posterior_of(denoise):
    """denoise -> a function (x_t, t) -> posterior with .logits(rows) and .forwards (0 or 1)."""
    if hasattr(denoise, "posterior"):
        return denoise.posterior
    return lambda x_t, t: FullPosterior(denoise(x_t, t))


def as_posterior(logp_or_post):
    """Accept a (B, L, V) log-prob tensor where a posterior is expected."""
    return FullPosterior(logp_or_post) if torch.is_tensor(logp_or_post) else logp_or_post
