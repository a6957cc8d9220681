"""Dedup (exact after normalising, and near: mostly-seen passages) and the enlarged corpora's builders on fake
sources: duplicates dropped and counted per source, each document in exactly one split, per-source token counts,
and the *-small corpora built without dedup (no network)."""

import json

import numpy as np
import pytest

from edlm.data import builders
from edlm.data import sources as S
from edlm.data.corpora import load_split, prepare
from edlm.data.dedup import Deduper, doc_key, shingles
from edlm.data.tokenizers import char_tokenizer


def _words(rng, n: int) -> str:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    return " ".join("".join(rng.choice(letters, size=rng.integers(3, 9))) for _ in range(n))


def test_exact_duplicates_after_normalising():
    assert doc_key("The Cat, sat  on\nthe MAT!") == doc_key("the cat sat on the mat")
    assert doc_key("It cost 5 pounds.") == doc_key("it cost five pounds")
    assert doc_key("the cat sat") != doc_key("the cat sat down")
    d = Deduper()
    kept, dropped, chars = d.keep(["One text.", "Another text.", "ONE  text"])
    assert kept == ["One text.", "Another text."] and (dropped, chars, d.near) == (1, 9, 0)
    kept, dropped, _ = d.keep(["another -- text", "A third."])  # across calls (sources) too
    assert kept == ["A third."] and dropped == 1


def test_near_duplicates_mostly_seen_passages():
    rng = np.random.default_rng(0)
    a, b, c = _words(rng, 400), _words(rng, 400), _words(rng, 400)
    assert len(shingles(a)) >= 20
    d = Deduper()
    assert d.keep([a, b])[0] == [a, b]
    collection = "Header of another edition. " + a.upper() + "\n\n" + b  # both works again, in one file
    half = a[: len(a) // 3] + " " + c  # a third of it seen: a different text that quotes
    kept, dropped, _ = d.keep([collection, half])
    assert kept == [half] and dropped == 1 and d.near == 1
    short = " ".join(a.split()[:30])  # too few passages to judge: only the exact check applies
    assert d.keep([short])[0] == [short]
    e = _words(rng, 300)
    assert d.keep([e])[0] == [e]
    holder = _words(rng, 900) + " " + e  # holds all of an earlier document, which is a quarter of it
    assert d.keep([holder])[1] == 1 and d.near == 2


def _fake_sources(monkeypatch, docs_by_source: dict[str, list[str]]):
    """Replace the loaders by in-memory documents (text8 format on request)."""
    from edlm.data.wikifil import text8_normalize

    for name, docs in docs_by_source.items():
        def load(root=None, text8=False, legacy=False, _docs=docs, _name=name):
            out = [text8_normalize(d, legacy) if text8 else d for d in _docs]
            return out, {"registry": "test", "name": _name, "version": "0", "license": "test",
                         "documents": len(out), "chars": sum(map(len, out))}  # fmt: skip

        monkeypatch.setitem(S.LOADERS, name, load)


@pytest.fixture
def fake_corpus(monkeypatch, data_root):
    rng = np.random.default_rng(1)
    first = [_words(rng, int(rng.integers(200, 400))) for _ in range(40)]
    second = [_words(rng, int(rng.integers(200, 400))) for _ in range(40)]
    second += [first[3].upper() + "!", first[5] + " " + first[6]]  # an exact and a near duplicate
    _fake_sources(monkeypatch, {"one": first, "two": second})
    monkeypatch.setattr(builders, "WIKI_CHAR_SOURCES", ("one", "two"))
    monkeypatch.setattr(builders, "PROSE_BPE_SOURCES", ("one", "two"))
    monkeypatch.setattr(builders, "SMALL_PROSE_BPE_SOURCES", ("one", "two"))
    monkeypatch.setattr(builders, "SMALL_WIKI_CHAR_SOURCES", ("one", "two"))
    monkeypatch.setattr(builders, "SMALL_WIKI_CHAR_EXTRAS", ())
    return first + second[:40]


def test_wiki_char_dedups_and_splits_by_document(fake_corpus, data_root):
    s = prepare("wiki-char")
    m = json.loads((data_root / "wiki-char" / "manifest.json").read_text())
    two = m["sources"][1]
    assert (two["duplicates_dropped"], two["near_duplicates_dropped"], two["documents"]) == (2, 1, 40)
    assert m["sources"][0]["duplicates_dropped"] == 0 and "dedup" in m
    assert s["documents"] == 80
    tok = char_tokenizer()
    text = {sp: tok.decode(load_split("wiki-char", sp)) for sp in ("train", "valid", "test")}
    for doc in fake_corpus:  # every kept document sits whole in exactly one split
        assert sum(doc in t for t in text.values()) == 1
    assert all(m["splits"][sp]["documents"] > 0 for sp in text)
    small = prepare("wiki-char-small")  # no dedup: the old behaviour
    assert small["documents"] == 82


class FakeBPE:
    vocab_size, eos_id = 257, 256

    def encode_batch(self, texts):
        return [list(t.encode("latin-1", "replace")) for t in texts]


def test_prose_bpe_counts_tokens_per_source(fake_corpus, data_root, monkeypatch):
    import edlm.data.tokenizers as T

    monkeypatch.setattr(T, "gpt2_tokenizer", lambda root=None: FakeBPE())
    s = prepare("prose-bpe")
    m = json.loads((data_root / "prose-bpe" / "manifest.json").read_text())
    total = s["train_tokens"] + s["valid_tokens"] + s["test_tokens"]
    assert sum(r["tokens"] for r in m["sources"]) == total
    assert [r["tokens"] for r in m["sources"]] == [r["chars"] + r["documents"] for r in m["sources"]]
    assert m["sources"][1]["duplicates_dropped"] == 2
    small = prepare("prose-bpe-small")
    assert small["documents"] == 82 and "dedup" not in json.loads(
        (data_root / "prose-bpe-small" / "manifest.json").read_text())  # fmt: skip


def test_text8_normalize_spaces_what_has_no_ascii_form():
    """text8 turns every non-letter into a space: a dash or curly quote must separate words, not glue them
    ("speaker\u2014no" -> "speaker no"); accents fold to the base letter. `legacy` keeps the pre-issue-18
    behaviour (dropped, glued) for the *-small corpora, which must stay byte-identical to their first builds."""
    from edlm.data.wikifil import text8_normalize

    s = "The speaker\u2014no, the caf\u00e9\u2019s 1984 na\u00efve \u201cquote\u201d\u2013done"
    assert text8_normalize(s) == "the speaker no the cafe s one nine eight four naive quote done"
    assert text8_normalize(s, legacy=True) == "the speakerno the cafes one nine eight four naive quotedone"
    assert text8_normalize("plain ascii - text") == text8_normalize("plain ascii - text", legacy=True)
