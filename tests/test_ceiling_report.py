"""The ceiling report's cost in network forwards (issue 18): a cell sampled in several batches must not count
the denoiser's steps once per batch (prose-bpe's sweep samples 256 sequences in batches of 128)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import ceiling_report  # noqa: E402


def test_forwards_per_sample_do_not_scale_with_the_number_of_batches():
    one = {"steps_run": 16, "num": 256, "batch": 256, "candidates_per_sample": 128.0}
    two = {**one, "steps_run": 32, "batch": 128}  # the same 16-step sampler, run as two batches
    three = {**one, "steps_run": 48, "num": 300, "batch": 128}  # a short last batch still runs every step
    assert ceiling_report.forwards(one) == ceiling_report.forwards(two) == ceiling_report.forwards(three) == 144.0
    assert ceiling_report.forwards({"steps_run": 16, "num": 256, "batch": 256}) == 16.0  # no energy


def test_multiplicity_counts_energy_cells_against_mdlm_only():
    def e(family, lo, hi, against="mdlm", beats=False, loses=False):
        return {"family": family, "against": against, "diff_ci": [lo, hi], "beats_mdlm": beats, "loses_to_mdlm": loses}

    rows = [e("edlm-ar k=8 w=1", -0.2, -0.1, beats=True), e("edlm-ar k=2 w=0.2", -0.1, 0.05),
            e("edlm-nce k=8 w=1", 0.01, 0.1), e("confidence", -3.0, -2.0, beats=True),  # not an energy sampler
            e("confidence+edlm-ar k=8 w=1", -0.1, -0.05, against="confidence", beats=True)]  # not against MDLM
    m = ceiling_report.multiplicity(rows)
    assert m.pop("expected_by_chance") == pytest.approx(0.15)
    assert m == {"comparisons": 3, "diff_excludes_0_lower": 1, "diff_excludes_0_higher": 1, "clear_of_mdlm_lower": 1,
                 "clear_of_mdlm_higher": 0}
