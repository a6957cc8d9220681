"""Plumbing of `edlm demo` and `edlm bench` at a seconds-long scale (the `micro` preset)."""

import json

from edlm.cli import main
from edlm.demo import DemoConfig, run_demo


def test_demo_and_bench_end_to_end(synthetic_data, tmp_path, capsys):
    out = tmp_path / "demo"
    res = run_demo(DemoConfig(data="synthetic", preset="micro", steps=[2, 4], num=8, k=2, mdlm_steps=4, ar_steps=4,
                              nce_steps=2, out=str(out)))
    methods = {(r["method"], r["steps"]) for r in res["rows"]}
    assert methods == {("mdlm", 2), ("mdlm", 4), ("edlm-ar", 2), ("edlm-ar", 4), ("edlm-nce", 2), ("edlm-nce", 4),
                       ("ar", 0)}
    for r in res["rows"]:
        assert r["gen_ppl"] > 1 and r["entropy_nats"] > 0 and r["seconds"] > 0
        lo, hi = r["gen_nll_ci95"]
        assert lo <= r["gen_nll"] <= hi and "scores" not in r
        if r["method"].startswith("edlm"):  # EDLM minus MDLM at the same steps, with its interval
            vs = r["vs_mdlm"]
            assert vs["ci"][0] <= vs["diff"] <= vs["ci"][1]
    saved = json.loads((out / "results.json").read_text())
    assert saved["evaluator"] == "true" and len(saved["rows"]) == 7 and saved["reference"]["gen_ppl"] > 1
    for png in ("quality_vs_steps.png", "quality_vs_time.png", "entropy_vs_steps.png"):
        assert (out / png).stat().st_size > 1000
    # a second demo reuses the trained runs
    mtime = (out / "runs" / "mdlm" / "latest.json").stat().st_mtime
    run_demo(DemoConfig(data="synthetic", preset="micro", steps=[2], num=4, k=2, mdlm_steps=4, ar_steps=4,
                        nce_steps=2, out=str(out)))
    assert (out / "runs" / "mdlm" / "latest.json").stat().st_mtime == mtime

    capsys.readouterr()
    runs = out / "runs"
    rc = main(["bench", "--mdlm", str(runs / "mdlm"), "--ar", str(runs / "ar"), "--nce", str(runs / "nce"),
               "--methods", "mdlm,edlm-coar,edlm-nce", "--steps", "2", "--k", "2", "--window", "0.5,1",
               "--num", "4", "--out", str(tmp_path / "bench"), "--quiet"])
    assert rc == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["method"] for r in line["rows"]] == ["mdlm", "edlm-coar", "edlm-nce"]
    assert line["rows"][1]["window"] == [0.5, 1.0]
    assert len(list((tmp_path / "bench" / "samples").glob("*.jsonl"))) == 3  # (and each one's .summary.json)


def test_bench_rejects_missing_runs(synthetic_data, capsys):
    assert main(["bench", "--mdlm", "nowhere", "--methods", "edlm-nce"]) == 2
    assert "needs --nce" in capsys.readouterr().err
