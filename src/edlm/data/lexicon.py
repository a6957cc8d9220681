"""A "lexicon" language with exact likelihoods (the `lexicon` corpus; data/languages.py): words of a fixed
lexicon spelled in characters, the word sequence a sparse first-order Markov chain, so a hidden state (the
word) lasts several tokens. The knob ``letters`` (alphabet size of the spelling) sets how much one
neighbouring letter reveals about the word.

    lang = LexiconLanguage(LexiconConfig())
    lang.log_prob(x)            # forward algorithm over (word, position) states
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from edlm.data.markov import _check, _draw, _temper_to
from edlm.data.synthetic import _entropy, _stationary


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
        self.piw = _stationary(self.Pw)
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
        piw = _stationary(Pw)
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


