"""The ceiling sweep's real-text path end to end at smoke size (issue 18): the GPU run keeps every cell's ids, a
CPU machine scores them later with an evaluator, and the report analyses one evaluator's per-sample NLL. A
GPU session is too short to find a broken scoring step after the fact, so it is exercised here on a text file
(char tokenizer), scored by an edlm AR run instead of a GGUF model."""

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"

pytestmark = pytest.mark.slow


def _run(*args):
    r = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_real_text_sweep_score_report(tmp_path, data_root):
    from edlm.data.corpora import prepare

    src = tmp_path / "t.txt"
    words = "the quick brown fox jumps over a lazy dog while seven wizards hex big frogs".split()
    src.write_text("".join(" ".join(words[(i * 7 + j) % len(words)] for j in range(9)) + ".\n\n"
                           for i in range(1500)))
    prepare("textfile", source=src, tokenizer="char")
    out, runs = tmp_path / "sweep.json", tmp_path / "runs"
    _run(BENCH / "ceiling_sweep.py", "sweep", "--size", "smoke", "--language", "textfile", "--runs", runs,
         "--out", out, "--num", 12, "--mdlm-steps", "4,8", "--conf-steps", "4", "--edlm-steps", "4,8",
         "--edlm-k", "2", "--edlm-window", "1.0", "--conf-edlm-steps", "")
    res = json.loads(out.read_text())
    assert res["language_facts"]["exact"] is False and res["data"]["nll"] is None
    assert all(c["gen_nll"] is None and len(c["ent"]) == 12 for c in res["cells"])
    with gzip.open(out.with_suffix(".samples.jsonl.gz"), "rt") as f:
        kept = {json.loads(line)["key"] for line in f}
    assert kept == {"data", "mdlm|4|1|None", "mdlm|8|1|None", "confidence|4|1|None", "edlm-ar|4|2|1.0",
                    "edlm-ar|8|2|1.0"}

    ev = f"edlm:{runs / 'ar'}"
    import torch
    if not torch.cuda.is_available():  # --device reaches the scorer: cuda here is one clear error, file untouched
        before = out.read_bytes()
        r = subprocess.run([sys.executable, str(BENCH / "ceiling_sweep.py"), "score", "--out", str(out),
                            "--evaluator", ev, "--device", "cuda"], capture_output=True, text=True)
        assert r.returncode != 0 and "no CUDA device" in r.stderr and out.read_bytes() == before
    # a slow CPU scores a subset first: the data row always, then the cells matched; the report names the rest
    _run(BENCH / "ceiling_sweep.py", "score", "--out", out, "--evaluator", ev, "--only", "mdlm|8*,edlm-ar|4|*")
    res = json.loads(out.read_text())
    assert {"data"} | {c["sampler"] + str(c["steps"]) for c in res["cells"] if ev in c.get("evals", {})} == \
        {"data", "mdlm8", "edlm-ar4"} and ev in res["data"]["evals"]
    table = _run(BENCH / "ceiling_report.py", out, "--evaluator", ev, "--no-plots")
    assert "left out): mdlm|4|1|None, confidence|4|1|None, edlm-ar|8|2|1.0" in table
    # the rest, by two processes at once (a second name for the same evaluator): neither writes back a stale copy
    ev2 = f"edlm:{runs / 'ar'}/"
    procs = [subprocess.Popen([sys.executable, str(BENCH / "ceiling_sweep.py"), "score", "--out", str(out),
                               "--evaluator", e], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for e in (ev, ev2)]
    assert all(p.wait(timeout=300) == 0 for p in procs), [p.stderr.read()[-2000:] for p in procs]
    res = json.loads(out.read_text())
    assert all({ev, ev2} <= set(c["evals"]) for c in [res["data"], *res["cells"]])
    for c in [res["data"], *res["cells"]]:
        e = c["evals"][ev]
        assert c["evals"][ev2]["nll"] == pytest.approx(e["nll"], abs=1e-4)  # same model, same numbers
        assert len(e["nll"]) == 12 and all(v > 0 for v in e["nll"])
        assert e["gen_nll"] == pytest.approx(sum(e["nll"]) / 12, abs=1e-4)

    table = _run(BENCH / "ceiling_report.py", out, "--evaluator", ev, "--no-plots", "--texts", 2)
    assert "test-split windows" in table and "| mdlm |" in table
    # decoded samples of the data row and of each sampler's best cell, two each, as the side file holds them
    md = (tmp_path / f"sweep_{ev.replace(':', '-').replace('/', '-')}_texts.md").read_text()
    with gzip.open(out.with_suffix(".samples.jsonl.gz"), "rt") as f:
        rows = {r["key"]: r["ids"] for r in map(json.loads, f)}
    from edlm.data.tokenizers import CHAR_ALPHABET
    assert md.count("## ") == 4 and md.count("(its best)") == 3  # data, mdlm, confidence, edlm-ar k=2 w=1
    def text(x):
        return repr("".join(CHAR_ALPHABET[i] for i in x))
    assert all(text(x) in md for x in rows["data"][:2]) and text(rows["data"][2]) not in md
    assert sum(text(x) in md for k in ("mdlm|4|1|None", "mdlm|8|1|None") for x in rows[k][:2]) == 2  # best only
    res = json.loads(out.read_text())
    assert f"analysis_{ev}" in res and "analysis" not in res  # the exact-language key stays free
    r = subprocess.run([sys.executable, str(BENCH / "ceiling_report.py"), str(out), "--no-plots"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "pass --evaluator" in r.stderr  # real text needs an evaluator named

    # a deadline cuts the cells whose estimated time would pass it (the first of a kind has no estimate yet and
    # runs); the trained runs are reused
    out2 = tmp_path / "cut.json"
    _run(BENCH / "ceiling_sweep.py", "sweep", "--size", "smoke", "--language", "textfile", "--runs", runs,
         "--out", out2, "--num", 12, "--mdlm-steps", "4,8", "--conf-steps", "", "--edlm-steps", "",
         "--conf-edlm-steps", "", "--max-wall-seconds", "0.01")
    res = json.loads(out2.read_text())
    assert [(c["sampler"], c["steps"]) for c in res["cells"]] == [("mdlm", 4)]
    assert [(c["sampler"], c["steps"]) for c in res["cut"]] == [("mdlm", 8)]
