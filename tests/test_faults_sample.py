"""`edlm sample` streams: a sampler killed mid-run keeps every finished batch (in OUT.partial, which a rerun
will not overwrite), and the files it and other commands write get normal permissions, not 0600."""

import json
import os
import signal

import pytest
import torch

from faultlib import MICRO, assert_one_clear_error, cli


@pytest.fixture(scope="module")
def mdlm(synthetic_data, tmp_path_factory):
    from edlm.cli import main

    run = tmp_path_factory.mktemp("sample-run") / "mdlm"
    assert main(["train", "--out", str(run), *MICRO, "--max_steps", "2"]) == 0
    return run


def _argv(mdlm, out, num=8):
    return ["sample", "--ckpt", str(mdlm), "--num", str(num), "--batch-size", "2", "--steps", "2", "--quiet",
            "--out", str(out)]


def test_sampler_killed_after_two_batches_keeps_them(mdlm, tmp_path, capsys):
    from edlm.cli import main
    from edlm.commands import sample

    out = tmp_path / "s.jsonl"
    pid = os.fork()
    if pid == 0:  # the child SIGKILLs itself right after its 2nd batch reached the file
        try:
            torch.set_num_threads(1)
            real = sample.RowStream.write

            def write(self, rows):
                real(self, rows)
                if self.n == 4:
                    os.kill(os.getpid(), signal.SIGKILL)

            sample.RowStream.write = write
            main(_argv(mdlm, out))
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    partial = tmp_path / "s.jsonl.partial"
    kept = [json.loads(x) for x in partial.read_text().splitlines()]
    assert len(kept) == 4 and not out.exists()
    # a rerun refuses to overwrite the kept rows
    rc, err = cli(capsys, _argv(mdlm, out))
    assert_one_clear_error(rc, err, "s.jsonl.partial holds rows of an interrupted")
    # ... and they are exactly the first rows of an uninterrupted run (same seed)
    partial.rename(tmp_path / "kept.jsonl")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli(capsys, _argv(mdlm, out))[0] == 0
    finally:
        torch.set_num_threads(n)
    full = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["ids"] for r in full[:4]] == [r["ids"] for r in kept]
    assert not partial.exists()


def test_outputs_get_normal_permissions(mdlm, tmp_path, capsys):
    old = os.umask(0o022)
    try:
        out, js = tmp_path / "s.jsonl", tmp_path / "summary.json"
        assert cli(capsys, [*_argv(mdlm, out, num=2), "--json-out", js])[0] == 0
        assert oct(out.stat().st_mode & 0o777) == oct(0o644) and oct(js.stat().st_mode & 0o777) == oct(0o644)
        assert cli(capsys, [*_argv(mdlm, out, num=2), "--json-out", js])[0] == 0  # replacing them
        assert oct(out.stat().st_mode & 0o777) == oct(0o644) and oct(js.stat().st_mode & 0o777) == oct(0o644)
        ck = sorted((mdlm / "checkpoints").glob("step_*"))[-1]
        assert {oct(p.stat().st_mode & 0o777) for p in ck.iterdir()} == {oct(0o644)}
    finally:
        os.umask(old)


def test_failing_sample_leaves_no_file(mdlm, tmp_path, capsys):
    rc, err = cli(capsys, [*_argv(mdlm, tmp_path / "s.jsonl"), "--length", "999"])
    assert_one_clear_error(rc, err, "exceeds what the model allows")
    assert list(tmp_path.iterdir()) == []
