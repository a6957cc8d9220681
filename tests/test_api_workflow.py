"""One option language, and the research workflow from Python: every CLI option of sample / eval / bench / train /
data has its API twin under the same name, old flag spellings still parse, and the API covers what the CLI does
(k_policy="ess", per-sample prefixes and templates, resume="auto" / overwrite, score and compare, bench)."""

import argparse
import dataclasses
import inspect
import json

import pytest
import torch

import edlm
from edlm.cli import build_parser, main
from edlm.config.model import TransformerConfig
from edlm.config.train import TrainConfig
from edlm.errors import EdlmError

CLI_ONLY = {"help", "json_out"}  # --json-out: every command also writes its summary; the API returns it


def _params(*fns) -> set:
    return {n for f in fns for n in inspect.signature(f).parameters if n not in ("self", "options")}


def _fields(*classes) -> set:
    return {f.name for c in classes for f in dataclasses.fields(c)}


TWINS = {
    "sample": lambda: _params(edlm.load, edlm.Run.sample),
    "eval nelbo": lambda: _params(edlm.load, edlm.Run.nelbo),
    "eval samples": lambda: _params(edlm.score),
    "bench": lambda: _params(edlm.bench.bench),
    "train": lambda: _params(edlm.train) | _fields(TrainConfig, TransformerConfig),
    "data prepare": lambda: _params(edlm.prepare),
    "data info": lambda: _params(edlm.corpus_info),
}


def _command(path: str):
    p = build_parser()
    for word in path.split():
        sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
        p = sub.choices[word]
    return p


@pytest.mark.parametrize("command", list(TWINS))
def test_every_cli_option_has_its_api_twin_with_the_same_name(command):
    names = TWINS[command]()
    parser = _command(command)
    for action in parser._actions:
        if not action.option_strings or action.dest in CLI_ONLY:
            continue
        flag = action.option_strings[0]
        assert flag == "--" + action.dest.replace("_", "-"), f"edlm {command} {flag}: spelled unlike its name"
        assert action.dest in names, f"edlm {command} {flag}: no API argument `{action.dest}`"
    for action in parser._actions:  # and positionals (NAME of data prepare)
        if not action.option_strings and action.dest not in ("help",):
            assert action.dest in names, f"edlm {command} {action.dest}: no API argument of that name"


def test_old_spellings_still_parse_but_help_shows_one():
    p = build_parser()
    a = p.parse_args(["train", "--out", "r", "--max_steps", "3", "--batch_size", "4", "--time_conditioning",
                      "--no-antithetic", "--t_eps", "0.01"])
    assert (a.max_steps, a.batch_size, a.time_conditioning, a.antithetic, a.t_eps) == (3, 4, True, False, 0.01)
    a = p.parse_args(["sample", "--ckpt", "r", "--out", "o", "--energy-min-unmask", "2", "--no-cache"])
    assert a.min_unmask == 2 and a.cache is False
    assert p.parse_args(["train", "--out", "r", "--resume", "auto"]).resume == "auto"
    helps = {c: _command(c).format_help() for c in ("train", "sample", "eval nelbo", "bench")}
    assert "--max-steps MAX_STEPS" in helps["train"] and "--max_steps MAX_STEPS" not in helps["train"]
    assert "--min-unmask" in helps["sample"] and "--energy-min-unmask" not in helps["sample"]
    assert "--min-unmask" in helps["eval nelbo"] and "--energy-temperatures" in helps["bench"]


def test_the_edlm_bound_describes_the_sampler_the_sampler_defaults_give():
    sample, nelbo = inspect.signature(edlm.Run.sample).parameters, inspect.signature(edlm.Run.nelbo).parameters
    for name in ("k", "window", "temperature", "min_unmask"):
        assert sample[name].default == nelbo[name].default, name
    for command in ("sample", "eval nelbo"):
        acts = {a.dest: a for a in _command(command)._actions}
        assert acts["k"].default == sample["k"].default and acts["min_unmask"].default == 1


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """micro MDLM, AR and a judge AR on a named corpus of cased text (chars)."""
    import os

    root = tmp_path_factory.mktemp("wf")
    old = {k: os.environ.get(k) for k in ("EDLM_DATA", "EDLM_NO_PROGRESS")}
    os.environ.update(EDLM_DATA=str(root / "data"), EDLM_NO_PROGRESS="1")
    from test_api import my_text

    (root / "t.txt").write_text(my_text(200))
    edlm.prepare("textfile:wf", source=root / "t.txt")
    for name, obj, seed in (("mdlm", "mdlm", 0), ("ar", "ar", 0), ("judge", "ar", 1)):
        edlm.train(edlm.presets.micro(), out=root / name, objective=obj, data="textfile:wf", max_steps=6,
                   seed=seed, quiet=True)
    yield root
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def test_k_policy_ess_works_from_the_api(runs):
    run = edlm.load(runs / "mdlm")
    out = run.sample(num=6, steps=4, energy=edlm.ar_energy(runs / "ar"), k=4, k_policy="ess", k_max=8,
                     batch_size=3, seed=1)
    s = out.summary
    assert s["k_policy"] == "ess" and (s["k_max"], s["k_min"]) == (8, 2) and 2 <= s["mean_k"] <= 8
    same = run.sample(num=6, steps=4, energy=edlm.ar_energy(runs / "ar"), k=4, batch_size=3, seed=1,
                      k_policy=edlm.KPolicy(k_max=8))
    assert torch.equal(out.tokens, same.tokens)
    with pytest.raises(EdlmError, match="k_policy 'often'"):
        run.sample(num=2, steps=2, energy=edlm.ar_energy(runs / "ar"), k_policy="often")
    with pytest.raises(EdlmError, match="give an energy"):
        run.sample(num=2, steps=2, k_policy="ess")


def test_api_messages_speak_of_arguments_not_flags(runs):
    run = edlm.load(runs / "mdlm")
    for kw in ({"k_policy": "ess"}, {"k_max": 4}, {"prefix": ["Th", "A"]}, {"infill": ["T[MASK]", "A[MASK*2]"]}):
        with pytest.raises(EdlmError) as e:
            run.sample(num=2, steps=2, **kw) if "prefix" not in kw else run.sample(num=3, steps=2, **kw)
        assert "--" not in str(e.value), str(e.value)
    with pytest.raises(EdlmError) as e:
        edlm.load(runs / "nowhere")
    assert "edlm.train(" in str(e.value)
    with pytest.raises(EdlmError) as e:
        edlm.train(edlm.presets.micro(), out=runs / "mdlm", data="textfile:wf", max_steps=6)
    assert "`resume=True`" in str(e.value) and "`overwrite=True`" in str(e.value) and "--" not in str(e.value)


def test_one_prefix_or_template_per_sample(runs):
    run = edlm.load(runs / "mdlm")
    out = run.sample(num=3, steps=4, prefix=["The", "A", "Is it"], seed=0)
    assert [t[:len(p)] for t, p in zip(out.texts, ["The", "A", "Is it"], strict=True)] == ["The", "A", "Is it"]
    ar = edlm.load(runs / "ar")
    out = ar.sample(num=3, prefix=["The", "A", "Is it"], seed=0)
    assert [t[:len(p)] for t, p in zip(out.texts, ["The", "A", "Is it"], strict=True)] == ["The", "A", "Is it"]
    out = run.sample(num=2, steps=4, infill=["T[MASK*3] cat", "A[MASK*3] dog"], energy=edlm.ar_energy(runs / "ar"),
                     k=2)
    assert out.texts[0].startswith("T") and out.texts[0].endswith(" cat") and out.texts[1].endswith(" dog")
    with pytest.raises(EdlmError, match="one length"):
        run.sample(num=2, steps=2, infill=["T[MASK]", "A[MASK*2]"])
    with pytest.raises(EdlmError, match="one per sample"):
        run.sample(num=3, steps=2, prefix=["a", "b"])


def test_resume_auto_and_overwrite_after_a_run_killed_before_its_first_save(runs, tmp_path):
    out = tmp_path / "r"
    edlm.train(edlm.presets.micro(), out=out, data="textfile:wf", max_steps=2, quiet=True)
    for p in ("latest.json", "checkpoints", "metrics.jsonl"):  # as a run killed before its first checkpoint
        (out / p).unlink() if (out / p).is_file() else __import__("shutil").rmtree(out / p)
    with pytest.raises(EdlmError, match="already holds a run"):
        edlm.train(edlm.presets.micro(), out=out, data="textfile:wf", max_steps=2)
    assert edlm.train(edlm.presets.micro(), out=out, data="textfile:wf", max_steps=2, resume="auto")["steps"] == 2
    (out / "notes.txt").write_text("mine")
    s = edlm.train(edlm.presets.micro(), out=out, data="textfile:wf", max_steps=3, overwrite=True, lr=1e-3)
    assert s["steps"] == 3 and json.loads((out / "run.json").read_text())["train"]["lr"] == 1e-3
    assert (out / "notes.txt").read_text() == "mine"  # only the training's own files are removed
    with pytest.raises(EdlmError, match="give one"):
        edlm.train(edlm.presets.micro(), out=out, data="textfile:wf", resume=True, overwrite=True)
    assert main(["train", "--out", str(out), "--resume", "auto", "--max-steps", "4", "--quiet"]) == 0


def test_score_and_compare_pair_samples_of_one_seed(runs):
    run = edlm.load(runs / "mdlm")
    a = run.sample(num=8, steps=4, seed=3, energy=edlm.ar_energy(runs / "ar"), k=2)
    b = run.sample(num=8, steps=4, seed=3)
    judge = f"edlm:{runs / 'judge'}"
    sa, sb = edlm.score(a, judge), edlm.score(b, judge)
    assert len(sa["scores"]) == 8 and sa["seeds"] == [3] * 8
    d = edlm.compare(sa, sb)
    assert d["paired"] and d["ci"][0] <= d["diff"] <= d["ci"][1]
    assert d["diff"] == pytest.approx(sa["gen_nll"] - sb["gen_nll"])
    c = run.sample(num=8, steps=4, seed=4)
    assert not edlm.compare(sa, edlm.score(c, judge))["paired"]  # another seed: independent sets
    with pytest.raises(EdlmError, match="score it first"):
        edlm.compare(a, b)


def test_bench_checks_its_evaluator_before_sampling_and_sweeps_the_new_axes(runs, tmp_path):
    kw = dict(mdlm=runs / "mdlm", ar=runs / "ar", methods="mdlm,edlm-ar", steps=[2], k=[2], num=4, batch_size=4)
    with pytest.raises(EdlmError, match="evaluator 'true'"):  # real text: fails before anything is sampled
        edlm.bench(**kw, out=tmp_path / "b0")
    assert not (tmp_path / "b0").exists()
    with pytest.raises(EdlmError, match="is the energy of edlm-ar"):
        edlm.bench(**kw, evaluator=f"edlm:{runs / 'ar'}", out=tmp_path / "b1")
    res = edlm.bench(**kw, evaluator=f"edlm:{runs / 'judge'}", unmask=["random", "confidence"],
                     energy_temperatures=[1.0, 0.5], k_policy=["fixed", "ess"], min_unmask=[1, 2], seed=[0, 1],
                     out=tmp_path / "b2", quiet=True)
    cells = {(r["method"], r["unmask"], r["temperature"], r["k_policy"], r["min_unmask"], r["seed"])
             for r in res["rows"]}
    edlm_cells = [c for c in cells if c[0] == "edlm-ar"]
    # random: 2 taus x 2 policies x 2 min-unmask; confidence: min-unmask 1 only; x 2 seeds
    assert len(edlm_cells) == (8 + 4) * 2 and len([c for c in cells if c[0] == "mdlm"]) == 4
    for r in res["rows"]:
        if r["method"] == "edlm-ar":
            assert r["vs_mdlm"]["paired"] and r["vs_mdlm"]["ci"][0] <= r["vs_mdlm"]["diff"] <= r["vs_mdlm"]["ci"][1]
    assert len(list((tmp_path / "b2" / "samples").glob("*.jsonl"))) == len(res["rows"])  # + a summary each
