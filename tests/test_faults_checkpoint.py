"""Damaged run folders: every checkpoint/run file, damaged every way, under resume, sample and eval, gives ONE
clear error (exit 2, names the file and the way out) and changes nothing; following the advice works."""

import json
import shutil

import pytest

from faultlib import MICRO, assert_one_clear_error, cli, damage, latest_dir, loss_rows, snapshot


@pytest.fixture(scope="module")
def base(synthetic_data, tmp_path_factory):
    """A micro MDLM run with checkpoints at steps 2 and 4, and the same run trained straight to 6."""
    root = tmp_path_factory.mktemp("faults")
    from edlm.cli import main

    assert main(["train", "--out", str(root / "run"), *MICRO, "--max_steps", "4", "--save_every", "2"]) == 0
    assert main(["train", "--out", str(root / "ref"), *MICRO, "--max_steps", "6", "--save_every", "2"]) == 0
    return root


@pytest.fixture
def run(base, tmp_path):
    r = tmp_path / "run"
    shutil.copytree(base / "run", r)
    return r


RESUME = ["train", "--resume", "--max_steps", "6", "--quiet", "--out"]
CKPT_FILES = ["model.safetensors", "ema.safetensors", "optim.pt", "rng.safetensors", "state.json"]


@pytest.mark.parametrize("how", ["missing", "truncated", "flipped"])
@pytest.mark.parametrize("name", CKPT_FILES)
def test_resume_refuses_a_damaged_checkpoint_file_with_one_error(run, capsys, name, how):
    damage(latest_dir(run) / name, how)
    before = snapshot(run)
    rc, err = cli(capsys, [*RESUME, run])
    assert_one_clear_error(rc, err, name, "step_0000002")  # names the file and the checkpoint to fall back to
    assert snapshot(run) == before  # nothing written: metrics, run.json, checkpoints untouched, no lock left


@pytest.mark.parametrize("how", ["missing", "truncated", "flipped"])
@pytest.mark.parametrize("name", ["ema.safetensors", "state.json"])
@pytest.mark.parametrize("command", ["sample", "eval"])
def test_sample_and_eval_refuse_a_damaged_checkpoint(run, tmp_path, capsys, name, how, command):
    damage(latest_dir(run) / name, how)
    sample = ["sample", "--ckpt", run, "--num", "2", "--steps", "2", "--out", tmp_path / "s.jsonl"]
    argv = sample if command == "sample" else ["eval", "nelbo", "--ckpt", run, "--max-blocks", "2"]
    rc, err = cli(capsys, argv)
    assert_one_clear_error(rc, err, name)
    assert not (tmp_path / "s.jsonl").exists() and not (tmp_path / "s.jsonl.partial").exists()


def test_missing_ema_is_an_error_not_a_quiet_switch_to_raw_weights(run, tmp_path, capsys):
    (latest_dir(run) / "ema.safetensors").unlink()
    rc, err = cli(capsys, ["sample", "--ckpt", run, "--out", tmp_path / "s.jsonl", "--num", "1", "--steps", "2"])
    assert_one_clear_error(rc, err, "missing ema.safetensors")


def test_missing_optimizer_state_is_an_error_not_a_fresh_adam(run, capsys):
    (latest_dir(run) / "optim.pt").unlink()
    rc, err = cli(capsys, [*RESUME, run])
    assert_one_clear_error(rc, err, "missing optim.pt")


def test_following_the_damaged_checkpoint_advice_resumes_from_the_previous_one(base, run, tmp_path, capsys):
    damage(latest_dir(run) / "optim.pt", "truncated")
    rc, err = cli(capsys, [*RESUME, run])
    assert_one_clear_error(rc, err, "move step_0000004 and latest.json")
    aside = tmp_path / "aside"
    aside.mkdir()
    shutil.move(run / "checkpoints" / "step_0000004", aside)
    shutil.move(run / "latest.json", aside)
    rc, err = cli(capsys, [*RESUME, run])
    assert rc == 0, err
    assert loss_rows(run) == loss_rows(base / "ref")  # steps 3-4 replayed, bit-identical, not duplicated


@pytest.mark.parametrize("how", ["garbage", "empty-json", "truncated"])
def test_corrupt_latest_json_names_the_checkpoint_a_fix_falls_back_to(base, run, capsys, how):
    damage(run / "latest.json", how)
    rc, err = cli(capsys, [*RESUME, run])
    assert_one_clear_error(rc, err, "latest.json is corrupt", "checkpoints/step_0000004")
    (run / "latest.json").unlink()  # what the error says to do (move it out)
    rc, err = cli(capsys, [*RESUME, run])
    assert rc == 0, err
    assert loss_rows(run) == loss_rows(base / "ref")  # resumed from step 4, not restarted from zero


def test_deleted_latest_json_resumes_from_newest_checkpoint_not_from_zero(base, run, capsys):
    (run / "latest.json").unlink()
    rc, err = cli(capsys, [*RESUME, run])
    assert rc == 0, err
    assert loss_rows(run) == loss_rows(base / "ref")


def test_latest_json_naming_a_missing_folder_is_one_error(run, capsys):
    (run / "latest.json").write_text(json.dumps({"step": 9, "dir": "checkpoints/step_0000009"}))
    rc, err = cli(capsys, [*RESUME, run])
    assert_one_clear_error(rc, err, "step_0000009", "does not exist")


@pytest.mark.parametrize("how", ["missing", "garbage", "empty-json"])
@pytest.mark.parametrize("command", ["resume", "sample"])
def test_damaged_run_json_is_one_error(run, tmp_path, capsys, how, command):
    damage(run / "run.json", how)
    before = snapshot(run)
    argv = [*RESUME, run] if command == "resume" else ["sample", "--ckpt", run, "--out", tmp_path / "s.jsonl"]
    rc, err = cli(capsys, argv)
    assert_one_clear_error(rc, err, "run.json")
    assert snapshot(run) == before  # resume did NOT build a fresh run from the preset


def test_edited_run_json_model_config_is_caught_against_the_checkpoint(run, tmp_path, capsys):
    meta = json.loads((run / "run.json").read_text())
    meta["model"]["n_layers"] = 3
    (run / "run.json").write_text(json.dumps(meta))
    for argv in ([*RESUME, run], ["sample", "--ckpt", run, "--out", tmp_path / "s.jsonl"]):
        rc, err = cli(capsys, argv)
        assert_one_clear_error(rc, err, "run.json", "no longer matches")


def test_damaged_middle_metrics_row_is_one_error(run, capsys):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines[1] = lines[1][:10]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    rc, err = cli(capsys, [*RESUME, run])
    assert_one_clear_error(rc, err, "metrics.jsonl line 2")


def test_all_checkpoints_damaged_and_no_latest_is_an_error_not_a_restart(run, capsys):
    (run / "latest.json").unlink()
    for d in (run / "checkpoints").glob("step_*"):
        damage(d / "model.safetensors", "flipped")
    before = snapshot(run)
    rc, err = cli(capsys, [*RESUME, run])
    assert_one_clear_error(rc, err, "none of its checkpoint folders is complete")
    assert snapshot(run) == before


def test_state_json_with_a_malformed_file_list_is_one_error(run, capsys):
    # no latest.json, so nothing vouches for state.json: its own shape is checked
    (run / "latest.json").unlink()
    d = run / "checkpoints" / "step_0000004"
    state = json.loads((d / "state.json").read_text())
    state["files"] = ["model.safetensors"]
    (d / "state.json").write_text(json.dumps(state))
    (run / "checkpoints" / "step_0000002").rename(run / "elsewhere")
    rc, err = cli(capsys, [*RESUME, run])
    assert_one_clear_error(rc, err, "none of its checkpoint folders is complete")
