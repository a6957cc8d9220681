"""Your own text as a corpus: the lossless tokenizers (bytes, chars) round-trip any UTF-8 text exactly, named
corpora (textfile:NAME) sit side by side, and preparing says how much of the text a tokenizer drops."""

import json
import random

import pytest

from edlm.cli import main
from edlm.data.corpora import corpus_dir, info, load_split, prepare
from edlm.data.tokenizers import BytesTokenizer, CharsTokenizer, tokenizer_for
from edlm.errors import EdlmError

RANGES = [(0x00, 0x7F), (0x80, 0x7FF), (0x800, 0xD7FF), (0xE000, 0xFFFD), (0x10000, 0x10FFFF)]


def random_text(rng: random.Random, n: int) -> str:
    """Any Unicode scalar values (no surrogates): control characters, accents, CJK, emoji, private use."""
    out = []
    for _ in range(n):
        lo, hi = rng.choice(RANGES)
        out.append(chr(rng.randint(lo, hi)))
    return "".join(out)


@pytest.mark.parametrize("seed", range(20))
def test_bytes_and_chars_round_trip_any_utf8_text(seed):
    rng = random.Random(seed)
    text = random_text(rng, rng.randint(0, 300)) + "\r\n\tcafé\u0301 \U0001F642\x00"
    b = BytesTokenizer()
    ids = b.encode(text)
    assert b.decode(ids) == text and ids == list(text.encode("utf-8")) and max(ids) < b.vocab_size
    c = CharsTokenizer.of(text)
    ids = c.encode(text)
    assert c.decode(ids) == text and max(ids) < c.vocab_size == len(set(text))
    assert c.mask_id == c.vocab_size and c.mask_token not in c.alphabet and b.mask_id == 256


def test_chars_refuses_a_character_outside_its_alphabet():
    c = CharsTokenizer.of("abc")
    with pytest.raises(ValueError, match="'z'"):
        c.encode("abz")
    assert c.decode([0, 3, 1]) == "a_b"  # MASK shows as '_'


BOOK = "".join(f"Chapter {i}.\r\n  Indented line, Caps & digits 1{i}!\n\n\n  \nnext: \u00e9\u00e8 \U0001F600\n\n"
               for i in range(40)) + "The end, no blank line after it."


def _all_text(name):
    tok = tokenizer_for(name)
    return [tok.decode(load_split(name, s).tolist()) for s in ("train", "valid", "test")]


@pytest.mark.parametrize("kind", ["bytes", "chars"])
def test_a_lossless_corpus_keeps_every_paragraph_verbatim(data_root, tmp_path, kind):
    src = tmp_path / "book.txt"
    src.write_bytes(BOOK.encode("utf-8"))
    s = prepare(f"textfile:{kind}", source=src, tokenizer=kind)
    assert s["tokenizer"] == kind and s["dropped_share"] == 0.0 and "warnings" not in s
    splits = _all_text(f"textfile:{kind}")
    joined = "".join(splits)
    for i in range(40):  # each paragraph with its own separator, byte for byte
        assert f"Chapter {i}.\r\n  Indented line, Caps & digits 1{i}!\n\n\n  \n" in joined
    assert "The end, no blank line after it.\n\n" in joined  # a blank line keeps it apart from the next
    assert len(joined) == len(BOOK) + 2 and all(splits)


def test_text8_char_says_what_it_drops(data_root, tmp_path, capsys):
    src = tmp_path / "book.txt"
    src.write_text(BOOK)
    s = prepare("textfile:t8", source=src, tokenizer="char")
    assert s["vocab_size"] == 27 and s["dropped_share"] > 0.1 and "'C'" in s["warnings"][0]
    assert "edlm: warning:" in capsys.readouterr().err and s["dropped_top"]["\n"] > 0
    assert info("textfile:t8")["dropped_share"] == s["dropped_share"]


def test_named_corpora_coexist_and_one_is_never_silently_replaced(data_root, tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("".join(f"alpha {i} aaa.\n\n" for i in range(30)))
    b.write_text("".join(f"Beta {i} BBB?\n\n" for i in range(30)))
    prepare("textfile:a", source=a)
    prepare("textfile:b", source=b)
    assert corpus_dir("textfile:a") != corpus_dir("textfile:b")
    assert "alpha" in "".join(_all_text("textfile:a")) and "Beta" not in "".join(_all_text("textfile:a"))
    assert "Beta" in "".join(_all_text("textfile:b"))
    assert prepare("textfile:a")["cached"] and prepare("textfile:a", source=a)["cached"]
    with pytest.raises(EdlmError, match="already holds .*a.txt.*another name.*`force`"):
        prepare("textfile:a", source=b)
    with pytest.raises(EdlmError, match="already holds"):
        prepare("textfile:a", source=a, tokenizer="bytes")
    assert "alpha" in "".join(_all_text("textfile:a"))  # untouched
    prepare("textfile:a", source=b, force=True)
    assert "Beta" in "".join(_all_text("textfile:a"))
    with pytest.raises(EdlmError, match="after 'textfile:'"):
        prepare("textfile:../x", source=a)


def test_the_cli_prepares_named_corpora(data_root, tmp_path, capsys):
    src = tmp_path / "n.txt"
    src.write_text("".join(f"Note {i}: Hello!\n\n" for i in range(20)))
    assert main(["data", "prepare", "textfile:notes", "--source", str(src), "--tokenizer", "bytes"]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert s["corpus"] == "textfile:notes" and s["vocab_size"] == 256 and s["dropped_share"] == 0.0
    assert main(["data", "prepare", "textfile:notes", "--source", str(src), "--tokenizer", "chars"]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["data", "info", "textfile:notes"]) == 0
    with pytest.raises(SystemExit):
        main(["data", "prepare", "--help"])
    assert "text8" in capsys.readouterr().out
