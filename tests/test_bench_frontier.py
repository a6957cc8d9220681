"""`edlm bench --temperatures`: every method at every token temperature, one report (frontiers, matched entropy,
pairs, MAUVE, repetition) as JSON + Markdown + PNG; a re-run reuses the samples it finds."""

import json

import pytest

from edlm.cli import main
from edlm.eval.sweep_report import render_markdown, render_matched_table


def test_bench_frontiers_report_and_resume(micro_runs, tmp_path, capsys):
    pytest.importorskip("mauve")
    out = tmp_path / "bench"
    argv = ["bench", "--mdlm", str(micro_runs / "mdlm"), "--ar", str(micro_runs / "ar"),
            "--methods", "mdlm,confidence,edlm-ar,confidence+edlm-ar,ar", "--steps", "2", "--k", "2",
            "--temperatures", "0.5,1", "--num", "12", "--out", str(out), "--quiet", "--metrics", "mauve",
            "--mauve-features", f"edlm:{micro_runs / 'ar'}", "--mauve-bootstrap", "2"]
    capsys.readouterr()
    # sampling only (a GPU machine, say): samples and their summaries, nothing scored
    assert main([a for a in argv[:-6] if a != "true"] + ["--sample-only"]) == 0
    only = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert only["sample_only"] and len(only["rows"]) == 10 and not (out / "results.json").exists()
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "samples").iterdir()}
    assert len(stamps) == 20
    assert main(argv) == 0  # scores what is there, draws nothing
    assert {p.name: p.stat().st_mtime_ns for p in (out / "samples").iterdir()} == stamps
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = line["rows"]
    assert [(r["method"], r.get("token_temperature", 1.0)) for r in rows] == [
        (m, t) for m in ("mdlm", "confidence", "edlm-ar", "confidence+edlm-ar", "ar") for t in (0.5, 1.0)]
    assert {r.get("unmask") for r in rows if r["method"].startswith("confidence")} == {"confidence"}
    for r in rows:
        assert "scores" not in r and "entropies" not in r and 0 < r["mauve"] <= 1 and r["rep_2"] is not None
    cold = {r["method"]: r["entropy_nats"] for r in rows if r.get("token_temperature") == 0.5}
    hot = {r["method"]: r["entropy_nats"] for r in rows if "token_temperature" not in r}
    assert sum(cold.values()) < sum(hot.values())  # T = 0.5 draws sharper samples
    res = json.loads((out / "results.json").read_text())
    rep = res["report"]
    assert rep["data"]["method"] == "data" and rep["data"]["num"] == 12 and rep["level_from"] == "the data's entropy"
    assert rep["level"] == pytest.approx(rep["data"]["entropy_nats"])
    assert set(rep["curves"]) == {"mdlm 2 steps", "confidence 2 steps", "edlm-ar 2 steps k=2",
                                  "confidence+edlm-ar 2 steps k=2", "ar"}
    assert len(rep["pairs"]) == 10 and len(rep["matched"]) == 5
    for p in rep["pairs"]:
        assert p["relation"] in ("below", "above", "crossing", "none") and p["text"]
    for c in rep["cells"]:
        lo, hi = c["entropy_ci95"]
        assert lo <= c["entropy_nats"] <= hi and c["gen_nll_ci95"][0] <= c["gen_nll"] <= c["gen_nll_ci95"][1]
    md = (out / "report.md").read_text()
    assert md == render_markdown(rep, title=md.splitlines()[0][2:])  # the table is generated from the JSON
    assert "| data (held-out) |" in md and "At matched entropy" in md and "MAUVE" in md
    table = render_matched_table(rep)
    assert "minus mdlm 2 steps there" in table and table.count("\n") == 2 + 1 + 5  # head, data, 5 curves
    assert (out / "frontier.png").stat().st_size > 5000 and str(out / "frontier.png") in res["plots"]
    assert len(list((out / "samples").glob("*.jsonl"))) == 10
    assert (out / "samples" / "confidence-on-edlm-ar_s2_k2_w0-1_seed0_T0.5.jsonl").is_file()
    # a re-run (without MAUVE, say) reuses every samples file: same samples, nothing redrawn
    assert main(argv[:-6]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (out / "samples").iterdir()} == stamps
    again = json.loads((out / "results.json").read_text())
    assert [r["gen_nll"] for r in again["rows"]] == [r["gen_nll"] for r in rows]


def test_bench_rejects_bad_knobs_before_work(micro_runs, tmp_path, capsys):
    base = ["bench", "--mdlm", str(micro_runs / "mdlm"), "--out", str(tmp_path / "b"), "--num", "2"]
    for flag, val in (("--temperatures", "0,1"), ("--top-p", "1.2"), ("--metrics", "bleu")):
        capsys.readouterr()
        assert main([*base, flag, val]) == 2
        assert flag in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
