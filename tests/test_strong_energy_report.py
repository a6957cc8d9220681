"""The strong-energy report (benchmarks/strong_energy_report.py) on made-up cells: equal-steps differences, the
matched-quality speed-up (interpolated on MDLM's running best, "not reached" when MDLM never gets there), and the
plan's circularity: no EDLM cell is ever judged by its own energy."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import strong_energy as se  # noqa: E402
import strong_energy_report as rep  # noqa: E402


def test_matched_cost_interpolates_on_the_running_best():
    curve = [(4, 3.0, 1.0), (8, 2.0, 2.0), (16, 2.5, 4.0), (32, 1.0, 8.0)]
    assert rep.matched_cost(curve, 3.5) == 1.0  # the cheapest already matches
    assert abs(rep.matched_cost(curve, 2.5) - np.exp(0.5 * np.log(2.0))) < 1e-12  # halfway from 4 to 8 steps
    assert abs(rep.matched_cost(curve, 1.5) - np.exp(np.log(2.0) + 0.5 * (np.log(8.0) - np.log(2.0)))) < 1e-12
    assert rep.matched_cost(curve, 0.5) is None  # never


def fake_cell(kind, steps, nll, sec, judges, k=1, form="", energy="", mdlm="long", n=64, seed=0):
    rng = np.random.default_rng(seed)
    c = se.cell(kind, mdlm, steps, k, 1.0 if kind == "edlm" else 0.0, form, 1.0 if form else 0.0, energy)
    scores = [[float(v * 10), 10] for v in nll + 0.3 * rng.standard_normal(n)]
    tot = sum(s[0] for s in scores) / sum(s[1] for s in scores)
    c.update(num=n, entropy=2.6, seconds_per_sample=sec, mean_ess=1.5,
             judges={j: {"gen_nll": tot, "gen_nll_ci95": [tot - 0.1, tot + 0.1], "scores": scores} for j in judges})
    return c


def test_analysis_compares_at_equal_steps_and_counts_the_energys_time():
    both = ("smollm2-135m", "gemma3-270m")
    cells = [fake_cell("mdlm", s, v, 0.01 * s, both, seed=s) for s, v in ((4, 9.0), (8, 8.9), (16, 8.8), (32, 8.7))]
    cells.append(fake_cell("edlm", 8, 8.5, 0.5, ("gemma3-270m",), k=4, form="product", energy="smollm2-135m", seed=9))
    cells.append(fake_cell("data", 0, 7.0, 0.0, both, mdlm=""))
    res = {"corpus": "wiki-char", "cells": {se.key(c): c for c in cells}}
    an = rep.analyse(res)
    rows = an["gemma3-270m"]["by_mdlm"]["long"]["edlm"]
    assert len(rows) == 1 and not an["smollm2-135m"]["by_mdlm"]["long"]["edlm"]  # never judged by its energy
    r = rows[0]
    assert r["diff_vs_mdlm"] < -0.2 and r["diff_ci"][1] < 0
    assert r["speedup"] is None  # better than MDLM at any step count here
    assert "data" in an["gemma3-270m"]["baselines"]
    assert "| smollm2-135m | product |" in rep.markdown(res, an)


def test_no_plan_judges_an_edlm_cell_with_its_energy():
    for name in ("cpu", "gpu"):
        for corpus in ("wiki-char", "prose-bpe"):
            cells = se.plan(name, corpus)
            assert len({se.key(c) for c in cells}) == len(cells)
            assert all(c["energy"] in se.LMS for c in cells if c["kind"] in ("edlm", "lm"))
