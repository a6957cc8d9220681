"""The language family (markov2, markov3, lexicon): exact scorers against brute-force enumeration, exact
entropy rates, samplers against scorers (chi-square), the knob, the corpora and the `true` evaluator."""

import itertools
import math

import numpy as np
import pytest
import torch

from edlm.data.languages import (
    LexiconConfig,
    LexiconLanguage,
    MarkovConfig,
    MarkovLanguage,
    language_from_dict,
    make_language,
)

SMALL = {
    "markov2": lambda: MarkovLanguage(MarkovConfig(order=2, vocab_size=3, successors=(1, 2), eps=0.05,
                                                   target_entropy=0.5, seed=1)),
    "markov3": lambda: MarkovLanguage(MarkovConfig(order=3, vocab_size=3, successors=(1, 2), eps=0.05,
                                                   target_entropy=0.5, seed=2)),
    # 2 letters + space: only 3 of the 27 symbols have probability > 0, so enumerating those is exhaustive
    "lexicon": lambda: LexiconLanguage(LexiconConfig(n_words=5, word_len=(1, 3), letters=2, successors=(1, 3),
                                                     eps=0.05, target_entropy=None, seed=3)),
}


def symbols(lang):
    return [0, 1, 26] if isinstance(lang, LexiconLanguage) else list(range(lang.vocab_size))


def enumerate_all(lang, L):
    """Every sequence of length L over the symbols of positive probability, and its exact p."""
    x = torch.tensor(list(itertools.product(symbols(lang), repeat=L)), dtype=torch.long)
    return x, lang.log_prob(x).exp()


def block_h(p):
    p = p[p > 0]
    return float(-(p * p.log()).sum())


@pytest.fixture(scope="module", params=list(SMALL))
def small(request):
    return request.param, SMALL[request.param]()


def test_probabilities_sum_to_one(small):
    _, lang = small
    for L in (1, 2, 3, 5):
        _, p = enumerate_all(lang, L)
        assert abs(p.sum().item() - 1.0) < 1e-12, L


def test_entropies_match_brute_force(small):
    name, lang = small
    H = {L: block_h(enumerate_all(lang, L)[1]) for L in range(1, 8)}
    assert abs(H[1] - lang.unigram_entropy) < 1e-10
    assert abs(H[2] - H[1] - lang.neighbour_entropy) < 1e-10  # H(x_t | x_{t-1})
    if name.startswith("markov"):
        k = lang.config.order
        for L in range(k + 1, 8):  # exactly the rate once the context is full
            assert abs(H[L] - H[L - 1] - lang.entropy_rate) < 1e-10, L
            assert abs(H[L] / L - lang.block_entropy(L)) < 1e-10
    else:  # an HMM: H(x_L | x_<L) falls towards the rate from above
        gaps = [H[L] - H[L - 1] for L in range(2, 8)]
        assert all(a >= b - 1e-12 for a, b in zip(gaps, gaps[1:], strict=False))
        assert all(g >= lang.entropy_rate - 1e-12 for g in gaps)
        assert gaps[-1] - lang.entropy_rate < 0.05 * gaps[0]
        # the rate itself by a long sample: mean NLL per token of 16-token increments
        x = lang.sample(4000, 48, generator=torch.Generator().manual_seed(0))
        inc = (lang.log_prob(x[:, :32]) - lang.log_prob(x)) / 16
        assert abs(inc.mean().item() - lang.entropy_rate) < 4 * inc.std().item() / 4000**0.5 + 2e-3


def chi2_critical(df, z=3.09):
    """Wilson-Hilferty upper quantile of chi-square (z = 3.09: alpha = 0.001)."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def chi2(counts, expected):
    keep = expected >= 5
    c = np.append(counts[keep], counts[~keep].sum())
    e = np.append(expected[keep], expected[~keep].sum())
    if e[-1] < 5:  # the pooled rest is too small to test: fold it into the largest cell
        c, e = c[:-1], e[:-1]
        c[np.argmax(e)] += counts[~keep].sum()
        e[np.argmax(e)] += expected[~keep].sum()
    return float(((c - e) ** 2 / e).sum()), len(e) - 1


def test_sampler_matches_scorer_chi_square(small):
    """Fixed seed, 30000 draws of length 4; alpha = 0.001 (fails about 1 in 1000 seeds if all is right)."""
    _, lang = small
    L, n = 4, 30000
    x_all, p = enumerate_all(lang, L)
    x = lang.sample(n, L, generator=torch.Generator().manual_seed(0))
    index = {tuple(r): i for i, r in enumerate(x_all.tolist())}
    counts = np.bincount([index[tuple(r)] for r in x.tolist()], minlength=len(x_all)).astype(float)
    stat, df = chi2(counts, p.numpy() * n)
    assert stat < chi2_critical(df), (stat, df)
    # the corpus builder's long chain: windows 8 tokens apart (mixing) follow the same law
    chain = lang.sample_chain(n * (L + 8), seed=[5])
    w = chain.reshape(n, L + 8)[:, :L].astype(np.int64)
    counts = np.bincount([index[tuple(r)] for r in w.tolist()], minlength=len(x_all)).astype(float)
    stat, df = chi2(counts, p.numpy() * n)
    assert stat < chi2_critical(df), ("chain", stat, df)


def test_round_trip_and_bad_ids(small):
    _, lang = small
    back = language_from_dict(lang.to_dict())
    x = lang.sample(8, 12, generator=torch.Generator().manual_seed(1))
    assert torch.equal(lang.log_prob(x), back.log_prob(x))
    with pytest.raises(ValueError):
        lang.log_prob(torch.full((1, 4), lang.mask_id))


def test_knob_sets_what_one_neighbour_reveals():
    """share 0 -> H(x_t|x_{t-1}) near the unigram entropy; share 1 -> far below it; same entropy rate."""
    h = {s: MarkovLanguage(MarkovConfig(order=2, vocab_size=16, share=s)) for s in (0.0, 0.5, 1.0)}
    for lang in h.values():
        assert abs(lang.entropy_rate - 1.0) < 1e-6
    nb = [h[s].neighbour_entropy for s in (0.0, 0.5, 1.0)]
    assert nb[0] > nb[1] > nb[2]
    assert h[0.0].unigram_entropy - nb[0] < 0.5 < h[1.0].unigram_entropy - nb[2]


def test_family_defaults():
    for name, rate in (("markov2", 1.0), ("markov3", 1.0), ("lexicon", 0.5)):
        lang = make_language(name)
        assert abs(lang.entropy_rate - rate) < 1e-6, name
        assert lang.neighbour_entropy > 2 * lang.entropy_rate  # one neighbour tells far less than the past
        x = lang.sample(500, 64, generator=torch.Generator().manual_seed(0))
        nll = -lang.log_prob(x) / 64
        assert abs(nll.mean().item() - lang.block_entropy(64)) < 5 * nll.std().item() / 500**0.5 + 0.01


def test_prepared_corpus_and_true_evaluator(data_root):
    from edlm.data.corpora import info, load_split, prepare
    from edlm.eval.genppl import evaluate_rows

    s = prepare("markov2")
    m = info("markov2")
    assert m["entropy_rate_nats"] == pytest.approx(1.0) and m["knob"]["name"] == "share"
    assert m["neighbour_entropy_nats"] > 3 and "64" in m["block_entropy_nats"] and s["vocab_size"] == 32
    lang = make_language("markov2")
    test = torch.from_numpy(np.asarray(load_split("markov2", "test")[: 64 * 200], dtype=np.int64)).view(200, 64)
    rows = [{"ids": r.tolist(), "corpus": "markov2"} for r in test]
    res = evaluate_rows(rows, "true")
    want = float(-lang.log_prob(test).sum()) / test.numel()
    assert res["gen_nll"] == pytest.approx(want, rel=1e-12)
    assert abs(res["gen_nll"] - m["block_entropy_nats"]["64"]) < 0.05


def test_knob_in_the_corpus_name(data_root):
    """`markov2-share0.7` is markov2 with share 0.7, end to end: the name parses, the corpus builds with the
    knob in its manifest, the `true` evaluator knows it; malformed knob names get the one clear error."""
    from edlm.data.corpora import info, prepare
    from edlm.data.names import is_language, knob
    from edlm.errors import EdlmError

    assert knob("markov2-share0.7") == ("markov2", 0.7) and knob("markov3-share1") == ("markov3", 1.0)
    assert knob("markov2") is None and not is_language("markov2-share1.5") and not is_language("markov4-share0.5")
    lang = make_language("markov2-share0.7")
    base = make_language("markov2")
    assert lang.config.share == 0.7 and lang.config.vocab_size == base.config.vocab_size
    assert lang.neighbour_entropy < base.neighbour_entropy - 1.0  # one neighbour now reveals far more
    prepare("markov2-share0.7")
    m = info("markov2-share0.7")
    assert m["knob"]["value"] == 0.7 and m["neighbour_entropy_nats"] == pytest.approx(lang.neighbour_entropy)
    for bad in ("markov2-share7", "markov2-share", "markov5-share0.5"):
        with pytest.raises(EdlmError, match="markov2-share0.7"):
            prepare(bad)


def test_train_tokens_sets_the_training_split(data_root):
    """`edlm data prepare markov3 --train-tokens N`: the training split has N tokens (valid/test keep theirs, so
    held-out numbers stay comparable), a later prepare without the option reuses that build, another N
    rebuilds, and real-text corpora refuse the option with one error naming it."""
    from edlm.data.corpora import info, load_split, prepare
    from edlm.errors import EdlmError

    prepare("markov3", train_tokens=30_000)
    assert len(load_split("markov3", "train")) == 30_000 and len(load_split("markov3", "valid")) == 100_000
    assert prepare("markov3")["cached"] and info("markov3")["train_tokens"] == 30_000
    s = prepare("markov3", train_tokens=40_000)
    assert not s["cached"] and len(load_split("markov3", "train")) == 40_000
    with pytest.raises(EdlmError, match="train_tokens.*real text"):
        prepare("wiki-char", train_tokens=40_000)
    with pytest.raises(EdlmError, match="at least 10000"):
        prepare("markov3", train_tokens=5)
