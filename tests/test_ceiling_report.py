"""The ceiling report's cost in network forwards (issue 18): a cell sampled in several batches must not count
the denoiser's steps once per batch (prose-bpe's sweep samples 256 sequences in batches of 128)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import ceiling_report  # noqa: E402


def test_forwards_per_sample_do_not_scale_with_the_number_of_batches():
    one = {"steps_run": 16, "num": 256, "batch": 256, "candidates_per_sample": 128.0}
    two = {**one, "steps_run": 32, "batch": 128}  # the same 16-step sampler, run as two batches
    three = {**one, "steps_run": 48, "num": 300, "batch": 128}  # a short last batch still runs every step
    assert ceiling_report.forwards(one) == ceiling_report.forwards(two) == ceiling_report.forwards(three) == 144.0
    assert ceiling_report.forwards({"steps_run": 16, "num": 256, "batch": 256}) == 16.0  # no energy
