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

from dataclasses import replace

from edlm.data.lexicon import LexiconConfig, LexiconLanguage
from edlm.data.markov import MarkovConfig, MarkovLanguage
from edlm.data.names import knob

__all__ = ["FAMILY", "LexiconConfig", "LexiconLanguage", "MarkovConfig", "MarkovLanguage", "language_from_dict",
           "load_language", "make_language"]

# ---------------------------------------------------------------------------------------------------
# The prepared corpora of the family: name -> the language's config (seed 0).
MARKOV = {"markov2": MarkovConfig(order=2, vocab_size=32), "markov3": MarkovConfig(order=3, vocab_size=16)}
"""the Markov members' configs; a knob name (markov2-share0.7) is one of them with its share replaced"""
FAMILY = {
    "markov2": lambda: MarkovLanguage(MARKOV["markov2"]),
    "markov3": lambda: MarkovLanguage(MARKOV["markov3"]),
    "lexicon": lambda: LexiconLanguage(LexiconConfig()),
}


def make_language(name: str):
    """A language of the family by corpus name (markov2, markov3, lexicon, or markov2-share0.7: the knob
    in the name, data/names.py)."""
    k = knob(name)
    if k is None:
        return FAMILY[name]()
    base, share = k
    return MarkovLanguage(replace(MARKOV[base], share=share))


def load_language(corpus: str = "synthetic", root=None):
    """The exact language of a prepared ground-truth corpus (synthetic, markov2, markov3, lexicon)."""
    from edlm.data.manifest import manifest

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
