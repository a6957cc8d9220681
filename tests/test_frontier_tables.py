"""The frontier study page's tables are generated from the results JSONs (benchmarks/frontier_tables.py) and
stay in step with them."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from frontier_tables import fill, main  # noqa: E402

from edlm.eval.sweep_report import render_matched_table  # noqa: E402

REP = {"curves": {"mdlm 4 steps": [], "edlm-ar 4 steps k=8": []}, "level": 3.0,
       "data": {"gen_nll": 1.0, "entropy_nats": 3.0},
       "cells": [{"curve": "mdlm 4 steps", "knob": "T=1", "entropy_nats": 3.1, "gen_nll": 4.5},
                 {"curve": "edlm-ar 4 steps k=8", "knob": "T=1", "entropy_nats": 3.1, "gen_nll": 4.1}],
       "matched": [{"label": "mdlm 4 steps", "gen_nll": 4.4, "gen_nll_ci95": [4.3, 4.5]},
                   {"label": "edlm-ar 4 steps k=8", "gen_nll": 4.0, "gen_nll_ci95": [3.9, 4.1]}],
       "pairs": [{"a": "mdlm 4 steps", "b": "edlm-ar 4 steps k=8",
                  "at_level": {"diff": 0.4, "ci95": [0.3, 0.5], "level": 3.0}}]}


def test_fill_renders_each_marked_block_and_leaves_the_rest(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps({"report": REP}))
    page = "intro\n<!-- frontier-table: r.json -->\nSTALE\n<!-- /frontier-table -->\nafter\n"
    out = fill(page, root=tmp_path)
    assert "STALE" not in out and out.startswith("intro\n") and out.endswith("after\n")
    assert render_matched_table(REP) in out
    assert "-0.400 [-0.500, -0.300]" in out  # edlm-ar minus mdlm, signed from the pair
    assert fill(out, root=tmp_path) == out  # idempotent


def test_the_study_page_matches_its_results_files():
    assert main([str(ROOT / "docs" / "studies" / "frontiers.md"), "--check"]) == 0
