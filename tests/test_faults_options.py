"""Every bad option gets one clear error naming the option (exit 2) before any work, and leaves nothing behind."""

import json
import shutil

import pytest

from faultlib import MICRO, as_unbound, assert_one_clear_error, cli, snapshot


@pytest.fixture(scope="module")
def runs(synthetic_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("opt-runs")
    from edlm.cli import main

    for obj in ("mdlm", "ar"):
        assert main(["train", "--objective", obj, "--out", str(root / obj), *MICRO, "--max_steps", "2"]) == 0
    return root


def _sample(runs, tmp_path, *extra):
    return ["sample", "--ckpt", runs / "mdlm", "--out", tmp_path / "s.jsonl", "--num", "2", "--steps", "2", *extra]


SAMPLE_CASES = [
    (["--length", "-5"], "--length must be an integer >= 1"),
    (["--length", "0"], "--length must be an integer >= 1"),
    (["--temperature", "nan"], "--temperature must be a finite number"),
    (["--temperature", "inf"], "--temperature must be a finite number"),
    (["--temperature", "0"], "--temperature must be a finite number with 0 < --temperature"),
    (["--num", "0"], "--num must be an integer >= 1"),
    (["--batch-size", "0"], "--batch-size must be an integer >= 1"),
    (["--k", "0"], "--k must be an integer >= 1"),
    (["--steps", "-1"], "--steps must be an integer >= 1"),
    (["--prefix", "a!b"], "--prefix 'a!b': character '!' is not in the synthetic alphabet"),
    (["--prefix", "é"], "--prefix 'é': character 'é'"),
]


@pytest.mark.parametrize("extra,msg", SAMPLE_CASES, ids=[" ".join(c[0]) for c in SAMPLE_CASES])
def test_bad_sample_option_is_one_error_and_writes_nothing(runs, tmp_path, capsys, extra, msg):
    rc, err = cli(capsys, _sample(runs, tmp_path, *extra))
    assert_one_clear_error(rc, err, msg)
    assert list(tmp_path.iterdir()) == []


def test_cuda_device_without_cuda_is_one_error_and_writes_nothing(runs, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    rc, err = cli(capsys, _sample(runs, tmp_path, "--device", "cuda"))  # was torch's AssertionError traceback
    assert_one_clear_error(rc, err, "device 'cuda': this machine has no CUDA device")
    assert list(tmp_path.iterdir()) == []


def test_sample_out_that_is_a_folder_is_refused_before_sampling(runs, tmp_path, capsys):
    (tmp_path / "d").mkdir()
    rc, err = cli(capsys, ["sample", "--ckpt", runs / "mdlm", "--out", tmp_path / "d", "--num", "2"])
    assert_one_clear_error(rc, err, "--out", "is a folder")


def test_sample_out_under_a_file_is_refused_before_sampling(runs, tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    rc, err = cli(capsys, ["sample", "--ckpt", runs / "mdlm", "--out", tmp_path / "f" / "s.jsonl"])
    assert_one_clear_error(rc, err, "--out", "is not a folder")


def test_json_out_that_is_a_folder_is_refused_before_work(runs, tmp_path, capsys):
    rc, err = cli(capsys, ["eval", "nelbo", "--ckpt", runs / "mdlm", "--json-out", tmp_path])
    assert_one_clear_error(rc, err, "--json-out", "is a folder")


EVAL_CASES = [
    (["--t-samples", "0"], "--t-samples must be an integer >= 1"),
    (["--max-blocks", "0"], "--max-blocks must be an integer >= 1"),
    (["--batch-size", "0"], "--batch-size must be an integer >= 1"),
    (["--logz-samples", "1"], "--logz-samples must be >= 2"),
]


@pytest.mark.parametrize("extra,msg", EVAL_CASES, ids=[" ".join(c[0]) for c in EVAL_CASES])
def test_bad_eval_option_is_one_error(runs, capsys, extra, msg):
    rc, err = cli(capsys, ["eval", "nelbo", "--ckpt", runs / "mdlm", *extra])
    assert_one_clear_error(rc, err, msg)


TRAIN_CASES = [
    (["--save_every", "0"], "--save-every must be an integer >= 1"),
    (["--log_every", "0"], "--log-every must be an integer >= 1"),
    (["--batch_size", "0"], "--batch-size must be an integer >= 1"),
    (["--max_steps", "0"], "--max-steps must be an integer >= 1"),
    (["--lr", "-1"], "--lr must be a finite number with 0 < --lr"),
    (["--lr", "nan"], "--lr must be a finite number"),
    (["--lr", "inf"], "--lr must be a finite number"),
    (["--seq_len", "0"], "--seq-len must be an integer >= 1"),
    (["--grad_clip", "-1"], "--grad-clip must be a finite number with 0 <= --grad-clip"),
    (["--ema", "1"], "--ema must be a finite number with 0 <= --ema < 1"),
    (["--betas", "0.9", "1.5"], "--betas must be a finite number with 0 <= --betas < 1"),
    (["--d_model", "30", "--n_heads", "4"], "--d-model 30 must be a multiple of --n-heads 4"),
    (["--diverge_factor", "0.5"], "--diverge-factor (or 0 = off) must be a finite number with 1 <"),
]


@pytest.mark.parametrize("extra,msg", TRAIN_CASES, ids=[" ".join(c[0]) for c in TRAIN_CASES])
def test_bad_train_option_is_one_error_and_creates_no_folder(synthetic_data, tmp_path, capsys, extra, msg):
    rc, err = cli(capsys, ["train", "--out", tmp_path / "r", *MICRO, *extra])
    assert_one_clear_error(rc, err, msg)
    assert not (tmp_path / "r").exists()


def test_train_out_that_is_a_file_is_refused(synthetic_data, tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    rc, err = cli(capsys, ["train", "--out", tmp_path / "f", *MICRO])
    assert_one_clear_error(rc, err, "--out", "is a file")


def test_train_failing_after_mkdir_leaves_no_folder(synthetic_data, tmp_path, capsys):
    rc, err = cli(capsys, ["train", "--out", tmp_path / "r", "--objective", "nce", *MICRO])
    assert_one_clear_error(rc, err, "needs --diffusion")
    assert not (tmp_path / "r").exists()


def test_bad_value_given_on_resume_is_refused_and_run_is_unchanged(runs, tmp_path, capsys):
    run = tmp_path / "r"
    shutil.copytree(runs / "mdlm", run)
    before = snapshot(run)
    rc, err = cli(capsys, ["train", "--out", run, "--resume", "--save_every", "0", "--quiet"])
    assert_one_clear_error(rc, err, "--save-every must be an integer >= 1")
    assert "saved in" not in err  # the user gave it: not blamed on run.json
    assert snapshot(run) == before


def test_a_saved_zero_save_every_can_be_overridden_on_resume(runs, tmp_path, capsys):
    # An older run folder holding save_every 0 (saved before validation existed, so also before checkpoints
    # recorded all of run.json): resume says how to fix it, and the fix (giving the option) works.
    run = tmp_path / "r"
    shutil.copytree(runs / "mdlm", run)
    as_unbound(run)
    meta = json.loads((run / "run.json").read_text())
    meta["train"]["save_every"] = 0
    (run / "run.json").write_text(json.dumps(meta))
    rc, err = cli(capsys, ["train", "--out", run, "--resume", "--max_steps", "3", "--quiet"])
    assert_one_clear_error(rc, err, "--save-every must be an integer >= 1", "pass --save-every to override it")
    rc, err = cli(capsys, ["train", "--out", run, "--resume", "--max_steps", "3", "--save_every", "1", "--quiet"])
    assert rc == 0, err
    assert json.loads((run / "run.json").read_text())["train"]["save_every"] == 1


def test_run_defining_option_cannot_change_on_resume(runs, tmp_path, capsys):
    run = tmp_path / "r"
    shutil.copytree(runs / "mdlm", run)
    rc, err = cli(capsys, ["train", "--out", run, "--resume", "--seq_len", "8", "--quiet"])
    assert_one_clear_error(rc, err, "--seq-len cannot change on --resume")


BENCH_CASES = [
    (["--num", "0"], "--num must be an integer >= 1"),
    (["--batch-size", "0"], "--batch-size must be an integer >= 1"),
    (["--steps", "0"], "--steps must be an integer >= 1"),
    (["--k", "0,2"], "--k must be an integer >= 1"),
]


@pytest.mark.parametrize("extra,msg", BENCH_CASES, ids=[" ".join(c[0]) for c in BENCH_CASES])
def test_bad_bench_option_is_one_error_and_leaves_no_folder(runs, tmp_path, capsys, extra, msg):
    rc, err = cli(capsys, ["bench", "--mdlm", runs / "mdlm", "--out", tmp_path / "b", "--quiet", *extra])
    assert_one_clear_error(rc, err, msg)
    assert not (tmp_path / "b").exists()


def test_bench_refuses_an_ar_run_given_as_mdlm(runs, tmp_path, capsys):
    rc, err = cli(capsys, ["bench", "--mdlm", runs / "ar", "--steps", "2", "--num", "2", "--out", tmp_path / "b"])
    assert_one_clear_error(rc, err, "--mdlm", "is a 'ar' run")
    assert not (tmp_path / "b").exists()


def test_bad_evaluator_fails_before_bench_creates_anything(runs, tmp_path, capsys):
    rc, err = cli(capsys, ["bench", "--mdlm", runs / "mdlm", "--steps", "2", "--num", "2", "--quiet",
                           "--evaluator", "edlm:" + str(tmp_path / "nowhere"), "--out", tmp_path / "b"])
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert not (tmp_path / "b").exists()


def test_bench_failing_mid_sweep_leaves_no_empty_samples_folder(runs, tmp_path, capsys, monkeypatch):
    import edlm.bench
    from edlm.errors import EdlmError

    def boom(*a, **k):
        raise EdlmError("injected failure in the first setting")

    monkeypatch.setattr(edlm.bench, "run_setting", boom)
    rc, err = cli(capsys, ["bench", "--mdlm", runs / "mdlm", "--steps", "2", "--num", "2", "--quiet",
                           "--out", tmp_path / "b"])
    assert_one_clear_error(rc, err, "injected failure")
    assert not (tmp_path / "b").exists()
