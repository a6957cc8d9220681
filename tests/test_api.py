"""The Python API: the README's Python section and docs/python.md run as written, and the API returns what
the CLI prints."""

import json
import re
from pathlib import Path

import pytest
import torch

import edlm
from edlm.cli import main
from edlm.errors import EdlmError

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
GUIDE = ROOT / "docs" / "python.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


def readme_python_blocks() -> list[str]:
    text = README.read_text()
    section = text[text.index("\n## Python"):]
    section = section[:section.index("\n## ", 1)]
    return python_blocks(section)


def run_blocks(blocks: list[str], where: Path, filename: str) -> dict:
    """Run the blocks in order, in one namespace, with `where` as the working folder."""
    import os

    cwd = os.getcwd()
    os.chdir(where)
    try:
        ns: dict = {}
        for block in blocks:
            exec(compile(block, filename, "exec"), ns)
    finally:
        os.chdir(cwd)
    ns["_root"] = where
    return ns


@pytest.fixture(scope="module")
def readme_ns(synthetic_data, tmp_path_factory):
    """Every Python block of docs/python.md (the Python tour), in order, in a fresh folder."""
    blocks = python_blocks(GUIDE.read_text())
    assert len(blocks) >= 3, "docs/python.md lost its examples"
    return run_blocks(blocks, tmp_path_factory.mktemp("guide"), str(GUIDE))


def my_text(n: int = 400) -> str:
    """A user's own file: cased prose with punctuation, digits and line breaks, paragraphs apart."""
    import random

    rng = random.Random(0)
    words = "The cat sat on a mat. A dog ran, far! Is it 42? Yes; no: maybe.".split()
    paras = []
    for i in range(n):
        line = " ".join(rng.choice(words) for _ in range(rng.randint(6, 14)))
        paras.append(f"{line}\nLine {i} of it.")
    return "\n\n".join(paras) + "\n"


def test_readme_python_section_runs_as_written(tmp_path, monkeypatch):
    # From "here is my text file" to "EDLM vs MDLM with an interval and a plot", importing nothing but edlm.
    monkeypatch.setenv("EDLM_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("EDLM_NO_PROGRESS", "1")
    blocks = readme_python_blocks()
    assert len(blocks) == 1, "the README's Python section should hold one example"
    imports = [ln.strip() for ln in blocks[0].splitlines() if re.match(r"\s*(import|from)\s", ln)]
    assert imports == ["import edlm"], imports
    (tmp_path / "my_text.txt").write_text(my_text())
    ns = run_blocks(blocks, tmp_path, str(README))
    run, d, res = ns["run"], ns["d"], ns["res"]
    assert isinstance(run, edlm.Run) and run.meta.objective == "mdlm" and run.meta.data == "textfile:mine"
    assert run.meta.tokenizer == "chars" and "\n" in run.tokenizer.alphabet and "T" in run.tokenizer.alphabet
    assert ns["edlm_ar"].summary["method"] == "edlm-ar" and ns["mdlm"].summary["method"] == "mdlm"
    assert d["paired"] and d["ci"][0] <= d["diff"] <= d["ci"][1] and d["evaluator"] == "edlm:runs/judge"
    assert {r["method"] for r in res["rows"]} == {"mdlm", "edlm-ar", "ar"}
    assert all("vs_mdlm" in r for r in res["rows"] if r["method"] == "edlm-ar")
    assert all((tmp_path / "bench" / Path(p).name).stat().st_size > 1000 for p in res["plots"])


def test_readme_examples_run_and_return_what_they_say(readme_ns):
    ns = readme_ns
    run, out = ns["run"], ns["out"]
    assert isinstance(run, edlm.Run) and isinstance(run.meta, edlm.RunMeta) and run.meta.objective == "mdlm"
    assert run.meta.step == 20 and run.device == torch.device("cpu")
    assert out.tokens.shape == (4, run.meta.train.seq_len) and len(out.texts) == 4
    assert out.summary["method"] == "edlm-ar" and 1 <= out.summary["mean_ess"] <= 4
    assert all(t.startswith("ab") for t in out.texts)  # the prefix is kept
    assert not (out.tokens == run.meta.mask_id).any()
    assert ns["report"]["kind"] == "upper bound" and ns["report"]["nll"] > 0
    assert (ns["_root"] / "runs/mdlm/curves.png").stat().st_size > 1000 and ns["png"].name == "curves.png"


def test_callback_sees_every_step_with_t_and_ess(readme_ns):
    run, seen = readme_ns["run"], []
    run.sample(num=2, steps=4, energy=edlm.ar_energy(readme_ns["ar"]), k=2, window=(0.5, 1.0),
               callback=lambda i, x, t, ess: seen.append((i, x.clone(), t, ess)))
    assert [s[0] for s in seen] == [0, 1, 2, 3] and [s[2] for s in seen] == [1.0, 0.75, 0.5, 0.25]
    assert all(s[3] is not None and s[3].shape == (2,) for s in seen[:3])  # t in [0.5, 1]: EDLM ran
    assert seen[3][3] is None  # t = 0.25: a plain MDLM step
    masked = [int((s[1] == run.meta.mask_id).sum()) for s in seen]
    assert masked == sorted(masked, reverse=True) and masked[-1] == 0


def test_sample_matches_the_cli_rows_and_devices_may_be_strings(readme_ns, tmp_path, capsys):
    root = readme_ns["_root"]
    run = edlm.load(root / "runs/mdlm", device=torch.device("cpu"))
    api = run.sample(num=3, steps=4, seed=7, batch_size=2)
    assert main(["sample", "--ckpt", str(root / "runs/mdlm"), "--num", "3", "--steps", "4", "--seed", "7",
                 "--batch-size", "2", "--out", str(tmp_path / "s.jsonl"), "--quiet", "--device", "cpu"]) == 0
    cli_rows = [json.loads(x) for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert [r["ids"] for r in cli_rows] == api.tokens.tolist()


def test_nelbo_is_the_json_eval_nelbo_prints(readme_ns, capsys):
    root = readme_ns["_root"]
    ckpt = str(root / "runs/mdlm")
    capsys.readouterr()
    assert main(["eval", "nelbo", "--ckpt", ckpt, "--energy", f"ar:{root / 'runs/ar'}", "--steps", "4",
                 "--k", "2", "--max-blocks", "8", "--quiet", "--device", "cpu"]) == 0
    cli = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    api = edlm.load(ckpt).nelbo(steps=4, energy=f"ar:{root / 'runs/ar'}", k=2, max_blocks=8)
    assert json.loads(json.dumps(api)) == cli


def test_train_accepts_either_order_and_rejects_unknown_options(readme_ns, tmp_path):
    m, t = edlm.presets.micro()
    s = edlm.train((t, m), out=tmp_path / "r", objective="ar", data="synthetic", max_steps=2, d_model=16)
    assert s["steps"] == 2 and edlm.load(tmp_path / "r").meta.model.d_model == 16
    with pytest.raises(EdlmError, match="unknown option"):
        edlm.train(edlm.presets.micro(), out=tmp_path / "x", lrate=1)


@pytest.mark.parametrize("call, msg", [
    (lambda r, ar: r.sample(length=999), "length 999 exceeds what the model allows"),
    (lambda r, ar: r.sample(energy="bogus"), "energy 'bogus' is not understood"),
    (lambda r, ar: ar.sample(energy=edlm.ar_energy(ar)), "applies to an MDLM run"),
    (lambda r, ar: r.sample(energy=edlm.nce_energy(ar)), "a nce energy needs a 'nce' run"),
    (lambda r, ar: r.sample(prefix="ab!"), "prefix 'ab!'"),
    (lambda r, ar: r.sample(window=(0.8, 0.2)), "window (0.8, 0.2)"),
    (lambda r, ar: r.nelbo(logz_samples=1), "logz_samples must be >= 2"),
    (lambda r, ar: r.nelbo(split="dev"), "split 'dev'"),
])
def test_errors_speak_of_arguments_not_flags(readme_ns, call, msg):
    with pytest.raises(EdlmError) as e:
        call(readme_ns["run"], readme_ns["ar"])
    assert msg in str(e.value) and "--" not in str(e.value)


def test_plot_command_writes_a_png(readme_ns, tmp_path, capsys):
    capsys.readouterr()
    assert main(["plot", str(readme_ns["_root"] / "runs/ar"), "--out", str(tmp_path / "c.png")]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["png"] == str(tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["plot", str(tmp_path)]) == 2  # no metrics.jsonl: one clear error


def test_import_edlm_does_not_load_torch():
    import subprocess
    import sys

    code = "import sys, edlm; assert 'torch' not in sys.modules; print(sorted(edlm.__all__)[:1])"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
