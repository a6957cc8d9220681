"""A run is bound to its corpus and its config; corpus sources are read within a cap.

Before: re-preparing `textfile` from other text silently changed every later result of a run made from it
(resume, eval, decoding) with exit 0; an edit of run.json's training fields (schedule, t_eps, ...) went
unnoticed; `edlm data prepare textfile --source /dev/zero` read until the machine ran out of memory, and
archives were decompressed without a bound.
"""

import bz2
import io
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import tarfile
import time
import tracemalloc
import zipfile
import zlib
from dataclasses import fields
from pathlib import Path

import pytest

from faultlib import as_unbound, assert_one_clear_error, cli, latest_dir, snapshot

MICRO = ["--preset", "micro", "--data", "textfile", "--quiet"]


def _text(seed: int) -> str:
    import random

    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "river", "stone", "light", "north", "quiet", "table"]
    return "\n\n".join(" ".join(rng.choice(words) for _ in range(40)) for _ in range(60))


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A data root with `textfile` prepared from a.txt, an MDLM and an AR run made from it, and b.txt: other
    text of the same shape (vowels rotated: same paragraph lengths, so the same split sizes)."""
    from edlm.cli import main

    root = tmp_path_factory.mktemp("bind")
    (root / "a.txt").write_text(_text(0))
    (root / "b.txt").write_text(_text(0).translate(str.maketrans("aeiou", "eioua")))
    old = {k: os.environ.get(k) for k in ("EDLM_DATA", "EDLM_NO_PROGRESS")}
    os.environ.update(EDLM_DATA=str(root / "data"), EDLM_NO_PROGRESS="1")
    try:
        assert main(["data", "prepare", "textfile", "--source", str(root / "a.txt")]) == 0
        assert main(["train", "--out", str(root / "mdlm"), *MICRO, "--max_steps", "2", "--save_every", "2"]) == 0
        assert main(["train", "--out", str(root / "ar"), "--objective", "ar", *MICRO, "--max_steps", "2"]) == 0
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    return root


@pytest.fixture
def w(template, tmp_path, monkeypatch):
    """A private copy of the template (runs and data root); EDLM_DATA points at its data."""
    for name in ("data", "mdlm", "ar"):
        shutil.copytree(template / name, tmp_path / name)
    monkeypatch.setenv("EDLM_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("EDLM_NO_PROGRESS", "1")
    return tmp_path


@pytest.fixture
def src(template):
    """The folder of a.txt (the run's text) and b.txt (other text of the same shape)."""
    return template


def prepare(capsys, src: Path) -> None:
    assert cli(capsys, ["data", "prepare", "textfile", "--source", src, "--force"])[0] == 0


def command(name: str, w: Path) -> list:
    run = w / "mdlm"
    if name == "eval-samples":  # an AR run as the evaluator: samples from its own token space
        (w / "rows.jsonl").write_text(json.dumps({"ids": [0, 1, 2, 3], "text": "abcd", "corpus": "textfile"}) + "\n")
    return {"sample": ["sample", "--ckpt", run, "--out", w / "s.jsonl", "--num", "2", "--steps", "2"],
            "sample-energy": ["sample", "--ckpt", run, "--out", w / "s.jsonl", "--num", "2", "--steps", "2",
                              "--energy", f"ar:{w / 'ar'}"],
            "eval": ["eval", "nelbo", "--ckpt", run, "--max-blocks", "2"],
            "eval-samples": ["eval", "samples", "--samples", w / "rows.jsonl", "--evaluator", f"edlm:{w / 'ar'}"],
            "resume": ["train", "--out", run, "--resume", "--max_steps", "4", "--quiet"]}[name]


COMMANDS = ["sample", "sample-energy", "eval", "eval-samples", "resume"]


# ---- the corpus binding --------------------------------------------------------------------------------

def test_a_run_records_its_corpus_tokenizer_and_whole_config(w, src):
    from edlm.data.corpora import manifest
    from edlm.data.manifest import manifest_sha256
    from edlm.data.tokenizers import tokenizer_sha256

    meta = json.loads((w / "mdlm" / "run.json").read_text())
    m = manifest("textfile")
    assert meta["data_sha256"] == manifest_sha256(m) and len(meta["data_sha256"]) == 64
    assert meta["tokenizer_sha256"] == tokenizer_sha256(m) and len(meta["tokenizer_sha256"]) == 64
    assert meta["data_request"] == {"source": str(src / "a.txt"), "tokenizer": "char"}
    ident = json.loads((latest_dir(w / "mdlm") / "state.json").read_text())["identity"]
    assert ident["train"] == meta["train"] and ident["model"] == meta["model"]
    for k in ("diffusion", "tokenizer", "data_sha256", "tokenizer_sha256", "global_batch"):
        assert ident[k] == meta[k], k


@pytest.mark.parametrize("name", COMMANDS)
def test_other_text_under_the_corpus_name_is_one_error(w, src, capsys, name):
    prepare(capsys, src / "b.txt")
    before = snapshot(w / "mdlm")
    rc, err = cli(capsys, command(name, w))
    assert_one_clear_error(rc, err, "corpus 'textfile' changed since run", "--accept-data-change",
                           f"edlm data prepare textfile --source {src / 'a.txt'} --tokenizer char --force")
    assert snapshot(w / "mdlm") == before
    assert not (w / "s.jsonl").exists()


@pytest.mark.parametrize("name", COMMANDS)
def test_accepting_the_change_warns_and_works(w, src, capsys, name):
    prepare(capsys, src / "b.txt")
    old = json.loads((w / "mdlm" / "run.json").read_text())["data_sha256"]
    rc, err = cli(capsys, [*command(name, w), "--accept-data-change"])
    assert rc == 0, err
    assert "edlm: warning: corpus 'textfile' changed since run" in err and "as accepted" in err
    if name == "resume":  # the run continued on the new text: bound to it from now on, and the change recorded
        meta = json.loads((w / "mdlm" / "run.json").read_text())
        assert meta["data_sha256"] != old
        assert meta["resumed"][-1]["changed"]["data_sha256"] == [old, meta["data_sha256"]]
        rc, err = cli(capsys, command("sample", w))
        assert rc == 0 and "warning" not in err, err


def test_following_the_advice_restores_the_run(w, src, capsys):
    prepare(capsys, src / "b.txt")
    rc, err = cli(capsys, command("eval", w))
    fix = err.split("(`")[-1].split("`)")[0].split()  # the command the error names
    assert rc == 2 and fix[:3] == ["edlm", "data", "prepare"]
    assert cli(capsys, fix[1:])[0] == 0
    rc, err = cli(capsys, command("eval", w))
    assert rc == 0 and "warning" not in err, err


def test_the_same_text_prepared_again_from_elsewhere_keeps_the_binding(w, src, capsys):
    # the hash covers what the corpus holds, not when or from which path it was built
    (w / "copy").mkdir()
    shutil.copy(src / "a.txt", w / "copy" / "a.txt")
    prepare(capsys, w / "copy" / "a.txt")
    rc, err = cli(capsys, command("sample", w))
    assert rc == 0 and "warning" not in err, err


def test_the_api_names_its_argument_and_accepts(w, src, capsys):
    import edlm
    from edlm.errors import EdlmError

    prepare(capsys, src / "b.txt")
    with pytest.raises(EdlmError, match=r"`accept_data_change=True`"):
        edlm.load(w / "mdlm")
    run = edlm.load(w / "mdlm", accept_data_change=True)
    out = run.sample(num=2, steps=2, energy=edlm.ar_energy(w / "ar"))  # the energy run accepts it too
    assert len(out.texts) == 2
    assert capsys.readouterr().err.count("edlm: warning: corpus 'textfile' changed") == 2
    with pytest.raises(EdlmError, match="changed since run"):
        edlm.train("micro", out=w / "mdlm", resume=True, max_steps=4)
    edlm.train("micro", out=w / "mdlm", resume=True, max_steps=4, accept_data_change=True)


def test_a_converted_run_is_bound_when_its_corpus_is_prepared(synthetic_data, tmp_path):
    from edlm.data.corpora import manifest
    from edlm.data.manifest import manifest_sha256
    from edlm.errors import EdlmError
    from edlm.runs.convert import convert
    from edlm.runs.load import load_model
    from test_convert import BOS, dit_ref, hf_folder

    convert("mdlm-hf", hf_folder(tmp_path / "hub", dit_ref()), tmp_path / "run", data="synthetic", bos_id=BOS)
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["data_sha256"] == manifest_sha256(manifest("synthetic")) and meta["tokenizer_sha256"]
    load_model(tmp_path / "run")
    _edit(tmp_path / "run", "train.t_eps")
    with pytest.raises(EdlmError, match=r"train.t_eps differs"):
        load_model(tmp_path / "run")


def test_tokenizer_hashes_without_fetching(tmp_path):
    from edlm.data.tokenizers import tokenizer_sha256

    assert tokenizer_sha256({"tokenizer": "char"}) != tokenizer_sha256({"tokenizer": "synthetic", "vocab_size": 32})
    assert tokenizer_sha256({"tokenizer": "gpt2"}, root=tmp_path) is None  # not fetched here: nothing fetched
    d = tmp_path / "tokenizers" / "gpt2"
    d.mkdir(parents=True)
    (d / "encoder.json").write_text('{"a": 0}')
    (d / "vocab.bpe").write_text("#version: 0.2\na b\n")
    first = tokenizer_sha256({"tokenizer": "gpt2"}, root=tmp_path)
    (d / "vocab.bpe").write_text("#version: 0.2\nb a\n")
    os.utime(d / "vocab.bpe", ns=(1, 1))
    assert len(first) == 64 and tokenizer_sha256({"tokenizer": "gpt2"}, root=tmp_path) != first
    assert not (tmp_path / "packages").exists()


# ---- the config binding --------------------------------------------------------------------------------

def _other(v):
    """A different value of the same JSON kind."""
    if isinstance(v, bool):
        return not v
    if isinstance(v, int | float):
        return v + 1 if v != 0 else 0.5
    if isinstance(v, str):
        return v + "x"
    if isinstance(v, list):
        return [x + 0.001 for x in v]
    return {"edited": True} if v is None else None


def _edit(run: Path, path: str) -> None:
    meta = json.loads((run / "run.json").read_text())
    top, _, field = path.partition(".")
    if field:
        meta[top][field] = _other(meta[top][field])
    else:
        meta[top] = _other(meta.get(top))
    (run / "run.json").write_text(json.dumps(meta))


TRAIN_FIELDS = [f"train.{f.name}" for f in fields(__import__("edlm.config.train", fromlist=["x"]).TrainConfig)]
OTHER_FIELDS = ["diffusion", "tokenizer", "data_sha256", "tokenizer_sha256", "vocab_size", "global_batch",
                "model.d_model", "model.time_conditioning"]


@pytest.mark.parametrize("path", TRAIN_FIELDS + OTHER_FIELDS)
def test_each_edited_run_json_field_is_caught(w, path):
    from edlm.errors import EdlmError
    from edlm.runs.load import load_model

    _edit(w / "mdlm", path)
    with pytest.raises(EdlmError, match=rf"run.json no longer matches its checkpoint of step 2 \({path} differ"):
        load_model(w / "mdlm")


@pytest.mark.parametrize("name", ["sample", "eval", "resume"])
@pytest.mark.parametrize("path", ["train.schedule", "train.t_eps", "train.lr"])
def test_an_edit_is_one_error_for_every_command(w, capsys, name, path):
    _edit(w / "mdlm", path)
    before = snapshot(w / "mdlm")
    rc, err = cli(capsys, command(name, w))
    assert_one_clear_error(rc, err, "run.json no longer matches its checkpoint", path, "restore it from a backup")
    assert snapshot(w / "mdlm") == before


def test_resume_with_a_new_lr_still_works_and_each_checkpoint_records_its_config(w, capsys):
    run = w / "mdlm"
    rc, err = cli(capsys, ["train", "--out", run, "--resume", "--lr", "0.001", "--max_steps", "4", "--quiet"])
    assert rc == 0, err
    meta = json.loads((run / "run.json").read_text())
    assert meta["resumed"][-1]["changed"]["lr"] == [0.003, 0.001]
    assert json.loads((latest_dir(run) / "state.json").read_text())["identity"]["train"]["lr"] == 0.001
    for name in ("sample", "eval"):
        rc, err = cli(capsys, command(name, w))
        assert rc == 0, err
    rc, err = cli(capsys, ["train", "--out", run, "--resume", "--lr", "0.002", "--max_steps", "6", "--quiet"])
    assert rc == 0, err


def test_a_crash_between_a_resume_with_new_options_and_its_first_save_still_loads(w, capsys):
    # run.json already holds the new lr (written when the resume started), the checkpoint the old one
    run = w / "mdlm"
    keep = w / "keep"
    shutil.copytree(run / "checkpoints", keep / "checkpoints")
    shutil.copy(run / "latest.json", keep / "latest.json")
    assert cli(capsys, ["train", "--out", run, "--resume", "--lr", "0.001", "--max_steps", "4", "--quiet"])[0] == 0
    shutil.rmtree(run / "checkpoints")
    shutil.copytree(keep / "checkpoints", run / "checkpoints")
    shutil.copy(keep / "latest.json", run / "latest.json")
    for name in ("sample", "eval", "resume"):
        rc, err = cli(capsys, command(name, w))
        assert rc == 0, (name, err)


def test_a_run_folder_from_before_the_binding_still_loads_and_is_bound_on_resume(w, src, capsys):
    run = w / "mdlm"
    as_unbound(run)
    prepare(capsys, src / "b.txt")  # nothing recorded to compare with: no error, no warning
    for name in ("sample", "eval"):
        rc, err = cli(capsys, command(name, w))
        assert rc == 0 and "warning" not in err, err
    capsys.readouterr()
    from edlm.cli import main

    assert main(["train", "--out", str(run), "--resume", "--max_steps", "4", "--quiet"]) == 0
    assert "was made before runs recorded their corpus's hash" in capsys.readouterr().err
    meta = json.loads((run / "run.json").read_text())
    assert meta["resumed"][-1]["changed"]["data_sha256"][0] is None and len(meta["data_sha256"]) == 64
    assert cli(capsys, command("sample", w))[0] == 0


def test_an_old_identity_still_catches_its_four_fields(w):
    from edlm.errors import EdlmError
    from edlm.runs.load import load_model

    as_unbound(w / "mdlm")
    _edit(w / "mdlm", "train.schedule")  # not recorded by old checkpoints: loads
    load_model(w / "mdlm")
    _edit(w / "mdlm", "model.d_model")
    with pytest.raises(EdlmError, match=r"\(model differs\)"):
        load_model(w / "mdlm")


# ---- bounded source reads ------------------------------------------------------------------------------

def _limited_run(argv, env, timeout=60):
    """edlm in a subprocess under a 2 GiB address-space limit: -> (rc, stderr, seconds, peak RSS in MiB)."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
        resource.setrlimit(resource.RLIMIT_CPU, (timeout, timeout))

    err = io.BytesIO()
    t = time.perf_counter()
    with open(os.devnull, "wb") as null, subprocess.Popen([sys.executable, "-m", "edlm", *map(str, argv)],
                                                         env=env, stdout=null, stderr=subprocess.PIPE,
                                                         preexec_fn=limit) as p:
        err.write(p.stderr.read())
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, err.getvalue().decode(), time.perf_counter() - t, usage.ru_maxrss / 1024


def test_dev_zero_source_is_one_quick_error_in_bounded_memory(tmp_path):
    env = {**os.environ, "EDLM_DATA": str(tmp_path / "data"), "EDLM_NO_PROGRESS": "1"}
    rc, err, seconds, rss = _limited_run(["data", "prepare", "textfile", "--source", "/dev/zero"], env)
    assert rc == 2 and "Traceback" not in err, err
    assert "/dev/zero is a character device, not a regular file" in err and "EDLM_MAX_SOURCE_BYTES" in err
    assert seconds < 30 and rss < 1024, (seconds, rss)
    assert not (tmp_path / "data" / "textfile").exists()


def test_fifo_source_is_one_error_not_a_hang(tmp_path):
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)  # no writer: opening it would block forever
    env = {**os.environ, "EDLM_DATA": str(tmp_path / "data"), "EDLM_NO_PROGRESS": "1"}
    r = subprocess.run([sys.executable, "-m", "edlm", "data", "prepare", "textfile", "--source", str(fifo)],
                       env=env, capture_output=True, text=True, timeout=60)
    assert_one_clear_error(r.returncode, r.stderr.strip(), "is a FIFO (named pipe), not a regular file")


def test_a_source_over_the_cap_is_one_error_naming_it_and_leaves_the_corpus(w, capsys, monkeypatch):
    before = snapshot(w / "data")
    big = w / "big.txt"
    big.write_text(_text(1))
    monkeypatch.setenv("EDLM_MAX_SOURCE_BYTES", "2K")
    rc, err = cli(capsys, ["data", "prepare", "textfile", "--source", big, "--force"])
    assert_one_clear_error(rc, err, "larger than the 2.0 KiB", "EDLM_MAX_SOURCE_BYTES=2048", "raise the limit")
    assert snapshot(w / "data") == before and not list((w / "data").glob(".textfile.building-*"))
    (w / "dir").mkdir()  # files each under the cap, together over it: read in chunks, stopped at the cap
    for i in range(3):
        (w / "dir" / f"{i}.txt").write_text(_text(i)[:1500])
    rc, err = cli(capsys, ["data", "prepare", "textfile", "--source", w / "dir", "--force"])
    assert_one_clear_error(rc, err, "all its .txt files together) is larger than the 2.0 KiB")
    monkeypatch.setenv("EDLM_MAX_SOURCE_BYTES", "lots")
    rc, err = cli(capsys, ["data", "prepare", "textfile", "--source", big, "--force"])
    assert_one_clear_error(rc, err, "EDLM_MAX_SOURCE_BYTES='lots' is not a size")
    monkeypatch.setenv("EDLM_MAX_SOURCE_BYTES", "1M")
    assert cli(capsys, ["data", "prepare", "textfile", "--source", big, "--force"])[0] == 0


def test_an_endless_stream_stops_at_the_cap():
    from edlm.data.bounded import Budget, read_stream
    from edlm.errors import EdlmError

    tracemalloc.start()
    with open("/dev/zero", "rb") as f, pytest.raises(EdlmError, match="larger than the 4.0 MiB"):
        read_stream(f, Budget("stream", cap=4 << 20))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16 << 20, peak


BOMB = 64 << 20  # bytes of zeros, a few KB compressed
CAP = "8M"


def _tar(mode: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as t:
        info = tarfile.TarInfo("package/bomb.txt")
        info.size = BOMB
        t.addfile(info, io.BytesIO(bytes(BOMB)))
    return buf.getvalue()


def _peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize("kind", ["tgz", "zip", "deb"])
def test_a_decompression_bomb_in_a_package_archive_is_one_error(tmp_path, monkeypatch, kind):
    from edlm.data import fetch as F
    from edlm.errors import EdlmError

    p = tmp_path / f"pkg.{kind}"
    if kind == "tgz":
        p.write_bytes(_tar("w:gz"))
    elif kind == "zip":
        with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("package/bomb.txt", bytes(BOMB))
    else:
        members = [("debian-binary", b"2.0\n"), ("data.tar.xz", _tar("w:xz"))]
        out = bytearray(b"!<arch>\n")
        for name, data in members:
            out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
            out += data + (b"\n" if len(data) & 1 else b"")
        p.write_bytes(bytes(out))
    assert p.stat().st_size < 1 << 20
    monkeypatch.setenv("EDLM_MAX_SOURCE_BYTES", CAP)
    for read in (lambda: F.read_member(p, "package/bomb.txt"), lambda: F.read_members(p, "package/*.txt")):
        with pytest.raises(EdlmError, match=r"larger than the 8.0 MiB .*EDLM_MAX_SOURCE_BYTES"):
            assert _peak(read) < 32 << 20
    monkeypatch.setenv("EDLM_MAX_SOURCE_BYTES", "128M")  # raised: the same archive reads
    assert F.read_member(p, "package/bomb.txt") == bytes(BOMB)


def test_bz2_and_zlib_bombs_in_sources_are_one_error(monkeypatch):
    from edlm.data.formats import r_string_vectors
    from edlm.data.wikifil import iter_wiki_articles
    from edlm.errors import EdlmError

    monkeypatch.setenv("EDLM_MAX_SOURCE_BYTES", CAP)
    xml = bz2.compress(b"<mediawiki>" + b" " * BOMB + b"</mediawiki>")
    with pytest.raises(EdlmError, match="MediaWiki dump, decompressed, is larger than the 8.0 MiB"):
        list(iter_wiki_articles(xml))
    rdb = struct.pack(">i", 0) + zlib.compress(bytes(BOMB))
    with pytest.raises(EdlmError, match=r"R data \(.rdb\), decompressed, is larger than the 8.0 MiB"):
        r_string_vectors(rdb)
