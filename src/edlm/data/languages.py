"""A family of ground-truth languages with exact likelihoods, beside `synthetic` (data/synthetic.py).

    markov2, markov3   order-k Markov chains over symbols: each k-token context has 2-4 likely successors.
                       The knob ``share`` sets how much ONE neighbour reveals: each successor of a context
                       is taken with probability ``share`` from a short list that depends on the last
                       token alone, else uniformly at random. share = 0: the last token alone tells little
                       (H(x_t | x_{t-1}) near the unigram entropy), share = 1: nearly first-order.
    lexicon            "words" from a fixed lexicon (a-z spelled, a space after each), the word sequence a
                       sparse first-order Markov chain: a hidden state (the word) lasts several tokens.
                       The knob ``letters`` (alphabet size of the spelling) sets how much one neighbouring
                       letter reveals about the word.

Every language has ``log_prob(x)`` (exact, float64, stationary start so any window of a long chain is an
exact sample), ``sample``, ``sample_chain`` (the corpus builder), ``entropy_rate`` (exact),
``unigram_entropy``, ``neighbour_entropy`` = H(x_t | x_{t-1}) (exact) and ``block_entropy(L)`` (exact for
the Markov chains; a fixed-seed Monte-Carlo estimate, flagged as such, for the lexicon).

    lang = make_language("markov2")
    x = lang.sample(8, 64, generator=torch.Generator().manual_seed(0))
    -lang.log_prob(x).mean() / 64        # ~ lang.block_entropy(64)
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


# ---------------------------------------------------------------------------------------------------
@dataclass
class LexiconConfig:
    n_words: int = 64
    word_len: tuple[int, int] = (2, 5)
    """min and max letters per word (each word is followed by a space)"""
    letters: int = 8
    """the knob: words are spelled with the first `letters` of a-z; fewer letters make one neighbouring
    letter say less about the word it belongs to"""
    successors: tuple[int, int] = (6, 16)
    """min and max likely next words per word"""
    seed: int = 0
    eps: float = 0.01
    """probability spread uniformly over all next words (every word can follow every word)"""
    target_entropy: float | None = 0.5
    """entropy rate per CHARACTER (nats) the word transitions are tempered to; None = no tempering"""

    def __post_init__(self):
        self.word_len, self.successors = tuple(map(int, self.word_len)), tuple(map(int, self.successors))
        lo, hi = self.word_len
        if not 1 <= lo <= hi or not 2 <= self.letters <= 26:
            raise ValueError("need 1 <= min word length <= max, and 2 <= letters <= 26")
        if self.n_words > sum(self.letters**n for n in range(lo, hi + 1)):
            raise ValueError(f"{self.n_words} distinct words do not fit in {self.letters} letters of length {lo}-{hi}")


class LexiconLanguage:
    """Characters (a-z = 0..25, space = 26; the `char` tokenizer) spelling a Markov chain of words.

    As an HMM: hidden state (word w, position j), j = len(w) being the space; it emits a fixed character
    and moves to (w, j + 1), or after the space to (w', 0) with the word chain's P[w, w']. log p(x) is the
    forward algorithm over these states (a window may start inside a word). Spaces delimit words and
    words are distinct, so characters determine words: entropy rate = word entropy rate / mean word
    length (space included), exactly."""

    kind = "lexicon"
    SPACE = 26

    def __init__(self, config: LexiconConfig | None = None, temperature: float | None = None):
        self.config = cfg = config or LexiconConfig()
        rng = np.random.default_rng([cfg.seed, 20250612, 99])
        words: list[tuple[int, ...]] = []
        seen = set()
        while len(words) < cfg.n_words:
            w = tuple(int(c) for c in rng.integers(0, cfg.letters, int(rng.integers(cfg.word_len[0],
                                                                                     cfg.word_len[1] + 1))))
            if w not in seen:
                seen.add(w)
                words.append(w)
        self.words = words
        W = cfg.n_words
        lo, hi = cfg.successors
        self._succ = [rng.choice(W, size=int(rng.integers(lo, min(hi, W) + 1)), replace=False) for _ in range(W)]
        self._logits = [rng.normal(size=len(s)) for s in self._succ]
        self._len = np.array([len(w) + 1 for w in words], dtype=np.float64)  # with the space
        if temperature is None:
            temperature = 1.0 if cfg.target_entropy is None else _temper_to(
                lambda tt: self._rate(self._word_chain(tt)), cfg.target_entropy)
        self.temperature = float(temperature)
        self.Pw = self._word_chain(self.temperature)
        self.piw = _stationary_dense(self.Pw)
        # hidden states (w, j): emission, next-state structure and stationary start
        self.start = np.cumsum([0] + [len(w) + 1 for w in words])[:-1]  # index of (w, 0)
        S = int(self._len.sum())
        self.emit = np.array([c for w in words for c in (*w, self.SPACE)], dtype=np.int64)
        T = np.zeros((S, S))
        for wi, w in enumerate(words):
            s0 = self.start[wi]
            for j in range(len(w)):
                T[s0 + j, s0 + j + 1] = 1.0
            T[s0 + len(w), self.start] = self.Pw[wi]
        self.T = T
        self.piS = np.repeat(self.piw, self._len.astype(int)) / float(self.piw @ self._len)
        self._dev: dict = {}
        self._block: dict[int, float] = {}

    def _word_chain(self, temp: float) -> np.ndarray:
        W, eps = self.config.n_words, self.config.eps
        P = np.full((W, W), eps / W)
        for i, (s, lg) in enumerate(zip(self._succ, self._logits, strict=True)):
            w = np.exp(lg / temp - (lg / temp).max())
            P[i, s] += (1 - eps) * w / w.sum()
        return P

    def _rate(self, Pw: np.ndarray) -> float:
        piw = _stationary_dense(Pw)
        return float(piw @ _entropy(Pw)) / float(piw @ self._len)

    @property
    def vocab_size(self) -> int:
        return 27

    @property
    def mask_id(self) -> int:
        return 27

    @property
    def entropy_rate(self) -> float:
        return self._rate(self.Pw)

    @property
    def unigram(self) -> np.ndarray:
        return np.bincount(self.emit, weights=self.piS, minlength=27)

    @property
    def unigram_entropy(self) -> float:
        return float(_entropy(self.unigram))

    @property
    def neighbour_entropy(self) -> float:
        """H(x_t | x_{t-1}) from the exact stationary pair distribution of characters."""
        flow = self.piS[:, None] * self.T  # (S, S) joint of consecutive states
        pair = np.zeros((27, 27))
        np.add.at(pair, (self.emit[:, None].repeat(len(self.emit), 1), self.emit[None, :].repeat(len(self.emit), 0)),
                  flow)
        return float(_entropy(pair.reshape(-1)) - _entropy(pair.sum(1)))

    def block_entropy(self, L: int, n: int = 4000) -> float:
        """Per-token entropy of a length-L block: a Monte-Carlo ESTIMATE (n exact samples, fixed seed; the
        standard error is ~0.005 nats at L = 64). No closed form exists for an HMM's block entropy."""
        if L not in self._block:
            x = self.sample(n, L, generator=torch.Generator().manual_seed(12345))
            self._block[L] = float(-self.log_prob(x).mean()) / L
        return self._block[L]

    def _tensors(self, device):
        device = torch.device(device)
        if device not in self._dev:
            self._dev[device] = tuple(torch.tensor(a, dtype=torch.float64, device=device)
                                      for a in (self.T, self.piS))
        return self._dev[device]

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, L) or (L,) int -> (B,) float64 exact log p(x) (forward algorithm, stationary start)."""
        x = x.long().reshape(-1, x.shape[-1])
        _check(x, 27)
        T, piS = self._tensors(x.device)
        emit = torch.as_tensor(self.emit, device=x.device)
        B, L = x.shape
        logz = torch.zeros(B, dtype=torch.float64, device=x.device)
        alpha = None
        for t in range(L):
            match = (emit[None, :] == x[:, t:t + 1]).to(torch.float64)  # (B, S)
            alpha = (piS[None] if alpha is None else alpha @ T) * match
            s = alpha.sum(-1)
            logz = logz + s.log()
            alpha = alpha / s.clamp_min(1e-300)[:, None]
        return logz

    def sample(self, n: int, length: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, length) int64 exact samples: hidden states from the stationary start, float64 draws."""
        u = torch.rand(n, length, dtype=torch.float64, generator=generator).numpy()
        s = _draw(np.broadcast_to(np.cumsum(self.piS), (n, len(self.piS))), u[:, 0])
        cdf = np.cumsum(self.T, 1)
        out = np.zeros((n, length), dtype=np.int64)
        out[:, 0] = self.emit[s]
        for t in range(1, length):
            s = _draw(cdf[s], u[:, t])
            out[:, t] = self.emit[s]
        return torch.from_numpy(out)

    def sample_chain(self, length: int, seed) -> np.ndarray:
        """One long stationary chain as uint16 numpy (the corpus builder): words spelled out."""
        rng = np.random.default_rng(seed)
        s = int(min(np.searchsorted(np.cumsum(self.piS), rng.random(), side="right"), len(self.piS) - 1))
        w = int(np.searchsorted(self.start, s, side="right") - 1)
        out = list(self.words[w][s - self.start[w]:]) + [self.SPACE]
        cdf = np.cumsum(self.Pw, 1)
        u = rng.random(length // 2 + 8)
        i = 0
        while len(out) < length:
            if i == len(u):
                u, i = rng.random(length // 2 + 8), 0
            w = int(min(np.searchsorted(cdf[w], u[i], side="right"), len(self.words) - 1))
            i += 1
            out.extend(self.words[w])
            out.append(self.SPACE)
        return np.asarray(out[:length], dtype=np.uint16)

    def to_dict(self) -> dict:
        cfg = asdict(self.config)
        cfg["word_len"], cfg["successors"] = list(cfg["word_len"]), list(cfg["successors"])
        return {"kind": "lexicon", "config": cfg, "temperature": self.temperature,
                "words": ["".join(chr(97 + c) for c in w) for w in self.words], **self.summary()}

    def summary(self) -> dict:
        return {"entropy_rate_nats": self.entropy_rate, "unigram_entropy_nats": self.unigram_entropy,
                "neighbour_entropy_nats": self.neighbour_entropy,
                "mean_word_length": float(self.piw @ self._len) - 1,
                "knob": {"name": "letters", "value": self.config.letters,
                         "meaning": "words are spelled with this many letters; fewer make one neighbouring "
                                    "letter say less; neighbour_entropy_nats = H(x_t | x_{t-1})"}}

    @classmethod
    def from_dict(cls, d: dict) -> LexiconLanguage:
        return cls(LexiconConfig(**d["config"]), temperature=d.get("temperature"))


def _stationary_dense(P: np.ndarray) -> np.ndarray:
    from edlm.data.synthetic import _stationary

    return _stationary(P)


# ---------------------------------------------------------------------------------------------------
# The prepared corpora of the family: name -> the language's config (seed 0).
FAMILY = {
    "markov2": lambda: MarkovLanguage(MarkovConfig(order=2, vocab_size=32)),
    "markov3": lambda: MarkovLanguage(MarkovConfig(order=3, vocab_size=16)),
    "lexicon": lambda: LexiconLanguage(LexiconConfig()),
}


def make_language(name: str):
    """A language of the family by corpus name (markov2, markov3, lexicon)."""
    return FAMILY[name]()


def load_language(corpus: str = "synthetic", root=None):
    """The exact language of a prepared ground-truth corpus (synthetic, markov2, markov3, lexicon)."""
    from edlm.data.corpora import manifest

    return language_from_dict(manifest(corpus, root=root)["language"])


def language_from_dict(d: dict):
    """The language stored in a manifest: `synthetic` (no "kind") or one of the family."""
    kind = d.get("kind", "synthetic")
    if kind == "synthetic":
        from edlm.data.synthetic import SyntheticLanguage

        return SyntheticLanguage.from_dict(d)
    if kind.startswith("markov"):
        return MarkovLanguage.from_dict(d)
    if kind == "lexicon":
        return LexiconLanguage.from_dict(d)
    raise ValueError(f"unknown language kind {kind!r}")
