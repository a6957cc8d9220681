"""Order-k Markov languages with exact likelihoods (the `markov2` and `markov3` corpora; data/languages.py).

Each k-token context has 2-4 likely successors. The knob ``share`` sets how much ONE neighbour reveals:
each successor of a context is taken with probability ``share`` from a short list that depends on the last
token alone, else uniformly at random (0: H(x_t | x_{t-1}) near the unigram entropy; 1: nearly first-order).

    lang = MarkovLanguage(MarkovConfig(order=2, vocab_size=32))
    lang.log_prob(x), lang.entropy_rate, lang.neighbour_entropy, lang.block_entropy(64)
"""


from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from edlm.data.synthetic import _entropy


def _temper_to(rate_at, target: float) -> float:
    """The temperature at which rate_at(temp) (increasing) equals target: bisection in log-temperature."""
    lo, hi = math.log(0.05), math.log(1e3)
    if rate_at(math.exp(hi)) <= target:
        return math.exp(hi)
    if rate_at(math.exp(lo)) >= target:
        return math.exp(lo)
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if rate_at(math.exp(mid)) < target else (lo, mid)
    return math.exp(0.5 * (lo + hi))


def _draw(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF draws, float64: row i of cdf (N, V) with uniform u[i]."""
    return np.minimum((cdf < u[:, None]).sum(1), cdf.shape[1] - 1)


# ---------------------------------------------------------------------------------------------------
@dataclass
class MarkovConfig:
    order: int = 2
    """k: the next token depends on the previous k tokens"""
    vocab_size: int = 32
    successors: tuple[int, int] = (2, 4)
    """min and max number of likely successors per k-token context"""
    share: float = 0.0
    """the knob: probability that a successor comes from a list fixed by the LAST token alone (0: one
    neighbour reveals little, 1: nearly first-order)"""
    seed: int = 0
    eps: float = 0.01
    """total probability spread uniformly over all tokens in every row (every transition stays possible)"""
    target_entropy: float | None = 1.0
    """entropy rate (nats/token) the successor weights are tempered to; None = no tempering"""

    def __post_init__(self):
        self.successors = tuple(int(s) for s in self.successors)
        lo, hi = self.successors
        if self.order < 1 or not 1 <= lo <= hi <= self.vocab_size:
            raise ValueError("need order >= 1 and 1 <= min successors <= max <= vocab_size")
        if not 0.0 <= self.share <= 1.0 or not 0.0 < self.eps < 1.0:
            raise ValueError("share must be in [0, 1] and eps in (0, 1)")


class MarkovLanguage:
    """Order-k Markov chain: P[c, v] = p(next = v | previous k tokens = context index c), stationary start.

    Context index c = sum_i x_{t-k+i} V^(k-1-i) (the most recent token is the last digit)."""

    kind = "markov"

    def __init__(self, config: MarkovConfig | None = None, temperature: float | None = None):
        self.config = cfg = config or MarkovConfig()
        V, k = cfg.vocab_size, cfg.order
        rng = np.random.default_rng([cfg.seed, 20250612, k])
        lo, hi = cfg.successors
        fav = np.stack([rng.choice(V, size=hi, replace=False) for _ in range(V)])  # (V, hi) per last token
        n_ctx = V**k
        self._succ, self._logits = [], []
        for c in range(n_ctx):
            m = int(rng.integers(lo, hi + 1))
            from_last = rng.random(m) < cfg.share
            own = rng.choice(V, size=m, replace=False)
            mine = rng.permutation(fav[c % V])[:m]
            s = np.where(from_last, mine, own)
            s = np.unique(s)  # a clash of the two lists leaves fewer successors: harmless
            self._succ.append(s)
            self._logits.append(rng.normal(size=len(s)))
        if temperature is None:
            temperature = 1.0 if cfg.target_entropy is None else _temper_to(
                lambda tt: self._rate(self._table(tt)), cfg.target_entropy)
        self.temperature = float(temperature)
        self.P_np = self._table(self.temperature)  # (V^k, V)
        self.pi_k = self._stationary(self.P_np)  # (V^k,) distribution of k consecutive tokens
        self._dev: dict = {}

    # ---- construction ------------------------------------------------------------------------------
    def _table(self, temp: float) -> np.ndarray:
        V, eps = self.config.vocab_size, self.config.eps
        P = np.full((len(self._succ), V), eps / V)
        for c, (s, lg) in enumerate(zip(self._succ, self._logits, strict=True)):
            w = np.exp(lg / temp - (lg / temp).max())
            P[c, s] += (1 - eps) * w / w.sum()
        return P

    def _stationary(self, P: np.ndarray) -> np.ndarray:
        """Stationary distribution of the k-gram chain, by power iteration (every row is positive)."""
        V, k = self.config.vocab_size, self.config.order
        pi = np.full(V**k, 1.0 / V**k)
        for _ in range(10_000):
            # (a, rest) -> (rest, v): mass pi[a, rest] P[(a, rest), v], summed over a
            new = (pi[:, None] * P).reshape(V, V ** (k - 1) * V).sum(0)
            if np.abs(new - pi).max() < 1e-15:
                pi = new
                break
            pi = new
        return pi / pi.sum()

    def _rate(self, P: np.ndarray) -> float:
        return float(self._stationary(P) @ _entropy(P))

    # ---- exact quantities ----------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def mask_id(self) -> int:
        return self.config.vocab_size

    @property
    def entropy_rate(self) -> float:
        return float(self.pi_k @ _entropy(self.P_np))

    @property
    def unigram(self) -> np.ndarray:
        V = self.config.vocab_size
        return self.pi_k.reshape(-1, V).sum(0)

    @property
    def unigram_entropy(self) -> float:
        return float(_entropy(self.unigram))

    @property
    def neighbour_entropy(self) -> float:
        """H(x_t | x_{t-1}): what ONE neighbour tells (from the exact stationary pair distribution)."""
        V = self.config.vocab_size
        pair = (self.pi_k[:, None] * self.P_np).reshape(-1, V, V).sum(0)  # (last, next)
        return float(_entropy(pair.reshape(-1)) - _entropy(pair.sum(1)))

    def block_entropy(self, L: int) -> float:
        """Exact per-token entropy of a length-L block: (H(first k) + (L - k) rate) / L."""
        k, V = self.config.order, self.config.vocab_size
        if L <= k:
            return float(_entropy(self.pi_k.reshape(V**L, -1).sum(1))) / L
        return (float(_entropy(self.pi_k)) + (L - k) * self.entropy_rate) / L

    def _tensors(self, device):
        device = torch.device(device)
        if device not in self._dev:
            self._dev[device] = (torch.tensor(self.P_np, dtype=torch.float64, device=device).log(),
                                 torch.tensor(self.pi_k, dtype=torch.float64, device=device).log())
        return self._dev[device]

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, L) or (L,) int -> (B,) float64 exact log p(x) (stationary start)."""
        x = x.long().reshape(-1, x.shape[-1])
        _check(x, self.vocab_size)
        V, k = self.config.vocab_size, self.config.order
        B, L = x.shape
        if L < k:  # the marginal of the first L tokens
            lp = torch.tensor(np.log(self.pi_k.reshape(V**L, -1).sum(1)), device=x.device)
            return lp[_ctx(x, V)]
        logP, logpi = self._tensors(x.device)
        lp = logpi[_ctx(x[:, :k], V)]
        if L > k:
            ctx = _ctx(x.unfold(1, k, 1)[:, :-1], V)  # (B, L-k) contexts of positions k..L-1
            lp = lp + logP[ctx, x[:, k:]].sum(1)
        return lp

    def sample(self, n: int, length: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, length) int64 exact samples (stationary start), float64 inverse-CDF draws."""
        V, k = self.config.vocab_size, self.config.order
        u = torch.rand(n, length, dtype=torch.float64, generator=generator).numpy()
        first = _draw(np.broadcast_to(np.cumsum(self.pi_k), (n, V**k)), u[:, 0])
        digits = [(first // V ** (k - 1 - i)) % V for i in range(k)]
        out = np.zeros((n, max(length, k)), dtype=np.int64)
        out[:, :k] = np.stack(digits, 1)
        cdf = np.cumsum(self.P_np, 1)
        for t in range(k, length):
            c = _ctx_np(out[:, t - k:t], V)
            out[:, t] = _draw(cdf[c], u[:, t])
        return torch.from_numpy(out[:, :length])

    def sample_chain(self, length: int, seed) -> np.ndarray:
        """One long stationary chain as uint16 numpy (the corpus builder)."""
        rng = np.random.default_rng(seed)
        V, k = self.config.vocab_size, self.config.order
        u = rng.random(length)
        cdf = np.cumsum(self.P_np, 1)
        cdf[:, -1] = 1.0
        rows = [r.tolist() for r in cdf]
        from bisect import bisect_right

        first = int(np.searchsorted(np.cumsum(self.pi_k), u[0], side="right"))
        first = min(first, V**k - 1)
        out = [(first // V ** (k - 1 - i)) % V for i in range(k)] + [0] * (length - k)
        c, mod = first, V ** (k - 1)
        us = u.tolist()
        for t in range(k, length):
            v = min(bisect_right(rows[c], us[t]), V - 1)
            out[t] = v
            c = (c % mod) * V + v
        return np.asarray(out[:length], dtype=np.uint16)

    # ---- persistence ----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        cfg = asdict(self.config)
        cfg["successors"] = list(cfg["successors"])
        return {"kind": f"markov{self.config.order}", "config": cfg, "temperature": self.temperature,
                **self.summary()}

    def summary(self) -> dict:
        return {"entropy_rate_nats": self.entropy_rate, "unigram_entropy_nats": self.unigram_entropy,
                "neighbour_entropy_nats": self.neighbour_entropy,
                "knob": {"name": "share", "value": self.config.share,
                         "meaning": "probability that a successor of a context is fixed by its last token "
                                    "alone; neighbour_entropy_nats = H(x_t | x_{t-1}) is what it buys"}}

    @classmethod
    def from_dict(cls, d: dict) -> MarkovLanguage:
        return cls(MarkovConfig(**d["config"]), temperature=d.get("temperature"))


def _ctx(x: torch.Tensor, V: int) -> torch.Tensor:
    """(..., k) tokens -> (...) context index (most recent token last)."""
    w = V ** torch.arange(x.shape[-1] - 1, -1, -1, device=x.device)
    return (x * w).sum(-1)


def _ctx_np(x: np.ndarray, V: int) -> np.ndarray:
    w = V ** np.arange(x.shape[-1] - 1, -1, -1)
    return (x * w).sum(-1)


def _check(x: torch.Tensor, V: int) -> None:
    if x.numel() and (int(x.min()) < 0 or int(x.max()) >= V):
        raise ValueError(f"token ids must be in [0, {V}); got range [{int(x.min())}, {int(x.max())}] "
                         "(MASK ids are not tokens of the language)")


