"""Categorical draws, exact in float64, without a float64 copy of the logits.

Sampling from float32 probabilities (or float32 Gumbel noise) truncates the tail and lowers the
effective temperature: lower generative perplexity AND lower entropy, a fake win. What must be float64
is the cumulative sum the uniform is compared against (a float32 CDF near 1 has steps of 6e-8, so every
token below that is drawn wrongly). Each token's weight exp(l - max) is exact to float32's relative
precision, 1e-7, down to 1e-38; tokens more than 103 nats below the mode (p < 1e-45) get weight 0.

So a draw is an inverse-CDF search in two levels, with float64 uniforms:
  1. the weights summed in float64 per block of BLOCK tokens -> (N, V/BLOCK) block CDF -> block;
  2. the chosen block's BLOCK weights -> float64 CDF -> token.
The only pass over all N*V logits reads them once (plus the max); `sample_categorical_reference`, a
flat float64 softmax + CDF search, is the plain version the tests hold it to (same uniforms).
"""

from __future__ import annotations

import torch

from edlm.utils import fused_on_gpu

BLOCK = 64
CHUNK_ELEMENTS = 1 << 27  # logits per chunk: bounds the float32 temporaries of the plain path (512 MiB)


def chunk_rows(V: int) -> int:
    """How many rows of V classes one chunk holds."""
    return max(1, CHUNK_ELEMENTS // max(V, 1))


def uniforms(n: int, k: int, generator=None, device=None) -> torch.Tensor:
    return torch.rand(n, k, dtype=torch.float64, generator=generator, device=device)


def _block_sums(logits: torch.Tensor, m: torch.Tensor, V: int) -> torch.Tensor:
    """(n, W >= V) logits, (n, 1) float32 row max -> (n, ceil(V/BLOCK)) float64 sums of exp(l - m)."""
    n = logits.shape[0]
    nb = -(-V // BLOCK)
    w = torch.exp(logits[:, :V].float() - m)
    if nb * BLOCK != V:
        w = torch.nn.functional.pad(w, (0, nb * BLOCK - V))
    return w.view(n, nb, BLOCK).sum(-1, dtype=torch.float64)


def _draw_plain(logits: torch.Tensor, u: torch.Tensor, V: int):
    """One chunk: logits (n, W >= V), u (n, k) float64 -> tokens (n, k) int64, log-probs (n, k) float32."""
    n, k = u.shape
    m = logits[:, :V].amax(-1, keepdim=True).float()
    bs = _block_sums(logits, m, V)  # (n, nb) float64
    cb = bs.cumsum(-1)
    total = cb[:, -1:]
    target = u * total
    b = torch.searchsorted(cb, target, right=True).clamp_(max=cb.shape[1] - 1)  # (n, k)
    before = torch.where(b > 0, cb.gather(1, (b - 1).clamp(min=0)), torch.zeros_like(target))
    # Level 2: the chosen block's weights, recomputed exactly as in level 1 (float32 exp), summed in float64.
    cols = b[..., None] * BLOCK + torch.arange(BLOCK, device=logits.device)  # (n, k, BLOCK)
    valid = cols < V
    lb = logits.gather(1, cols.clamp(max=V - 1).view(n, -1)).view(n, k, BLOCK)
    wb = torch.exp(lb.float() - m[..., None]).double().masked_fill(~valid, 0.0)
    cw = wb.cumsum(-1)
    # Position inside the block, rescaled to this block's own sum (level-1 and level-2 sums may differ in
    # the last bits) and kept strictly below it, so a zero-weight slot is never chosen.
    blk = (cb.gather(1, b) - before).clamp(min=1e-300)
    r = ((target - before) / blk).clamp(0, 1) * cw[..., -1]
    r = torch.minimum(r, torch.nextafter(cw[..., -1], torch.zeros_like(r)))
    j = torch.searchsorted(cw, r[..., None], right=True).squeeze(-1).clamp_(max=BLOCK - 1)
    tok = b * BLOCK + j
    logp = (wb.gather(-1, j[..., None]).squeeze(-1).log() - total.log()).float()
    return tok, logp


# On a GPU the whole draw compiles into a few fused kernels: one read of the logits, no float32 copy,
# and few launches (the plain version launches ~25 small kernels per chunk).
_draw_fused = fused_on_gpu(_draw_plain)


def _draw_sharpened(logits: torch.Tensor, u: torch.Tensor, V: int, sharpen):
    """Draw from the sharpened distribution (sampling/sharpen.py), report the model's own log-probs of the draws."""
    raw = logits[:, :V].float()
    tok, _ = _draw_fused(sharpen.logits(raw), u, V)
    return tok, raw.gather(1, tok) - torch.logsumexp(raw, -1, keepdim=True)


def _draw_in_chunks(n: int, step: int, chunk_logits, V: int, num_samples: int, generator, device, u=None,
                    sharpen=None):
    """Rows 0..n-1 in chunks of `step`; chunk_logits(i, j) gives rows i..j-1's logits (one chunk exists
    at a time), each chunk draws its own float64 uniforms (or slices the given u (n, k) float64).
    sharpen: a sampling/sharpen.py Sharpen (token temperature, top-p) or None.
    -> tokens (n, k) int64, log-probs (n, k) (under the model's own distribution, sharpened or not)."""
    tok = torch.empty(n, num_samples, dtype=torch.long, device=device)
    lp = torch.empty(n, num_samples, dtype=torch.float32, device=device)
    for i in range(0, n, step):
        j = min(i + step, n)
        uc = uniforms(j - i, num_samples, generator, device) if u is None else u[i:j]
        if sharpen is None:
            tok[i:j], lp[i:j] = _draw_fused(chunk_logits(i, j), uc, V)
        else:
            tok[i:j], lp[i:j] = _draw_sharpened(chunk_logits(i, j), uc, V, sharpen)
    return tok, lp


def sample_categorical(logits: torch.Tensor, num_samples: int = 1, generator=None, *, V: int | None = None,
                       sharpen=None):
    """logits: (N, W) unnormalised log-probs (any float dtype); only the first V columns (default W) are
    classes; sharpen: a sampling/sharpen.py Sharpen or None. -> (N, num_samples) int64 draws."""
    N, W = logits.shape
    return _draw_in_chunks(N, chunk_rows(W), lambda i, j: logits[i:j], V or W, num_samples, generator,
                           logits.device, sharpen=sharpen)[0]


def sample_categorical_reference(logits: torch.Tensor, u: torch.Tensor, V: int | None = None):
    """The plain version: float64 softmax over each whole row and one CDF search per uniform u (N, k)."""
    V = V or logits.shape[1]
    p = torch.softmax(logits[:, :V].double(), -1)
    cdf = p.cumsum(-1)
    tok = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).clamp_(max=V - 1)
    return tok, p.gather(1, tok).log().float()


def sample_rows(post, rows: torch.Tensor, V: int, num_samples: int = 1, generator=None, u=None):
    """Draw num_samples tokens at flat positions `rows` from a posterior (see sampling/denoiser.py), one
    chunk of rows at a time (logits exist for one chunk only). u: pre-drawn float64 uniforms (N, k), else
    drawn from `generator`. A posterior with a `sharpen` (sampling/sharpen.py SharpPosterior) is drawn from
    sharpened; the log-probs are the model's own either way. -> draws (N, k) int64, log-probs (N, k)."""
    return _draw_in_chunks(rows.shape[0], chunk_rows(V), lambda i, j: post.logits(rows[i:j]), V, num_samples,
                           generator, rows.device, u, getattr(post, "sharpen", None))
