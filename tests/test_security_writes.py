"""Writes stay where they belong: edlm never writes through a symbolic link or over one of a command's inputs,
and a full disk, a read-only data cache, a folder where a file belongs (or a file where a folder belongs), an
empty path and two samplers racing to one --out each end in one clear error (exit 2, no traceback) or in
correct work, with no half-written file left and no existing file damaged.

The full-disk and read-only cases run the real CLI in a private mount namespace on a tiny tmpfs (skipped
where `unshare -m` + mount are not allowed); portable versions simulate ENOSPC by making os.write fail for
files under one folder.
"""

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from faultlib import MICRO, assert_one_clear_error, cli, snapshot


@pytest.fixture(scope="module")
def runs(synthetic_data, tmp_path_factory):
    """ROOT/mdlm, ROOT/ar (micro, 2 steps, a checkpoint at step 2) and ROOT/s.jsonl (2 samples)."""
    from edlm.cli import main

    root = tmp_path_factory.mktemp("write-runs")
    for obj in ("mdlm", "ar"):
        assert main(["train", "--objective", obj, "--out", str(root / obj), *MICRO, "--max_steps", "2"]) == 0
    assert main(["sample", "--ckpt", str(root / "mdlm"), "--out", str(root / "s.jsonl"), "--num", "2", "--steps",
                 "2", "--quiet"]) == 0
    return root


@pytest.fixture
def work(runs, tmp_path):
    """Private copies (tmp/mdlm, tmp/ar, tmp/s.jsonl) a test may damage."""
    for name in ("mdlm", "ar"):
        shutil.copytree(runs / name, tmp_path / name)
    shutil.copy(runs / "s.jsonl", tmp_path / "s.jsonl")
    return tmp_path


def _env(data) -> dict:
    import edlm

    return {**os.environ, "EDLM_DATA": str(data), "EDLM_NO_PROGRESS": "1",
            "PYTHONPATH": os.pathsep.join([str(Path(edlm.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}


def _sample(run, out, *extra):
    return ["sample", "--ckpt", run, "--out", out, "--num", "2", "--steps", "2", "--quiet", *extra]


def _resume(run, steps=3):
    return ["train", "--out", run, "--resume", "--max_steps", str(steps), "--quiet"]


# --- nothing is written through a symbolic link ------------------------------------------------------------

def test_train_lock_that_is_a_link_is_refused_and_its_target_untouched(work, capsys):
    victim = work / "victim.txt"
    victim.write_text("precious\n")
    (work / "mdlm" / "train.lock").symlink_to(victim)
    before = snapshot(work / "mdlm")
    rc, err = cli(capsys, _resume(work / "mdlm"))
    assert_one_clear_error(rc, err, "train.lock is a symbolic link")
    assert victim.read_text() == "precious\n" and snapshot(work / "mdlm") == before


def test_run_lock_refuses_a_link_a_folder_and_a_hard_link(tmp_path):
    from edlm.errors import EdlmError
    from edlm.runs.lock import RunLock

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    for i, make in enumerate((lambda p: p.symlink_to(victim), lambda p: p.symlink_to(tmp_path / "nowhere"),
                              lambda p: p.mkdir(), lambda p: os.link(victim, p))):
        run = tmp_path / f"r{i}"
        run.mkdir()
        make(run / "train.lock")
        with pytest.raises(EdlmError, match="symbolic link|folder|hard link"):
            RunLock(run).acquire()
    assert victim.read_text() == "precious\n" and not (tmp_path / "nowhere").exists()


def test_metrics_log_that_is_a_link_is_refused(work, capsys):
    victim = work / "victim.jsonl"
    victim.write_text("precious\n")
    (work / "mdlm" / "metrics.jsonl").unlink()
    (work / "mdlm" / "metrics.jsonl").symlink_to(victim)
    rc, err = cli(capsys, _resume(work / "mdlm"))
    assert_one_clear_error(rc, err, "metrics.jsonl is a symbolic link")
    assert victim.read_text() == "precious\n"


def test_stale_checkpoint_link_is_removed_not_followed(work, capsys):
    """A link named like a crash's left-over temp folder (to a folder elsewhere) is removed, not emptied."""
    keep = work / "keep"
    keep.mkdir()
    (keep / "important.txt").write_text("precious\n")
    (work / "mdlm" / "checkpoints" / ".tmp-step_0000003").symlink_to(keep, target_is_directory=True)
    rc, err = cli(capsys, _resume(work / "mdlm"))
    assert rc == 0, err
    assert (keep / "important.txt").read_text() == "precious\n"
    assert json.loads((work / "mdlm" / "latest.json").read_text())["step"] == 3


def test_trace_and_plots_replace_a_link_never_its_target(work):
    import edlm
    from edlm.plots import plot_sweep

    victim = work / "victim.txt"
    victim.write_text("precious\n")
    trace = work / "trace.html"
    trace.symlink_to(victim)
    edlm.load(work / "mdlm").sample(num=1, steps=2, trace=trace)
    (work / "mdlm" / "curves.png").symlink_to(victim)
    edlm.plot_run(work / "mdlm")
    out = work / "sweep"
    out.mkdir()
    (out / ".quality_vs_steps.png.tmp.png").symlink_to(victim)  # the temp name plots used to write through
    plot_sweep([{"method": "mdlm", "steps": s, "k": 1, "gen_ppl": 5.0, "seconds": 0.1 * s, "entropy_nats": 3.0}
                for s in (2, 4)], out)
    assert victim.read_text() == "precious\n"
    assert not trace.is_symlink() and "<html" in trace.read_text()
    assert not (work / "mdlm" / "curves.png").is_symlink()


def test_outputs_named_by_a_link_replace_the_link(work, capsys):
    for name in ("o.jsonl", "j.json"):
        (work / f"victim-{name}").write_text("precious\n")
        (work / name).symlink_to(work / f"victim-{name}")
    rc, err = cli(capsys, [*_sample(work / "mdlm", work / "o.jsonl"), "--json-out", work / "j.json"])
    assert rc == 0, err
    assert {p.read_text() for p in work.glob("victim-*")} == {"precious\n"}
    assert not (work / "o.jsonl").is_symlink() and len((work / "o.jsonl").read_text().splitlines()) == 2
    assert json.loads((work / "j.json").read_text())["num"] == 2


def test_sample_partial_that_is_a_link_is_refused(work, capsys):
    (work / "o.jsonl.partial").symlink_to(work / "nowhere")
    rc, err = cli(capsys, _sample(work / "mdlm", work / "o.jsonl"))
    assert_one_clear_error(rc, err, "o.jsonl.partial is a symbolic link")
    assert not (work / "nowhere").exists() and not (work / "o.jsonl").exists()


# --- no output is an input ---------------------------------------------------------------------------------

def _link(w: Path, name: str, target: Path) -> Path:
    (w / name).symlink_to(target)
    return w / name


def _hard(w: Path, name: str, target: Path) -> Path:
    os.link(target, w / name)
    return w / name


OVERLAPS = {  # case -> (argv from the work folder w and the data cache d, words the error must hold)
    "sample --out RUN/run.json": (lambda w, d: _sample(w / "mdlm", w / "mdlm" / "run.json"),
                                  ["--out", "lies inside", "(--ckpt)", "outside"]),
    "sample --out RUN/../RUN/latest.json": (lambda w, d: _sample(w / "mdlm", w / "mdlm" / ".." / "mdlm" /
                                                                 "latest.json"), ["lies inside", "(--ckpt)"]),
    "sample --out LINK-to-RUN/run.json": (lambda w, d: _sample(w / "mdlm", _link(w, "l", w / "mdlm" / "run.json")),
                                          ["lies inside", "(--ckpt)"]),
    "sample --out RUN/new.jsonl": (lambda w, d: _sample(w / "mdlm", w / "mdlm" / "new.jsonl"), ["lies inside"]),
    "sample --trace RUN/t.html": (lambda w, d: [*_sample(w / "mdlm", w / "o.jsonl"), "--trace",
                                                w / "mdlm" / "t.html"], ["--trace", "lies inside"]),
    "sample --json-out RUN/metrics.jsonl": (lambda w, d: [*_sample(w / "mdlm", w / "o.jsonl"), "--json-out",
                                                          w / "mdlm" / "metrics.jsonl"], ["--json-out", "(--ckpt)"]),
    "sample --energy ar:AR --out AR/run.json": (lambda w, d: _sample(w / "mdlm", w / "ar" / "run.json", "--energy",
                                                                     f"ar:{w / 'ar'}"), ["(--energy)"]),
    "sample --out X --json-out X": (lambda w, d: [*_sample(w / "mdlm", w / "o.jsonl"), "--json-out",
                                                  w / "o.jsonl"], ["are the same path"]),
    "eval samples --json-out SAMPLES": (lambda w, d: ["eval", "samples", "--samples", w / "s.jsonl", "--evaluator",
                                                      "true", "--quiet", "--json-out", w / "s.jsonl"],
                                        ["(--samples)", "would destroy an input"]),
    "eval samples --json-out HARD-LINK-of-SAMPLES": (lambda w, d: ["eval", "samples", "--samples", w / "s.jsonl",
                                                                   "--evaluator", "true", "--quiet", "--json-out",
                                                                   _hard(w, "h.jsonl", w / "s.jsonl")],
                                                     ["(--samples)"]),
    "eval nelbo --json-out RUN/run.json": (lambda w, d: ["eval", "nelbo", "--ckpt", w / "mdlm", "--max-blocks", "2",
                                                         "--quiet", "--json-out", w / "mdlm" / "run.json"],
                                           ["(--ckpt)"]),
    "eval nelbo --json-out CORPUS/manifest.json": (lambda w, d: ["eval", "nelbo", "--ckpt", w / "mdlm", "--quiet",
                                                                 "--json-out", d / "synthetic" / "manifest.json"],
                                                   ["the run's corpus"]),
    "plot RUN --out RUN/metrics.jsonl": (lambda w, d: ["plot", w / "mdlm", "--out", w / "mdlm" / "metrics.jsonl"],
                                         ["(the run's metrics.jsonl)"]),
    "plot RUN --json-out RUN/latest.json": (lambda w, d: ["plot", w / "mdlm", "--json-out", w / "mdlm" /
                                                          "latest.json"], ["(the run's latest.json)"]),
    "bench --out RUN": (lambda w, d: ["bench", "--mdlm", w / "mdlm", "--steps", "2", "--num", "2", "--quiet",
                                      "--out", w / "mdlm"], ["(--mdlm)"]),
    "bench --out AR/bench": (lambda w, d: ["bench", "--mdlm", w / "mdlm", "--ar", w / "ar", "--steps", "2", "--num",
                                           "2", "--k", "2", "--quiet", "--out", w / "ar" / "bench"], ["(--ar)"]),
    "convert --out SRC/converted": (lambda w, d: ["convert", "--from", "mdlm-hf", "--src", w / "mdlm", "--out",
                                                  w / "mdlm" / "converted"], ["(--src)"]),
    "train nce --out DIFFUSION/nce": (lambda w, d: ["train", *MICRO, "--objective", "nce", "--diffusion",
                                                    w / "mdlm", "--out", w / "mdlm" / "nce"], ["(--diffusion)"]),
    "train --json-out OUT/summary.json": (lambda w, d: ["train", *MICRO, "--max_steps", "1", "--out", w / "new",
                                                        "--json-out", w / "new" / "summary.json"],
                                          ["which this command fills"]),
    "data prepare --json-out CORPUS/manifest.json": (lambda w, d: ["data", "prepare", "synthetic", "--json-out",
                                                                   d / "synthetic" / "manifest.json"],
                                                     ["(the corpus folder)"]),
    "demo --json-out OUT/x.json": (lambda w, d: ["demo", "--preset", "micro", "--mdlm-steps", "1", "--ar-steps",
                                                 "1", "--nce-steps", "1", "--steps", "1", "--num", "1", "--out",
                                                 w / "d", "--json-out", w / "d" / "x.json"],
                                   ["which this command fills"]),
    "sample --out ''": (lambda w, d: _sample(w / "mdlm", ""), ["--out is empty"]),
    "sample --json-out ''": (lambda w, d: [*_sample(w / "mdlm", w / "o.jsonl"), "--json-out", ""],
                             ["--json-out is empty"]),
    "train --out ''": (lambda w, d: ["train", *MICRO, "--max_steps", "1", "--out", ""], ["--out is empty"]),
    "bench --out ''": (lambda w, d: ["bench", "--mdlm", w / "mdlm", "--steps", "2", "--num", "2", "--quiet",
                                     "--out", ""], ["--out is empty"]),
}


@pytest.mark.parametrize("case", list(OVERLAPS))
def test_an_output_that_is_an_input_is_refused_before_any_work(case, work, synthetic_data, capsys, monkeypatch):
    monkeypatch.chdir(work)  # an empty path must not mean "here"
    argv, words = OVERLAPS[case]
    argv = argv(work, synthetic_data)
    before, cache = snapshot(work), snapshot(synthetic_data)
    rc, err = cli(capsys, argv)
    assert_one_clear_error(rc, err, *words)
    assert snapshot(work) == before and snapshot(synthetic_data) == cache


def test_plot_may_still_write_its_png_into_the_run(work, capsys):
    before = snapshot(work / "mdlm")
    assert cli(capsys, ["plot", work / "mdlm"])[0] == 0
    assert cli(capsys, ["plot", work / "mdlm", "--out", work / "mdlm" / "loss.png"])[0] == 0
    after = snapshot(work / "mdlm")
    assert {k: v for k, v in after.items() if k not in ("curves.png", "loss.png")} == before


def test_python_api_refuses_outputs_over_inputs(work):
    import edlm
    from edlm.errors import EdlmError
    from edlm.runs.convert import convert

    before = snapshot(work)
    run = edlm.load(work / "mdlm")
    with pytest.raises(EdlmError, match="`trace`.*lies inside"):
        run.sample(num=1, steps=2, trace=work / "mdlm" / "t.html")
    with pytest.raises(EdlmError, match="`trace`.*the energy run"):
        run.sample(num=1, steps=2, energy=edlm.ar_energy(work / "ar"), trace=work / "ar" / "t.html")
    with pytest.raises(EdlmError, match="`out`.*the run's metrics.jsonl"):
        edlm.plot_run(work / "mdlm", out=work / "mdlm" / "metrics.jsonl")
    with pytest.raises(EdlmError, match="`out`.*`diffusion`"):
        edlm.train("micro", out=work / "mdlm" / "nce", objective="nce", diffusion=str(work / "mdlm"))
    with pytest.raises(EdlmError, match="`out`.*`src`"):
        convert("mdlm-hf", work / "mdlm", work / "mdlm" / "converted")
    assert snapshot(work) == before


def test_check_outputs_sees_through_links_dots_and_hard_links(tmp_path):
    from edlm.errors import EdlmError
    from edlm.safe_io import check_outputs

    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text("{}")
    os.link(run / "run.json", tmp_path / "hard.json")
    (tmp_path / "soft").symlink_to(run)
    for out in (run / "run.json", tmp_path / "soft" / "x", run / ".." / "run" / "x", tmp_path / "hard.json"):
        with pytest.raises(EdlmError, match="which this command reads"):
            check_outputs({"--out": out}, {"--ckpt": run if out.name != "hard.json" else run / "run.json"})
    check_outputs({"--out": tmp_path / "o.jsonl", "--json-out": None}, {"--ckpt": run})  # fine


# --- a folder where a file belongs, a file where a folder belongs ------------------------------------------

def _make_folder(p: Path):
    if p.is_dir():
        shutil.rmtree(p)
    else:
        p.unlink()
    p.mkdir()
    (p / "x").write_text("kept\n")


def _make_file(p: Path):
    shutil.rmtree(p)
    p.write_text("kept\n")


SHAPES = {
    "train --resume, metrics.jsonl is a folder": ("metrics.jsonl", _make_folder, "train", "metrics.jsonl is a folder"),
    "train --resume, latest.json is a folder": ("latest.json", _make_folder, "train", "latest.json is a folder"),
    "train --resume, train.lock is a folder": ("train.lock", lambda p: p.mkdir(), "train", "train.lock is a folder"),
    "train --resume, checkpoints is a file": ("checkpoints", _make_file, "train", "checkpoints is a file"),
    "sample, run.json is a folder": ("run.json", _make_folder, "sample", "run.json is a folder"),
}


@pytest.mark.parametrize("case", list(SHAPES))
def test_wrong_kind_of_entry_in_a_run_is_one_clear_error(case, work, capsys):
    name, make, cmd, words = SHAPES[case]
    make(work / "mdlm" / name)
    before = snapshot(work)
    argv = _resume(work / "mdlm") if cmd == "train" else _sample(work / "mdlm", work / "o.jsonl")
    rc, err = cli(capsys, argv)
    assert_one_clear_error(rc, err, words)
    assert snapshot(work) == before


def test_data_cache_under_a_file_is_one_clear_error(tmp_path, capsys, monkeypatch):
    (tmp_path / "afile").write_text("kept\n")
    monkeypatch.setenv("EDLM_DATA", str(tmp_path / "afile" / "cache"))
    rc, err = cli(capsys, ["data", "prepare", "markov3"])
    assert_one_clear_error(rc, err, "the data cache", "$EDLM_DATA")
    assert (tmp_path / "afile").read_text() == "kept\n"


# --- a full disk (simulated: os.write fails under one folder) ----------------------------------------------

@pytest.fixture
def full_disk(tmp_path, monkeypatch):
    """tmp/full: a folder where every os.write fails with ENOSPC (the disk is full there)."""
    full = tmp_path / "full"
    full.mkdir()
    real = os.write

    def write(fd, data):
        try:
            where = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            where = ""
        if where.startswith(str(full)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)
    return full


def test_full_disk_while_sampling_leaves_the_old_output_and_no_partial(work, full_disk, capsys):
    (full_disk / "s.jsonl").write_text("old\n")
    (full_disk / "j.json").write_text("{\"old\": 1}\n")
    rc, err = cli(capsys, _sample(work / "mdlm", full_disk / "s.jsonl"))
    assert_one_clear_error(rc, err, "No space left on device", "free some space")
    rc, err = cli(capsys, [*_sample(work / "mdlm", work / "o.jsonl"), "--json-out", full_disk / "j.json"])
    assert_one_clear_error(rc, err, "j.json", "No space left on device")
    assert sorted(p.name for p in full_disk.iterdir()) == ["j.json", "s.jsonl"]  # no .partial, no temp file
    assert (full_disk / "s.jsonl").read_text() == "old\n" and (full_disk / "j.json").read_text() == "{\"old\": 1}\n"


def test_append_file_cuts_a_failed_write_back(tmp_path, monkeypatch):
    from edlm.errors import EdlmError
    from edlm.safe_io import AppendFile

    real = os.write
    f = AppendFile(tmp_path / "m.jsonl")
    f.write('{"step": 1}\n')

    def half(fd, data):  # writes a few bytes, then the disk is full
        if len(data) > 4:
            return real(fd, bytes(data)[:4])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", half)
    with pytest.raises(EdlmError, match="No space left"):
        f.write('{"step": 2}\n')
    f.close()
    assert (tmp_path / "m.jsonl").read_text() == '{"step": 1}\n'


def test_atomic_write_failing_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    from edlm.errors import EdlmError
    from edlm.safe_io import atomic_write_bytes

    (tmp_path / "a.json").write_text("old\n")
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    with pytest.raises(EdlmError, match="cannot write .*a.json"):
        atomic_write_bytes(tmp_path / "a.json", b"new\n")
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"] and (tmp_path / "a.json").read_text() == "old\n"


def test_full_disk_while_saving_a_checkpoint_keeps_the_last_one(work, capsys, monkeypatch):
    from edlm.runs import checkpoint

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint, "save_file", full)
    latest = (work / "mdlm" / "latest.json").read_text()
    ck = snapshot(work / "mdlm" / "checkpoints")
    rc, err = cli(capsys, _resume(work / "mdlm"))
    assert_one_clear_error(rc, err, "could not save step 3", "earlier checkpoint is intact")
    assert (work / "mdlm" / "latest.json").read_text() == latest and snapshot(work / "mdlm" / "checkpoints") == ck
    assert not list((work / "mdlm" / "checkpoints").glob(".tmp-*")) and not (work / "mdlm" / "train.lock").exists()


# --- the real thing: a tiny tmpfs in a private mount namespace ---------------------------------------------

DRIVER = """import hashlib, json, os, subprocess, sys
disk, argv = sys.argv[1], sys.argv[2:]
r = subprocess.run([sys.executable, "-m", "edlm", *argv], capture_output=True, text=True)
files = {os.path.relpath(os.path.join(d, f), disk): hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest()
         for d, _, fs in os.walk(disk) for f in fs}
print(json.dumps({"rc": r.returncode, "err": r.stderr, "files": files}))
"""


def _mount_ns(tmp_path, setup: str, argv, env, size="256k") -> dict:
    """Run `edlm argv` in tmp/disk, a fresh tmpfs of `size` (after the shell `setup` ran there); the mount lives
    only in this process's private mount namespace. -> {"rc", "err", "files": {relative path: sha256}}."""
    disk = tmp_path / "disk"
    disk.mkdir(parents=True)
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "mount", "-t", "tmpfs", "tmpfs",
                                                          str(disk)], capture_output=True).returncode != 0:
        pytest.skip("no private mount namespace here (needs unshare -m and the right to mount a tmpfs)")
    (tmp_path / "driver.py").write_text(DRIVER)
    script = (f"mount -t tmpfs -o size={size} tmpfs {disk} && cd {disk} && {setup} && "
              f'exec {sys.executable} {tmp_path / "driver.py"} {disk} "$@"')
    r = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", *map(str, argv)], capture_output=True,
                       text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.splitlines()[-1])


def _one_clear(res: dict, *words):
    assert_one_clear_error(res["rc"], "\n".join(ln for ln in res["err"].splitlines()
                                                if not ln.startswith("edlm: note:")), *words)


FILL = "echo old > s.jsonl && echo old > j.json && (head -c 1000000 /dev/zero > pad 2>/dev/null || true)"
FULL = {  # case -> (shell setup on the 256 KiB disk, argv from the work folder, words of the error, files left)
    "sample --out on a full disk": (FILL, lambda w: _sample(w / "mdlm", "s.jsonl", "--num", "64"),
                                    ["s.jsonl.partial", "No space left on device"], ["j.json", "pad", "s.jsonl"]),
    "--json-out on a full disk": (FILL, lambda w: [*_sample(w / "mdlm", w / "o.jsonl"), "--json-out", "j.json"],
                                  ["j.json", "No space left on device"], ["j.json", "pad", "s.jsonl"]),
    "train: checkpoint on a full disk": ("true", lambda w: ["train", *MICRO, "--max_steps", "2", "--out", "r"],
                                         ["could not save step 2", "No space left on device"],
                                         ["r/metrics.jsonl", "r/run.json"]),
    "data prepare on a full disk": ("true", lambda w: ["data", "prepare", "markov3", "--root", "."],
                                    ["free some space"], []),
}


@pytest.mark.parametrize("case", list(FULL))
def test_real_full_disk_is_one_error_and_leaves_no_half_file(case, work, synthetic_data, tmp_path):
    setup, argv, words, left = FULL[case]
    res = _mount_ns(tmp_path, setup, argv(work), _env(synthetic_data))
    _one_clear(res, *words)
    assert sorted(res["files"]) == left  # the old files as they were (below), no .partial/temp/lock/half corpus
    for name in set(left) & {"s.jsonl", "j.json"}:
        assert res["files"][name] == hashlib.sha256(b"old\n").hexdigest()


def test_real_read_only_data_cache(synthetic_data, tmp_path):
    env = {**_env("."), "EDLM_DATA": "."}
    res = _mount_ns(tmp_path / "a", "mount -o remount,ro .", ["data", "prepare", "markov3"], env)
    _one_clear(res, "the data cache", "$EDLM_DATA")
    # a cache that holds the corpus already serves it read-only: prepare is a cache hit, training reads it
    setup = f"cp -r {synthetic_data / 'synthetic'} . && mount -o remount,ro ."
    res = _mount_ns(tmp_path / "b", setup, ["data", "prepare", "synthetic"], env, size="16m")
    assert res["rc"] == 0, res["err"]


# --- two samplers, one --out ------------------------------------------------------------------------------

def _popen(argv, env):
    return subprocess.Popen([sys.executable, "-m", "edlm", *map(str, argv)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _rows_ok(out: Path, num: int) -> None:
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == num and all(len(r["ids"]) == 16 for r in rows)


def test_two_samplers_racing_to_one_out_never_mix(work, synthetic_data):
    env, out = _env(synthetic_data), work / "race.jsonl"
    argv = ["sample", "--ckpt", work / "mdlm", "--out", out, "--num", "200", "--batch-size", "10", "--steps", "8",
            "--quiet"]
    ps = [_popen([*argv, "--seed", str(s)], env) for s in (1, 2)]
    res = [(p.communicate(timeout=300)[1], p.returncode)[::-1] for p in ps]
    for rc, err in res:
        if rc != 0:
            assert_one_clear_error(rc, err, "another `edlm sample` is writing")
    assert any(rc == 0 for rc, _ in res)
    _rows_ok(out, 200)
    assert not (work / "race.jsonl.partial").exists()


def test_a_sampler_started_while_another_writes_refuses(work, synthetic_data):
    env, out = _env(synthetic_data), work / "race.jsonl"
    argv = ["sample", "--ckpt", work / "mdlm", "--out", out, "--batch-size", "10", "--steps", "8", "--quiet"]
    first = _popen([*argv, "--num", "100000"], env)
    try:
        deadline = time.time() + 120
        while not (work / "race.jsonl.partial").exists():
            assert first.poll() is None and time.time() < deadline
            time.sleep(0.05)
        second = subprocess.run([sys.executable, "-m", "edlm", *map(str, argv), "--num", "10"], env=env,
                                capture_output=True, text=True, timeout=300)
        assert_one_clear_error(second.returncode, second.stderr, "another `edlm sample` is writing",
                               "race.jsonl.partial is locked")
    finally:
        first.kill()
        first.wait()
    assert not out.exists()
