"""No pickle runs code when a run folder is read: a shared run whose rng.pt or optim.pt would execute code on
unpickling is refused WITHOUT executing it (even when its hashes were forged to match); an older run folder
with a plain rng.pt still resumes exactly (and one that lost its EMA weights is refused, not sampled raw)."""

import hashlib
import json
import os
import shutil
from dataclasses import replace

import pytest
import torch

from conftest import micro_configs
from edlm.api.trainer import train_run as train
from edlm.errors import EdlmError
from faultlib import assert_one_clear_error, cli, latest_dir, loss_rows


class Payload:
    """Unpickling this calls os.mkdir(marker): proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.fixture(scope="module")
def base(synthetic_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("pickle")
    m, t = micro_configs(max_steps=4, save_every=2)
    train(t, m, root / "ref", quiet=True)
    train(replace(t, max_steps=2), m, root / "run", quiet=True)
    return root


def _as_legacy(run):
    """Turn the latest checkpoint into the format before this change: rng.pt (a pickled dict of tensors), no
    file list in state.json, no state hash in latest.json."""
    from safetensors.torch import load_file

    d = latest_dir(run)
    flat = load_file(str(d / "rng.safetensors"))
    (d / "rng.safetensors").unlink()
    torch.save({"torch": flat["torch"], "noise": flat["noise"]}, d / "rng.pt")
    state = json.loads((d / "state.json").read_text())
    for k in ("files", "format", "identity"):
        state.pop(k)
    (d / "state.json").write_text(json.dumps(state))
    (run / "latest.json").write_text(json.dumps({"step": state["step"], "dir": f"checkpoints/{d.name}"}))
    return d


def _forge_hashes(run, name):
    """What an attacker who edits the whole folder can do: make state.json and latest.json match the file."""
    d = latest_dir(run)
    state = json.loads((d / "state.json").read_text())
    data = (d / name).read_bytes()
    state["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (d / "state.json").write_text(json.dumps(state))
    sha = hashlib.sha256((d / "state.json").read_bytes()).hexdigest()
    (run / "latest.json").write_text(json.dumps({"step": state["step"], "dir": f"checkpoints/{d.name}",
                                                 "state_sha256": sha}))


@pytest.fixture
def run(base, tmp_path):
    shutil.copytree(base / "run", tmp_path / "run")
    return tmp_path / "run"


def test_old_run_with_plain_rng_pt_still_resumes_bit_identically(base, run):
    _as_legacy(run)
    m, t = micro_configs(max_steps=4, save_every=2)
    train(t, m, run, resume=True, max_steps=4, quiet=True)
    assert loss_rows(run) == loss_rows(base / "ref")
    assert (latest_dir(run) / "rng.safetensors").exists()  # new saves use the new format


def test_malicious_rng_pt_in_an_old_format_run_is_refused_without_running(run, tmp_path, capsys):
    d = _as_legacy(run)
    marker = tmp_path / "PWNED"
    torch.save({"torch": torch.get_rng_state(), "noise": Payload(str(marker))}, d / "rng.pt")
    rc, err = cli(capsys, ["train", "--out", run, "--resume", "--max_steps", "4", "--quiet"])
    assert_one_clear_error(rc, err, "refusing to load", "rng.pt", "could run code")
    assert not marker.exists()


@pytest.mark.parametrize("name", ["optim.pt", "rng.safetensors"])
def test_malicious_file_with_forged_hashes_is_refused_without_running(run, tmp_path, capsys, name):
    marker = tmp_path / "PWNED"
    d = latest_dir(run)
    if name == "optim.pt":
        osd = torch.load(d / "optim.pt", weights_only=True)
        osd["param_groups"][0]["evil"] = Payload(str(marker))
        torch.save(osd, d / "optim.pt")
    else:  # a pickle where a safetensors file should be
        torch.save({"torch": Payload(str(marker))}, d / "rng.safetensors")
    _forge_hashes(run, name)
    rc, err = cli(capsys, ["train", "--out", run, "--resume", "--max_steps", "4", "--quiet"])
    assert rc == 2 and len(err.splitlines()) == 1 and name in err, err
    assert not marker.exists()


def test_library_refusal_is_an_edlm_error(run, tmp_path):
    d = _as_legacy(run)
    torch.save({"torch": Payload(str(tmp_path / "x"))}, d / "rng.pt")
    m, t = micro_configs(max_steps=4, save_every=2)
    with pytest.raises(EdlmError, match="refusing to load"):
        train(t, m, run, resume=True, quiet=True)
    assert not (tmp_path / "x").exists()


def test_old_format_run_that_lost_its_ema_is_an_error_for_sample(run, tmp_path, capsys):
    d = _as_legacy(run)
    (d / "ema.safetensors").unlink()
    rc, err = cli(capsys, ["sample", "--ckpt", run, "--out", tmp_path / "s.jsonl", "--num", "1", "--steps", "2"])
    assert_one_clear_error(rc, err, "missing ema.safetensors")
