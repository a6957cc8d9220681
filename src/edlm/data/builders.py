"""One builder per corpus: ``build(tmp_dir, root=, request=) -> (manifest fields, vocab_size)``.

A builder writes ``train.bin``/``valid.bin``/``test.bin`` into ``tmp_dir`` through a SplitWriter and
returns what the manifest should record; corpora.prepare does the staging, manifest and install.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from edlm.data import sources as S
from edlm.data.bounded import Budget, check_source, human, over_cap, read_file, read_stream
from edlm.data.dedup import Deduper
from edlm.data.writers import WIKI_CHAR_MIN_CHARS, SplitWriter, write_bpe_docs, write_char_docs
from edlm.errors import EdlmError
from edlm.utils import progress

SYNTHETIC_TOKENS = {"train": 2_000_000, "valid": 100_000, "test": 100_000}


def request_for(name: str, source=None, tokenizer=None, train_tokens: int | None = None) -> dict:
    """What the user asked for; a prepared corpus is reused only when it was built for the same request."""
    if train_tokens is not None:
        from edlm.data.names import is_language

        if name != "synthetic" and not is_language(name):
            raise EdlmError(f"`train_tokens` sets how much of a ground-truth language to sample; corpus {name!r} "
                            "is real text: drop it")
        if int(train_tokens) < 10_000:
            raise EdlmError(f"`train_tokens={train_tokens}`: use at least 10000 (a training split needs many windows)")
    from edlm.data.names import is_textfile
    from edlm.data.tokenizers import TEXTFILE_TOKENIZERS

    if tokenizer is not None and tokenizer not in TEXTFILE_TOKENIZERS:
        raise EdlmError(f"unknown tokenizer {tokenizer!r}; use one of "
                        + ", ".join(f"`tokenizer={t}`" for t in TEXTFILE_TOKENIZERS))
    if source and (is_textfile(name) or name == "text8") and Path(source).exists():  # before any staging folder
        check_source(Path(source), dir_ok=is_textfile(name))  # a regular file within the cap (or a folder)
    if is_textfile(name):  # a named corpus (new) defaults to the lossless chars; `textfile` keeps text8's char
        default = "char" if name == "textfile" else "chars"
        return {"source": str(Path(source).resolve()) if source else None, "tokenizer": tokenizer or default}
    if tokenizer is not None:
        fixed = {
            "wiki-char": "char",
            "wiki-char-small": "char",
            "text8": "char",
            "prose-bpe": "gpt2",
            "prose-bpe-small": "gpt2",
            "openwebtext": "gpt2",
            "lm1b": "gpt2",
            "lexicon": "char",
        }
        if fixed.get(name, "synthetic") != tokenizer:
            raise EdlmError(
                f"corpus {name!r} always uses the {fixed.get(name, 'synthetic')} tokenizer; drop "
                f"`tokenizer`, or use `edlm data prepare textfile --source PATH --tokenizer {tokenizer}`"
            )
    request = {"source": str(Path(source).resolve()) if source else None}
    if train_tokens is not None:  # checked above: a ground-truth language (the tokenizer is checked too)
        request["train_tokens"] = int(train_tokens)
    return request


def same_request(m: dict, request: dict) -> bool:
    from edlm.data.names import is_textfile

    old = m.get("request", {})
    if is_textfile(m["corpus"]):  # no --source: whatever textfile is prepared
        return request["source"] is None or (old.get("source"), old.get("tokenizer")) == (
            request["source"], request["tokenizer"])  # fmt: skip
    if request.get("train_tokens") is not None:  # a language sampled to another size is another build
        return old.get("train_tokens", SYNTHETIC_TOKENS["train"]) == request["train_tokens"]
    return True  # other corpora do not depend on the request (text8: the same standard file)


def split_tokens(request: dict) -> dict:
    """Tokens per split of a ground-truth language: the defaults, or the requested training size."""
    return {**SYNTHETIC_TOKENS, "train": request.get("train_tokens") or SYNTHETIC_TOKENS["train"]}


def _meta(w: SplitWriter, tokenizer: str, sources: list, **extra) -> dict:
    splits = w.close()
    return {"tokenizer": tokenizer, "splits": splits, "sources": sources,
            "chars": sum(s["chars"] for s in splits.values()),
            "documents": sum(s["documents"] for s in splits.values()), **extra}  # fmt: skip


def build_synthetic(tmp: Path, root: Path, request: dict):
    from edlm.data.synthetic import SyntheticConfig, SyntheticLanguage

    cfg = SyntheticConfig()
    lang = SyntheticLanguage(cfg)
    w = SplitWriter(tmp, cfg.vocab_size)
    # each split is its own long stationary chain (own seed), so any window is an exact sample
    for i, (split, n) in enumerate(
        progress(split_tokens(request).items(), desc="synthetic: sampling", unit="split")
    ):
        w.add(split, lang.sample_chain(n, seed=[cfg.seed, 1000 + i]), docs=1)
    src = [{"generator": "edlm.data.synthetic.SyntheticLanguage", "config": lang.to_dict()["config"],
            "split_seeds": {s: [cfg.seed, 1000 + i] for i, s in enumerate(SYNTHETIC_TOKENS)},
            "license": "generated"}]  # fmt: skip
    meta = _meta(w, "synthetic", src, language=lang.to_dict(), entropy_rate_nats=lang.entropy_rate,
                 unigram_entropy_nats=lang.unigram_entropy,
                 block_entropy_nats={str(n): lang.block_entropy(n) for n in (64, 128, 256, 1024)},
                 )  # fmt: skip
    meta["split_method"] = "one independent stationary chain per split"
    meta.pop("chars")
    return meta, cfg.vocab_size


def _language_builder(name: str):
    """Builder of a corpus of the language family (data/languages.py): same layout and manifest fields as
    `synthetic`, plus neighbour_entropy_nats and the language's knob."""

    def build(tmp: Path, root: Path, request: dict):
        from edlm.data.languages import make_language

        lang = make_language(name)
        w = SplitWriter(tmp, lang.vocab_size)
        seeds = {s: [lang.config.seed, 1000 + i] for i, s in enumerate(SYNTHETIC_TOKENS)}
        for split, n in progress(split_tokens(request).items(), desc=f"{name}: sampling", unit="split"):
            w.add(split, lang.sample_chain(n, seed=seeds[split]), docs=1)
        d = lang.to_dict()
        src = [{"generator": f"edlm.data.languages.{type(lang).__name__}", "config": d["config"],
                "split_seeds": seeds, "license": "generated"}]  # fmt: skip
        block = {str(n): lang.block_entropy(n) for n in (64, 128, 256, 1024)}
        meta = _meta(w, "char" if d["kind"] == "lexicon" else "synthetic", src, language=d,
                     entropy_rate_nats=lang.entropy_rate, unigram_entropy_nats=lang.unigram_entropy,
                     neighbour_entropy_nats=lang.neighbour_entropy, block_entropy_nats=block,
                     knob=d["knob"])  # fmt: skip
        if d["kind"] == "lexicon":
            meta["block_entropy_is_estimate"] = "Monte-Carlo, 4000 exact samples (no closed form for an HMM)"
        meta["split_method"] = "one independent stationary chain per split"
        meta.pop("chars")
        return meta, lang.vocab_size

    return build


# The sources of each corpus, in the order their documents are numbered (the split hashes that number).
# Since issue 18 wiki-char and prose-bpe take more offline prose, duplicates dropped; the *-small corpora are
# the earlier ones, built as before (same documents, split and bytes) for the results made on them.
# wiki-char stays on PyPI + npm sources (36M characters without Debian's); prose-bpe needs two Debian
# packages (Austen, the Python docs) to pass 10M GPT-2 tokens.
WIKI_CHAR_SOURCES = ("wiki-summaries", "enwiki-sample", "sotu", "kjv", "brown", "shakespeare", "moby-dick")
PROSE_BPE_SOURCES = ("wiki-summaries", "enwiki-sample", "brown", "shakespeare", "moby-dick", "sotu", "kjv",
                     "austen", "python-docs")  # fmt: skip
SMALL_PROSE_BPE_SOURCES = PROSE_BPE_SOURCES[:5]
SMALL_WIKI_CHAR_SOURCES = ("wiki-summaries", "enwiki-sample")
SMALL_WIKI_CHAR_EXTRAS = ("moby-dick", "brown", "shakespeare")  # only if the two Wikipedia sources fall short


def _gather(loaders, root, text8: bool, deduper: Deduper | None = None,
            legacy: bool = False) -> tuple[list[str], list[dict]]:  # fmt: skip
    """legacy: text8 as before issue 18 (characters without an ASCII form dropped, not spaced; wikifil.py)."""
    docs, recs = [], []
    for name in progress(loaders, desc="fetching + cleaning sources", unit="source"):
        d, rec = S.LOADERS[name](root, text8=text8, legacy=legacy)
        rec["source"] = name
        if deduper is not None:
            near = deduper.near
            d, dropped, dropped_chars = deduper.keep(d)
            rec.update(documents=len(d), chars=sum(map(len, d)), duplicates_dropped=dropped,
                       near_duplicates_dropped=deduper.near - near, duplicate_chars_dropped=dropped_chars)  # fmt: skip
        docs += d
        recs.append(rec)
    return docs, recs


def _char_corpus(tmp: Path, docs: list[str], recs: list[dict], split_key: str, **extra):
    w = SplitWriter(tmp, 27)
    write_char_docs(w, split_key, docs)
    meta = _meta(w, "char", recs, split_method="by document (hash order, 5% test, 5% valid of characters)",
                 **extra)  # fmt: skip
    return meta, 27


def build_wiki_char(tmp: Path, root: Path, request: dict):
    """Every offline prose source in text8 format, duplicates (after normalising) dropped."""
    docs, recs = _gather(WIKI_CHAR_SOURCES, root, text8=True, deduper=Deduper())
    return _char_corpus(tmp, docs, recs, "wiki-char", dedup=DEDUP_NOTE)


def build_wiki_char_small(tmp: Path, root: Path, request: dict):
    """wiki-char as it was before issue 18: the two Wikipedia sources (more only if they fall short), no
    dedup, split under the name wiki-char, so the same tokens as then."""
    docs, recs = _gather(SMALL_WIKI_CHAR_SOURCES, root, text8=True, legacy=True)
    for extra in SMALL_WIKI_CHAR_EXTRAS:
        if sum(map(len, docs)) + len(docs) >= WIKI_CHAR_MIN_CHARS:
            break
        more, recs2 = _gather([extra], root, text8=True, legacy=True)
        docs += more
        recs += recs2
    return _char_corpus(tmp, docs, recs, "wiki-char")


DEDUP_NOTE = ("documents equal after text8 normalisation, or with >= half of their sampled 8-word passages in "
              "earlier documents, dropped (first copy kept, in source order; data/dedup.py)")


def _bpe_corpus(tmp: Path, root: Path, sources, dedup: bool):
    from edlm.data.tokenizers import gpt2_tokenizer

    tok = gpt2_tokenizer(root)
    docs, recs = _gather(sources, root, text8=False, deduper=Deduper() if dedup else None)
    w = SplitWriter(tmp, tok.vocab_size)
    counts = write_bpe_docs(w, "prose-bpe", docs, tok)
    lo = 0
    for rec in recs:  # each source's documents are consecutive in `docs`
        rec["tokens"] = int(counts[lo : lo + rec["documents"]].sum())
        lo += rec["documents"]
    extra = {"dedup": DEDUP_NOTE} if dedup else {}
    meta = _meta(
        w,
        "gpt2",
        recs,
        eos_id=tok.eos_id,
        split_method="by document (hash order, 5% test, 5% valid of characters); EOS after each document",
        **extra,
    )
    return meta, tok.vocab_size


def build_prose_bpe(tmp: Path, root: Path, request: dict):
    """GPT-2 BPE over every offline prose source, duplicates dropped."""
    return _bpe_corpus(tmp, root, PROSE_BPE_SOURCES, dedup=True)


def build_prose_bpe_small(tmp: Path, root: Path, request: dict):
    """prose-bpe as it was before issue 18 (five sources, no dedup, split under the name prose-bpe)."""
    return _bpe_corpus(tmp, root, SMALL_PROSE_BPE_SOURCES, dedup=False)


TEXT8_HELP = ("text8 needs its source file, which no package registry ships: download "
              "http://mattmahoney.net/dc/text8.zip (needs internet) and run "
              "`edlm data prepare text8 --source /path/to/text8.zip`")  # fmt: skip


def build_text8(tmp: Path, root: Path, request: dict):
    from edlm.data.tokenizers import char_tokenizer

    src = request.get("source")
    if not src or not Path(src).exists():
        raise EdlmError(("source file not found: " + src + "; " if src else "") + TEXT8_HELP)
    p = Path(src)
    check_source(p, dir_ok=False)
    if zipfile.is_zipfile(p):
        with zipfile.ZipFile(p) as z:
            names = [n for n in z.namelist() if Path(n).name == "text8"]
            if not names:
                raise EdlmError(f"{p} has no member named text8; pass the original text8.zip. {TEXT8_HELP}")
            info = z.getinfo(names[0])
            budget = Budget(f"{p} (member text8, decompressed)")
            if info.file_size > budget.cap:
                raise over_cap(f"{p} (member text8: {human(info.file_size)}, decompressed)", budget.cap)
            with z.open(info) as f:
                raw = read_stream(f, budget)
    else:
        raw = read_file(p)
    try:
        ids = char_tokenizer().encode_array(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as e:
        raise EdlmError(f"{p} is not text8 format (only a-z and space allowed: {e}); {TEXT8_HELP}") from None
    n = len(ids)
    if n == 0:
        raise EdlmError(f"{p} is empty; {TEXT8_HELP}")
    a, b = int(n * 0.9), int(n * 0.95)  # 90M / 5M / 5M for the standard 100M characters
    w = SplitWriter(tmp, 27)
    for s, part in zip(("train", "valid", "test"), (ids[:a], ids[a:b], ids[b:]), strict=True):
        w.add(s, part, docs=1, chars=len(part))
    from edlm.data.fetch import sha256_file

    rec = {"source": "text8", "file": str(p), "sha256": sha256_file(p),
           "license": "Wikipedia text (CC BY-SA)", "url": "http://mattmahoney.net/dc/text8.zip"}  # fmt: skip
    return _meta(w, "char", [rec], split_method="positional 90% / 5% / 5% (the standard text8 split)"), 27


def _read_utf8(p: Path, budget: Budget) -> str:
    raw = read_file(p, budget)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise EdlmError(
            f"{p} is not UTF-8 text (invalid byte 0x{raw[e.start]:02x} at byte offset {e.start}); "
            f"convert it first, e.g. `iconv -f latin1 -t utf-8 {p} > {p.stem}.utf8.txt`"
        ) from None


def build_textfile(tmp: Path, root: Path, request: dict):
    from edlm.data import textfile
    from edlm.data.tokenizers import gpt2_tokenizer

    src = request.get("source")
    if not src:
        raise EdlmError("textfile needs a source: `source` (--source PATH on the command line), a UTF-8 file or a "
                        "folder of .txt files")  # fmt: skip
    p = Path(src)
    if not p.exists():
        raise EdlmError(f"source {p} does not exist; pass an existing UTF-8 file or folder of .txt files")
    check_source(p)  # a regular file or a folder; FIFOs and devices are refused unread
    files = sorted(x for x in p.rglob("*.txt") if x.is_file()) if p.is_dir() else [p]
    budget = Budget(f"source {p}" + (" (all its .txt files together)" if p.is_dir() else ""))
    kind = request.get("tokenizer", "char")
    texts = [_read_utf8(f, budget) for f in progress(files, desc="textfile: reading", unit="file")]
    # documents: paragraphs (blank-line separated) of every file, so even one file can be split
    docs, loss = textfile.documents(texts, kind)
    warning = textfile.warn_if_lossy(loss, kind) if docs else None
    if warning:
        loss["warnings"] = [warning]
    if not docs:
        what = f"{p} has no .txt files" if p.is_dir() and not files else f"{p} contains no usable text"
        raise EdlmError(
            f"empty corpus: {what}; point `source` at a non-empty UTF-8 file or folder of .txt files"
        )
    if len(docs) < 3:
        raise EdlmError(f"{p} has only {len(docs)} paragraph(s): too little to split into train/valid/test; "
                        "give more text (paragraphs separated by blank lines)")  # fmt: skip
    rec = {"source": "textfile", "path": str(p), "files": [str(f) for f in files], "license": "user supplied"}
    if kind == "char":
        w = SplitWriter(tmp, 27)
        write_char_docs(w, "textfile", docs)
        return _meta(w, "char", [rec], split_method="by paragraph (hash order, 5% test, 5% valid)", **loss), 27
    if kind in ("bytes", "chars"):
        tok = textfile.lossless_tokenizer(kind, docs)
        w = SplitWriter(tmp, tok.vocab_size)
        textfile.write_lossless_docs(w, "textfile", docs, tok)
        extra = {"alphabet": tok.alphabet} if kind == "chars" else {}
        return _meta(w, kind, [rec], split_method="by paragraph, each with the blank lines after it (hash order, "
                     "5% test, 5% valid); the text is kept byte for byte", **extra, **loss), tok.vocab_size
    tok = gpt2_tokenizer(root)
    w = SplitWriter(tmp, tok.vocab_size)
    write_bpe_docs(w, "textfile", docs, tok)
    return _meta(
        w, "gpt2", [rec], eos_id=tok.eos_id, split_method="by paragraph; EOS after each", **loss
    ), tok.vocab_size


def _hf_builder(dataset: str, config: str | None, text_key: str):
    def build(tmp: Path, root: Path, request: dict):
        try:
            import datasets  # optional extra
        except ImportError:
            raise EdlmError(
                f"{dataset} needs the optional Hugging Face `datasets` package and internet access: "
                f"`pip install 'edlm[hf]'`, then rerun `edlm data prepare {dataset}`"
            ) from None
        from edlm.data.tokenizers import gpt2_tokenizer

        tok = gpt2_tokenizer(root)
        w = SplitWriter(tmp, tok.vocab_size)
        try:
            ds = datasets.load_dataset(dataset, config) if config else datasets.load_dataset(dataset)
        except Exception as e:  # network / hub errors come in many types
            raise EdlmError(f"could not load {dataset} with `datasets` ({type(e).__name__}: {e}); it needs "
                            "internet access to the Hugging Face hub") from None  # fmt: skip
        # documents go to valid/test by a hash of their index (0.5% each) unless the dataset has a test split
        for split_name, part in ds.items():
            texts = part[text_key] if len(part) < 2_000_000 else (r[text_key] for r in part)
            bar = progress(total=len(part), desc=f"{dataset}/{split_name}: tokenising", unit="doc")
            batch, index = [], 0
            for t in texts:
                batch.append(t)
                if len(batch) == 1024:
                    index = _hf_flush(w, tok, batch, index, split_name, "test" in ds)
                    bar.update(len(batch))
                    batch = []
            index = _hf_flush(w, tok, batch, index, split_name, "test" in ds)
            bar.close()
        rec = {
            "source": "huggingface",
            "dataset": dataset,
            "config": config,
            "license": "see the dataset card",
        }
        return _meta(
            w, "gpt2", [rec], eos_id=tok.eos_id, split_method="hash of document index"
        ), tok.vocab_size

    return build


def _hf_flush(w: SplitWriter, tok, batch: list[str], index: int, split_name: str, has_test: bool) -> int:
    for i, ids in enumerate(tok.encode_batch(batch)):
        u = (((index + i) * 2654435761) % 2**32) / 2**32
        if split_name == "test":
            s = "test"
        elif split_name not in ("train",):
            s = "valid"
        else:
            s = "valid" if u < 0.005 else ("test" if u < 0.01 and not has_test else "train")
        w.add(s, np.asarray(ids + [tok.eos_id]), docs=1, chars=len(batch[i]))
    return index + len(batch)


def builder_for(name: str):
    """The builder of corpus `name`; a Markov language with its knob in the name gets a language builder."""
    from edlm.data.names import knob, textfile_name

    if textfile_name(name) is not None:
        return build_textfile
    return BUILDERS[name] if name in BUILDERS or knob(name) is None else _language_builder(name)


BUILDERS = {
    "synthetic": build_synthetic,
    "markov2": _language_builder("markov2"),
    "markov3": _language_builder("markov3"),
    "lexicon": _language_builder("lexicon"),
    "wiki-char": build_wiki_char,
    "wiki-char-small": build_wiki_char_small,
    "text8": build_text8,
    "prose-bpe": build_prose_bpe,
    "prose-bpe-small": build_prose_bpe_small,
    "textfile": build_textfile,
    "openwebtext": _hf_builder("openwebtext", None, "text"),
    "lm1b": _hf_builder("lm1b", None, "text"),
}
