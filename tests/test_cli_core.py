"""The core commands from the outside: train -> sample (plain, prefix, EDLM) -> eval, and their bad inputs."""

import json

import pytest

from edlm.cli import main

MICRO = ["--preset", "micro", "--data", "synthetic", "--max_steps", "3", "--quiet"]


def _last_json(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def runs(synthetic_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for obj in ("mdlm", "ar"):
        assert main(["train", "--objective", obj, "--out", str(root / obj), *MICRO]) == 0
    return root


def test_sample_and_eval_json_contracts(runs, tmp_path, capsys):
    capsys.readouterr()
    out = tmp_path / "s.jsonl"
    assert main(["sample", "--ckpt", str(runs / "mdlm"), "--num", "5", "--steps", "4", "--batch-size", "2",
                 "--out", str(out), "--quiet"]) == 0
    s = _last_json(capsys)
    assert {"num", "steps", "seconds", "tokens_per_second"} <= s.keys() and s["num"] == 5
    # fixed cost vs per-step cost: startup + sampling time = fixed + per-step x steps run (3 batches x 4)
    assert s["steps_run"] == 12 and s["per_step_s"] > 0 and s["startup_s"] > 0 and s["fused"] == "auto"
    assert abs(s["startup_s"] + s["sampling_s"] - s["fixed_s"] - s["per_step_s"] * 12) < 1e-6
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 5 and all(len(r["ids"]) == 16 and "text" in r and r["seconds"] > 0 for r in rows)
    assert all(32 not in r["ids"] for r in rows)  # no MASK left
    assert main(["eval", "nelbo", "--ckpt", str(runs / "mdlm"), "--split", "test", "--max-blocks", "16",
                 "--quiet"]) == 0
    e = _last_json(capsys)
    assert {"model", "split", "tokens", "nll", "ppl", "bpc"} <= e.keys() and e["tokens"] == 16 * 16
    assert main(["eval", "nelbo", "--ckpt", str(runs / "mdlm"), "--energy", f"nce:{runs / 'mdlm'}",
                 "--max-blocks", "4", "--quiet"]) == 2  # an mdlm run is not an energy


@pytest.mark.parametrize("kind", ["mdlm", "ar"])
def test_prefix_is_kept(runs, tmp_path, capsys, kind):
    from edlm.data.tokenizers import tokenizer_for

    prefix = "abca"
    out = tmp_path / "p.jsonl"
    assert main(["sample", "--ckpt", str(runs / kind), "--num", "3", "--steps", "4", "--prefix", prefix,
                 "--out", str(out), "--quiet"]) == 0
    ids = tokenizer_for("synthetic").encode(prefix)
    for r in map(json.loads, out.read_text().splitlines()):
        assert r["ids"][: len(ids)] == ids


def test_edlm_sample_records_method_k_window_ess(runs, tmp_path, capsys):
    capsys.readouterr()
    out = tmp_path / "e.jsonl"
    assert main(["sample", "--ckpt", str(runs / "mdlm"), "--energy", f"ar:{runs / 'ar'}", "--k", "3",
                 "--window", "0.5,1", "--num", "4", "--steps", "4", "--out", str(out), "--quiet"]) == 0
    s = _last_json(capsys)
    assert s["method"] == "edlm-ar" and s["k"] == 3 and s["window"] == [0.5, 1.0] and 1 <= s["mean_ess"] <= 3
    r = json.loads(out.read_text().splitlines()[0])
    assert r["method"] == "edlm-ar" and r["k"] == 3


def test_bf16_precision_samples_valid_tokens(runs, tmp_path, capsys):
    # --precision bf16 (the GPU default) runs the networks under autocast; draws stay float64 and exact.
    out = tmp_path / "b.jsonl"
    for ckpt, extra in ((runs / "mdlm", ["--energy", f"ar:{runs / 'ar'}", "--k", "2"]), (runs / "ar", [])):
        assert main(["sample", "--ckpt", str(ckpt), "--num", "3", "--steps", "4", "--precision", "bf16", *extra,
                     "--out", str(out), "--quiet"]) == 0
        rows = [json.loads(x) for x in out.read_text().splitlines()]
        assert len(rows) == 3 and all(len(r["ids"]) == 16 and max(r["ids"]) < 32 for r in rows)


def test_bad_inputs_give_one_clear_error(runs, tmp_path, capsys):
    cases = [
        (["sample", "--ckpt", str(tmp_path / "nope"), "--out", str(tmp_path / "x.jsonl")], "no run at"),
        (["sample", "--ckpt", str(runs / "mdlm"), "--length", "999", "--out", str(tmp_path / "x.jsonl")],
         "exceeds what the model allows"),
        (["sample", "--ckpt", str(runs / "mdlm"), "--energy", "bogus", "--out", str(tmp_path / "x.jsonl")],
         "not understood"),
        (["sample", "--ckpt", str(runs / "ar"), "--energy", f"ar:{runs / 'ar'}", "--out", str(tmp_path / "x.jsonl")],
         "applies to an MDLM run"),
        (["eval", "nelbo", "--ckpt", str(runs / "mdlm"), "--logz-samples", "1"], "--logz-samples must be >= 2"),
        (["train", "--objective", "nce", "--out", str(tmp_path / "n"), *MICRO], "needs --diffusion"),
        (["train", "--out", str(tmp_path / "l"), "--seq_len", "64", "--max_len", "16", *MICRO], "longer than"),
    ]
    for argv, msg in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1, (argv, err)
    assert not (tmp_path / "x.jsonl").exists()  # nothing half-written


def test_truncated_checkpoint_is_reported(runs, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(runs / "mdlm", broken)
    latest = json.loads((broken / "latest.json").read_text())["dir"]
    f = broken / latest / "ema.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    capsys.readouterr()
    assert main(["sample", "--ckpt", str(broken), "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "truncated or corrupt" in capsys.readouterr().err
    (broken / latest / "state.json").unlink()
    assert main(["sample", "--ckpt", str(broken), "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "incomplete" in capsys.readouterr().err
