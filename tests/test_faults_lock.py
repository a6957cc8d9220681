"""One training per run folder: a second trainer on a live run gets one clear error naming the holder; a lock
left by a killed trainer (SIGKILL) or a dead pid is taken over, and the resumed run has no duplicate rows."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edlm.runs.lock import RunLock
from faultlib import MICRO, assert_one_clear_error, cli, snapshot


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_second_lock_on_one_folder_is_refused_until_released(tmp_path):
    first = RunLock(tmp_path).acquire()
    with pytest.raises(Exception, match=f"in use by another training \\(pid {os.getpid()} on this host"):
        RunLock(tmp_path).acquire()
    first.release()
    RunLock(tmp_path).acquire().release()
    assert not (tmp_path / "train.lock").exists()


def test_stale_lock_of_a_dead_pid_is_taken_over(tmp_path):
    (tmp_path / "train.lock").write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))
    with RunLock(tmp_path) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()


def test_without_flock_the_pid_and_host_decide(tmp_path, monkeypatch):
    import fcntl

    def no_flock(*a):
        raise OSError(38, "flock not supported")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    (tmp_path / "train.lock").write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))
    RunLock(tmp_path).acquire().release()  # dead pid on this host: stale
    (tmp_path / "train.lock").write_text(json.dumps({"pid": 1, "host": "another-host"}))
    with pytest.raises(Exception, match="pid 1 on host another-host"):
        RunLock(tmp_path).acquire()


def test_two_trainers_on_one_run_then_sigkill_and_resume(synthetic_data, tmp_path, capsys):
    run = tmp_path / "r"
    import edlm

    env = {**os.environ, "EDLM_DATA": str(synthetic_data), "EDLM_NO_PROGRESS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(edlm.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    first = subprocess.Popen([sys.executable, "-m", "edlm", "train", "--out", str(run), *MICRO,
                              "--max_steps", "100000", "--save_every", "3"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (run / "latest.json").exists():
            assert first.poll() is None and time.time() < deadline, "the first trainer did not save"
            time.sleep(0.1)
        for argv in (["train", "--out", run, "--resume", "--quiet"], ["train", "--out", run, *MICRO]):
            rc, err = cli(capsys, argv)
            assert_one_clear_error(rc, err, "in use by another training", f"pid {first.pid} on this host")
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert (run / "train.lock").exists()  # left by the kill: stale, since its flock died with the process
    step = json.loads((run / "latest.json").read_text())["step"]
    rc, err = cli(capsys, ["train", "--out", run, "--resume", "--max_steps", step + 2, "--quiet"])
    assert rc == 0, err
    steps = [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert steps == list(range(1, step + 3))
    assert not (run / "train.lock").exists()


def test_refused_second_trainer_changes_nothing(synthetic_data, tmp_path, capsys):
    run = tmp_path / "r"
    assert cli(capsys, ["train", "--out", run, *MICRO, "--max_steps", "2"])[0] == 0
    before = snapshot(run)
    with RunLock(run):  # as if a training were running
        rc, err = cli(capsys, ["train", "--out", run, "--resume", "--max_steps", "4", "--quiet"])
        assert_one_clear_error(rc, err, "in use by another training")
        assert {k: v for k, v in snapshot(run).items() if k != "train.lock"} == before
