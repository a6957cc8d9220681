"""Corpus building: summaries, idempotence, rebuild of damaged caches, deterministic splits, bad input."""

import json

import numpy as np
import pytest

from edlm.cli import main as cli_main
from edlm.data import fetch as F
from edlm.data.corpora import CORPORA, corpus_dir, info, load_split, prepare, split_documents
from edlm.data.synthetic import load_language
from edlm.data.tokenizers import char_tokenizer, tokenizer_for
from edlm.errors import EdlmError

KEYS = {"corpus", "path", "vocab_size", "mask_id", "train_tokens", "valid_tokens", "test_tokens", "sources"}


def test_synthetic_prepare_idempotent_and_loadable(data_root):
    s = prepare("synthetic")
    assert KEYS <= s.keys() and not s["cached"]
    assert (s["vocab_size"], s["mask_id"]) == (32, 32)
    assert (s["train_tokens"], s["valid_tokens"], s["test_tokens"]) == (2_000_000, 100_000, 100_000)
    assert abs(s["entropy_rate_nats"] - 1.0) < 1e-6 and set(s["block_entropy_nats"]) >= {"64", "128"}
    again = prepare("synthetic")
    assert again["cached"] and {k: again[k] for k in KEYS} == {k: s[k] for k in KEYS}
    x = load_split("synthetic", "valid")
    assert x.dtype == np.uint16 and len(x) == 100_000 and not x.flags.writeable
    assert info("synthetic")["train_tokens"] == 2_000_000
    lang = load_language()
    import torch

    blocks = torch.from_numpy(np.asarray(x[: 100 * 128], dtype=np.int64)).view(100, 128)
    nll = (-lang.log_prob(blocks) / 128).mean().item()
    assert abs(nll - s["block_entropy_nats"]["128"]) < 0.05
    assert tokenizer_for("synthetic").vocab_size == 32
    assert not list(data_root.glob(".*building*"))


@pytest.mark.parametrize("damage", ["corrupt_manifest", "missing_manifest", "truncated_tokens"])
def test_damaged_cache_is_rebuilt(data_root, damage):
    prepare("synthetic")
    d = corpus_dir("synthetic")
    if damage == "corrupt_manifest":
        (d / "manifest.json").write_text('{"format_version": 1, "spl')
    elif damage == "missing_manifest":
        (d / "manifest.json").unlink()
    else:
        with open(d / "train.bin", "r+b") as f:
            f.truncate(1000)
    if damage != "truncated_tokens":
        with pytest.raises(EdlmError, match="edlm data prepare synthetic"):
            info("synthetic")
    else:
        with pytest.raises(EdlmError, match="does not match its manifest"):
            info("synthetic")
    s = prepare("synthetic")
    assert not s["cached"] and s["train_tokens"] == 2_000_000
    assert info("synthetic")["train_tokens"] == 2_000_000


def test_unknown_corpus_lists_valid_names(data_root, capsys):
    for fn in (prepare, info):
        with pytest.raises(EdlmError) as e:
            fn("wikitext103")
        assert all(n in str(e.value) for n in CORPORA)
    assert cli_main(["data", "prepare", "wikitext103"]) == 2
    assert "valid names" in capsys.readouterr().err


def test_not_prepared_names_the_command(data_root):
    with pytest.raises(EdlmError, match="edlm data prepare wiki-char"):
        info("wiki-char")


def test_text8_missing_source_and_tiny_file(data_root, tmp_path):
    with pytest.raises(EdlmError, match="text8.zip"):
        prepare("text8")
    with pytest.raises(EdlmError, match="not found"):
        prepare("text8", source=tmp_path / "nope.zip")
    fake = tmp_path / "text8"
    fake.write_text(" anarchism originated as a term of abuse" * 50)
    s = prepare("text8", source=fake)
    n = len(fake.read_text())
    a, b = int(n * 0.9), int(n * 0.95)
    assert (s["train_tokens"], s["valid_tokens"], s["test_tokens"]) == (a, b - a, n - b)
    (tmp_path / "bad").write_text("Not text8 1")
    with pytest.raises(EdlmError, match="not text8 format"):
        prepare("text8", source=tmp_path / "bad", force=True)


def test_textfile_non_utf8_names_file_and_offset(data_root, tmp_path):
    bad = tmp_path / "latin.txt"
    bad.write_bytes(b"hello world\n\ncaf\xe9 au lait\n")
    with pytest.raises(EdlmError) as e:
        prepare("textfile", source=bad)
    msg = str(e.value)
    assert "latin.txt" in msg and "byte offset 16" in msg and "\n" not in msg
    assert not corpus_dir("textfile").exists() and not list(data_root.glob(".*building*"))


def test_empty_corpus(data_root, tmp_path):
    (tmp_path / "empty.txt").write_text("  \n\n \t\n")
    with pytest.raises(EdlmError, match="empty corpus"):
        prepare("textfile", source=tmp_path / "empty.txt")
    (tmp_path / "dir").mkdir()
    with pytest.raises(EdlmError, match="empty corpus.*no .txt files"):
        prepare("textfile", source=tmp_path / "dir")
    with pytest.raises(EdlmError, match="--source"):
        prepare("textfile")


def test_textfile_char_splits_deterministic(data_root, tmp_path):
    paras = [f"Paragraph {i}: the cat sat on the mat number {i}." for i in range(60)]
    src = tmp_path / "book.txt"
    src.write_text("\n\n".join(paras))
    s1 = prepare("textfile", source=src)
    m1 = json.loads((corpus_dir("textfile") / "manifest.json").read_text())
    assert s1["vocab_size"] == 27 and min(s1["train_tokens"], s1["valid_tokens"], s1["test_tokens"]) > 0
    s2 = prepare("textfile", source=src, force=True)
    m2 = json.loads((corpus_dir("textfile") / "manifest.json").read_text())
    assert {k: m1["splits"][k]["sha256"] for k in m1["splits"]} == {
        k: m2["splits"][k]["sha256"] for k in m2["splits"]
    }
    assert s2["train_tokens"] == s1["train_tokens"]
    text = char_tokenizer().decode(load_split("textfile", "train"))
    assert "the cat sat on the mat number" in text and "paragraph" in text
    assert prepare("textfile")["cached"]  # no --source: reuse what is there


def test_split_documents_properties():
    lengths = [int(x) for x in np.random.default_rng(0).integers(10, 1000, size=500)]
    a, b = split_documents("x", lengths), split_documents("x", lengths)
    assert np.array_equal(a, b) and set(a.tolist()) == {0, 1, 2}
    total = sum(lengths)
    for k in (1, 2):
        share = sum(n for n, s in zip(lengths, a, strict=True) if s == k) / total
        assert 0.05 <= share < 0.05 + 1000 / total
    assert not np.array_equal(a, split_documents("y", lengths))
    assert sorted(split_documents("z", [5, 5, 5]).tolist()) == [0, 1, 2]


def test_registry_unreachable_is_a_clear_error(data_root, monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    pkg = F.Package("pypi", "edlm-no-such-package", "0.0.1", "none")
    with pytest.raises(EdlmError, match="could not download edlm-no-such-package==0.0.1 from the PyPI") as e:
        F.fetch(pkg)
    assert "pip download" in str(e.value)
    assert not list((data_root / "packages").glob("*"))  # no partial download left


def test_cli_prints_summary_json(data_root, capsys):
    assert cli_main(["data", "prepare", "synthetic"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert KEYS <= json.loads(last).keys()
    assert cli_main(["data", "info", "synthetic"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["corpus"] == "synthetic"
