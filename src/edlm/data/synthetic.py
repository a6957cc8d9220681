"""A ground-truth language with exact likelihoods: a seeded sparse random first-order Markov chain.

Each token has 2-4 likely successors holding almost all the mass (an ``eps`` floor spread uniformly
keeps every transition possible, so every token is reachable, the chain is ergodic and log p is always
finite). Sequences start from the stationary distribution ``pi``, so any window cut from a long chain is
an exact sample. The successor weights are tempered so the entropy rate hits ``target_entropy``
(default 1.0 nat/token), far below the unigram entropy H(pi) (~3.4 nats for 32 tokens): drawing
positions independently (as a one-step diffusion sampler does) gives a visibly worse log p.

    lang = SyntheticLanguage(SyntheticConfig())
    x = lang.sample(8, 128, generator=torch.Generator().manual_seed(0))   # (8, 128) int64
    lang.log_prob(x) / 128         # ~ -lang.block_entropy(128)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch


@dataclass
class SyntheticConfig:
    vocab_size: int = 32
    """number of real tokens (MASK is vocab_size)"""
    successors: tuple[int, int] = (2, 4)
    """min and max number of likely successors per token"""
    seed: int = 0
    """seed of the transition matrix (data splits use their own seeds)"""
    eps: float = 0.01
    """total probability spread uniformly over all tokens in every row (keeps every transition possible)"""
    target_entropy: float | None = 1.0
    """entropy rate to calibrate to (nats/token) by tempering successor weights; None = no tempering"""

    def __post_init__(self):
        self.successors = tuple(int(s) for s in self.successors)
        lo, hi = self.successors
        if not (1 <= lo <= hi <= self.vocab_size):
            raise ValueError(f"successors {self.successors} must satisfy 1 <= min <= max <= vocab_size")
        if not (0.0 < self.eps < 1.0):
            raise ValueError("eps must be in (0, 1) so that every token stays reachable")


def _entropy(p: np.ndarray) -> np.ndarray:
    """Row-wise Shannon entropy in nats (0 log 0 = 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log(p), 0.0).sum(-1)


def _stationary(P: np.ndarray) -> np.ndarray:
    """pi with pi P = pi (unique: every entry of P is positive)."""
    V = P.shape[0]
    A = np.vstack([P.T - np.eye(V), np.ones((1, V))])
    b = np.zeros(V + 1)
    b[-1] = 1.0
    pi = np.linalg.lstsq(A, b, rcond=None)[0]
    pi = np.clip(pi, 0, None)
    return pi / pi.sum()


def build_transition_matrix(cfg: SyntheticConfig) -> np.ndarray:
    rng = np.random.default_rng([cfg.seed, 20241028])
    V = cfg.vocab_size
    lo, hi = cfg.successors
    succ, logits = [], []
    for _ in range(V):
        k = int(rng.integers(lo, hi + 1))
        succ.append(rng.choice(V, size=k, replace=False))
        logits.append(rng.normal(size=k))

    def matrix(temp: float) -> np.ndarray:
        P = np.full((V, V), cfg.eps / V)
        for i in range(V):
            w = np.exp(logits[i] / temp - (logits[i] / temp).max())
            P[i, succ[i]] += (1 - cfg.eps) * w / w.sum()
        return P

    def rate(temp: float) -> float:
        P = matrix(temp)
        return float(_stationary(P) @ _entropy(P))

    if cfg.target_entropy is None:
        return matrix(1.0)
    # entropy rate grows with the temperature; bisect in log-temperature
    lo_t, hi_t = math.log(0.05), math.log(1e3)
    if rate(math.exp(hi_t)) <= cfg.target_entropy:
        return matrix(math.exp(hi_t))
    if rate(math.exp(lo_t)) >= cfg.target_entropy:
        return matrix(math.exp(lo_t))
    for _ in range(60):
        mid = 0.5 * (lo_t + hi_t)
        if rate(math.exp(mid)) < cfg.target_entropy:
            lo_t = mid
        else:
            hi_t = mid
    return matrix(math.exp(0.5 * (lo_t + hi_t)))


class SyntheticLanguage:
    """Exact log p(x) of token sequences under a stationary first-order Markov chain (float64 math)."""

    def __init__(self, config: SyntheticConfig | None = None, transition: np.ndarray | None = None):
        self.config = config or SyntheticConfig()
        P = build_transition_matrix(self.config) if transition is None else np.asarray(transition, np.float64)
        V = self.config.vocab_size
        if P.shape != (V, V) or (P <= 0).any() or not np.allclose(P.sum(1), 1.0, atol=1e-9):
            raise ValueError("transition matrix must be (V, V), strictly positive, rows summing to 1")
        self.P_np = P
        self.pi_np = _stationary(self.P_np)
        self._dev: dict[torch.device, tuple[torch.Tensor, ...]] = {}

    # ---- tensors on the device of the input -------------------------------------------------
    def _tensors(self, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        device = torch.device(device)
        if device not in self._dev:
            P = torch.tensor(self.P_np, dtype=torch.float64, device=device)
            pi = torch.tensor(self.pi_np, dtype=torch.float64, device=device)
            self._dev[device] = (P, pi, P.log(), pi.log())
        return self._dev[device]

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def mask_id(self) -> int:
        return self.config.vocab_size

    @property
    def transition(self) -> torch.Tensor:
        """(V, V) float64: P[i, j] = p(next = j | current = i)."""
        return self._tensors("cpu")[0]

    @property
    def stationary(self) -> torch.Tensor:
        """(V,) float64 start (and marginal) distribution."""
        return self._tensors("cpu")[1]

    # ---- exact quantities --------------------------------------------------------------------
    @property
    def entropy_rate(self) -> float:
        """sum_i pi_i H(P_i), nats/token."""
        return float(self.pi_np @ _entropy(self.P_np))

    @property
    def unigram_entropy(self) -> float:
        """H(pi): the per-token entropy if positions were independent draws from the marginal."""
        return float(_entropy(self.pi_np))

    def block_entropy(self, L: int) -> float:
        """Exact per-token entropy of a length-L block: (H(pi) + (L-1) * rate) / L."""
        return (self.unigram_entropy + (L - 1) * self.entropy_rate) / L

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, L) or (L,) int -> (B,) float64 exact log p(x) (stationary start)."""
        x = x.long().reshape(-1, x.shape[-1])
        self._check(x)
        _, _, logP, logpi = self._tensors(x.device)
        lp = logpi[x[:, 0]]
        if x.shape[1] > 1:
            lp = lp + logP[x[:, :-1], x[:, 1:]].sum(1)
        return lp

    def marginal_log_prob(self, x: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        """log p(x restricted to observed positions), every other position summed out (forward algorithm).

        x: (B, L) int (values at unobserved positions are ignored); observed: (B, L) bool -> (B,) float64.
        """
        x = x.long().reshape(-1, x.shape[-1])
        observed = observed.reshape(x.shape).to(x.device, torch.bool)
        P, pi, _, _ = self._tensors(x.device)
        B, L = x.shape
        xs = torch.where(observed, x, torch.zeros_like(x))
        self._check(xs)
        onehot = torch.nn.functional.one_hot(xs, self.vocab_size).to(torch.float64)  # (B, L, V)
        emit = torch.where(observed.unsqueeze(-1), onehot, torch.ones_like(onehot))
        alpha = pi.unsqueeze(0) * emit[:, 0]  # (B, V)
        logz = torch.zeros(B, dtype=torch.float64, device=x.device)
        for t in range(L):
            if t > 0:
                alpha = (alpha @ P) * emit[:, t]
            s = alpha.sum(-1)
            logz = logz + s.log()
            alpha = alpha / s.unsqueeze(-1)
        return logz

    def conditional_log_prob(
        self, x0: torch.Tensor, x_t: torch.Tensor, mask_id: int | None = None
    ) -> torch.Tensor:
        """log p(x0 | x_t) for x0 consistent with x_t (x_t = x0 with some positions set to mask_id)."""
        mask_id = self.mask_id if mask_id is None else mask_id
        return self.log_prob(x0) - self.marginal_log_prob(x0, x_t.reshape(x0.shape) != mask_id)

    def sample(self, n: int, length: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, length) int64 exact samples on the CPU (stationary start)."""
        P, pi, _, _ = self._tensors("cpu")
        cdf = P.cumsum(1)
        cdf[:, -1] = 1.0
        out = torch.empty(n, length, dtype=torch.long)
        out[:, 0] = torch.multinomial(pi.expand(n, -1), 1, replacement=True, generator=generator).squeeze(1)
        u = torch.rand(length, n, 1, dtype=torch.float64, generator=generator)
        for t in range(1, length):
            rows = cdf[out[:, t - 1]]  # (n, V)
            out[:, t] = torch.searchsorted(rows, u[t], right=True).squeeze(1).clamp_max(self.vocab_size - 1)
        return out

    def sample_chain(self, length: int, seed: int | list[int]) -> np.ndarray:
        """One long stationary chain of ``length`` tokens as uint16/uint32 numpy (the corpus builder)."""
        rng = np.random.default_rng(seed)
        V = self.vocab_size
        cdf = np.cumsum(self.P_np, 1)
        cdf[:, -1] = 1.0
        u = rng.random(length)
        x0 = int(np.searchsorted(np.cumsum(self.pi_np), u[0], side="right"))
        # the chain is sequential; bisect over Python lists is the fastest plain-Python step
        from bisect import bisect_right

        rows = [r.tolist() for r in cdf]
        us = u.tolist()
        out = [min(x0, V - 1)] * length
        cur = out[0]
        for t in range(1, length):
            cur = bisect_right(rows[cur], us[t])
            if cur >= V:
                cur = V - 1
            out[t] = cur
        return np.asarray(out, dtype=np.uint16 if V < 65535 else np.uint32)

    def _check(self, x: torch.Tensor) -> None:
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= self.vocab_size):
            raise ValueError(
                f"token ids must be in [0, {self.vocab_size}); got range "
                f"[{int(x.min())}, {int(x.max())}] (MASK ids are not tokens of the language)"
            )

    # ---- persistence -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        cfg = asdict(self.config)
        cfg["successors"] = list(cfg["successors"])
        return {
            "config": cfg,
            "transition": self.P_np.tolist(),
            "entropy_rate_nats": self.entropy_rate,
            "unigram_entropy_nats": self.unigram_entropy,
        }

    @classmethod
    def from_dict(cls, d: dict) -> SyntheticLanguage:
        cfg = SyntheticConfig(**d["config"])
        return cls(
            cfg, transition=np.asarray(d["transition"], dtype=np.float64) if "transition" in d else None
        )


def load_language(root=None) -> SyntheticLanguage:
    """The SyntheticLanguage of the prepared `synthetic` corpus (run `edlm data prepare synthetic` first)."""
    from edlm.data.manifest import manifest

    return SyntheticLanguage.from_dict(manifest("synthetic", root=root)["language"])
