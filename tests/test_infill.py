"""Infilling (sampling/infill.py): templates, fixed tokens that never change (MDLM, EDLM-AR, EDLM-NCE), and
on an enumerable Markov case infilled tokens that follow the exact conditional p(blanks | fixed tokens)."""

import itertools
import json

import pytest
import torch

import edlm
from conftest import micro_configs
from edlm.cli import main
from edlm.config.sampling import SamplerConfig
from edlm.data.synthetic import SyntheticConfig, SyntheticLanguage
from edlm.diffusion.schedules import LogLinear
from edlm.errors import EdlmError
from edlm.sampling.infill import Infill, as_infill
from edlm.sampling.loop import sample
from oracles import markov_denoiser
from test_sampling import _chi2_pvalue

MASK = 3  # the small languages below have 3 tokens


def _enc(text):
    return ["abc".index(c) for c in text]


def test_template_parsing_and_rendering():
    inf = Infill.from_template("ab[MASK*3]c[MASK]", _enc)
    assert inf.ids == (0, 1, None, None, None, 2, None) and inf.blanks == 4 and inf.length == 7
    assert inf.keep == [True, True, False, False, False, True, False]
    assert inf.render(lambda ids: "".join("abc"[i] for i in ids)) == "ab[MASK*3]c[MASK]"
    assert inf.x_init(2, MASK).tolist() == [[0, 1, 3, 3, 3, 2, 3]] * 2
    assert as_infill([0, None, 2], _enc).ids == (0, None, 2)
    assert as_infill(([0, 1, 2], [True, False, True]), _enc).ids == (0, None, 2)
    assert as_infill((torch.tensor([0, 1, 2]), torch.tensor([True, False, True])), _enc).ids == (0, None, 2)
    for bad, msg in (("abc", "no blank"), ("a[MASK*0]", "at least one"), ("a[MASK*2", "write blanks as"),
                     ("", "empty"), (([0, 1], [True]), "keep-mask of 1")):
        with pytest.raises(EdlmError, match=msg):
            as_infill(bad, _enc)


def _lang():
    return SyntheticLanguage(SyntheticConfig(vocab_size=3, successors=(1, 2), seed=1, target_entropy=0.6))


def _exact_conditional(lang, template):
    """p(blanks | fixed) by enumerating every completion of the template under the exact joint."""
    blanks = [i for i, v in enumerate(template) if v is None]
    fills = list(itertools.product(range(3), repeat=len(blanks)))
    rows = []
    for f in fills:
        row = list(template)
        for p, v in zip(blanks, f, strict=True):
            row[p] = v
        rows.append(row)
    x = torch.tensor(rows)
    p = lang.log_prob(x).double().exp()
    return blanks, p / p.sum()


def _codes(x, blanks):
    c = torch.zeros(x.shape[0], dtype=torch.long)
    for p in blanks:
        c = c * 3 + x[:, p]
    return c


@pytest.mark.parametrize("steps", [1, 4])
def test_mdlm_infill_follows_the_exact_conditional(steps):
    # Blanks between fixed tokens: under a first-order chain they are independent given the fixed ones, so the
    # MDLM sampler with the exact denoiser is exact at ANY number of steps. The target is enumerated from the
    # joint (it depends on the fixed tokens on both sides of each blank): 27 outcomes, chi-square.
    lang = _lang()
    template = [1, None, 0, None, 2, None]
    blanks, target = _exact_conditional(lang, template)
    n = 8000
    x0 = Infill(tuple(template)).x_init(n, MASK)
    x, _ = sample(markov_denoiser(lang, MASK), LogLinear(), MASK, SamplerConfig(steps=steps), x_init=x0,
                  generator=torch.Generator().manual_seed(steps))
    fixed = x0 != MASK
    assert torch.equal(x[fixed], x0[fixed]) and not (x == MASK).any()
    counts = torch.bincount(_codes(x, blanks), minlength=27).double()
    assert _chi2_pvalue(counts, target) > 1e-3
    # and the test can fail: ignoring the fixed right-hand neighbours (the chain's forward marginals) is rejected
    wrong = torch.tensor([float(lang.transition[1, a] * lang.transition[0, b] * lang.transition[2, c])
                          for a, b, c in itertools.product(range(3), repeat=3)], dtype=torch.float64)
    assert _chi2_pvalue(counts, wrong / wrong.sum()) < 1e-6


def test_edlm_infill_with_the_true_energy_gives_the_joint_conditional_in_one_step():
    # Adjacent blanks are dependent; in ONE step MDLM draws them independently (wrong), while EDLM with
    # E = -log p(x0) + log mu (the AR energy with an exact AR) targets p(x0 | x_t). The energy must see the
    # whole x0, fixed tokens included, for that target to be the conditional. k = 64: importance sampling's
    # O(1/k) bias is below what 6000 draws can detect (seeds 0-4 give p = 0.94, 0.99, 0.90, 0.03, 0.81).
    lang = _lang()
    template = [0, None, None, 1, None]
    blanks, target = _exact_conditional(lang, template)
    seen = []

    class TrueAR:
        def energy(self, x0, x_t, t, *, log_mu=None):
            seen.append(x0)
            return (-lang.log_prob(x0) + log_mu.double()).float()

    n = 6000
    x0 = Infill(tuple(template)).x_init(n, MASK)
    res = {}
    for name, energy in (("edlm", TrueAR()), ("mdlm", None)):
        x, _ = sample(markov_denoiser(lang, MASK), LogLinear(), MASK, SamplerConfig(steps=1, k=64), x_init=x0,
                      energy=energy, generator=torch.Generator().manual_seed(0))
        fixed = x0 != MASK
        assert torch.equal(x[fixed], x0[fixed])
        res[name] = _chi2_pvalue(torch.bincount(_codes(x, blanks), minlength=27).double(), target)
    assert res["edlm"] > 1e-3 and res["mdlm"] < 1e-6, res
    cand = torch.cat(seen)  # every candidate the energy scored carries the fixed tokens
    assert torch.equal(cand[:, [0, 3]], torch.tensor([[0, 1]]).expand(len(cand), 2))


# ---- through the API and the CLI, with trained micro runs (MDLM, AR, NCE) --------------------------------------

@pytest.fixture(scope="module")
def runs(synthetic_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("infill-runs")
    for obj in ("mdlm", "ar"):
        edlm.train(micro_configs(obj), out=root / obj)
    edlm.train(micro_configs("nce", diffusion=str(root / "mdlm")), out=root / "nce")
    return root


@pytest.mark.parametrize("energy", [None, "ar", "nce"])
def test_fixed_tokens_never_change_at_any_step(runs, energy):
    run = edlm.load(runs / "mdlm")
    spec = None if energy is None else f"{energy}:{runs / energy}"
    template = "ab[MASK*4]cd[MASK*3]efg[MASK]"
    inf = Infill.from_template(template, run.encode)
    keep = torch.tensor(inf.keep)
    want = torch.tensor([i if i is not None else -1 for i in inf.ids])
    steps_seen = []

    def check(i, x, t, ess):
        steps_seen.append(i)
        assert torch.equal(x[:, keep], want[keep].expand(x.shape[0], -1))

    out = run.infill(template, num=5, steps=6, energy=spec, k=3, batch_size=3, seed=1, callback=check)
    assert out.tokens.shape == (5, inf.length) and len(steps_seen) >= 6
    assert torch.equal(out.tokens[:, keep], want[keep].expand(5, -1))
    assert not (out.tokens == run.meta.mask_id).any()
    assert all(t.startswith("ab") and t[6:8] == "cd" and t[11:14] == "efg" for t in out.texts)
    assert out.summary["infill"] == template and out.summary["infill_blanks"] == 8
    if energy is not None:
        assert out.summary["method"] == f"edlm-{energy}" and out.summary["mean_ess"] is not None
    # ids + a keep-mask and ids with None are the same infill: same seed, same samples
    ids = [0 if i is None else i for i in inf.ids]
    again = run.sample(num=5, steps=6, energy=spec, k=3, batch_size=3, seed=1, infill=(ids, inf.keep))
    assert torch.equal(again.tokens, out.tokens)


def test_infill_errors_name_the_fix(runs):
    run, ar = edlm.load(runs / "mdlm"), edlm.load(runs / "ar")
    cases = [
        (lambda: run.infill("ab[MASK*30]"), "exceeds what the model allows (16); to generate longer, pass stride"),
        (lambda: run.infill("ab[MASK*3]", prefix="a"), "prefix or infill, not both"),
        (lambda: run.infill("ab[MASK*3]", length=9), "leave length out"),
        (lambda: run.infill([0, None, 99]), "outside the vocabulary"),
        (lambda: run.infill("a!b[MASK]"), "infill template"),
        (lambda: ar.sample(infill="ab[MASK]"), "needs an MDLM run"),
    ]
    for call, msg in cases:
        with pytest.raises(EdlmError, match=msg.replace("(", r"\(").replace(")", r"\)")):
            call()


def test_cli_infill_writes_rows_and_adds_summary_fields(runs, tmp_path, capsys):
    out = tmp_path / "i.jsonl"
    assert main(["sample", "--ckpt", str(runs / "mdlm"), "--infill", "ab[MASK*5]cd", "--num", "3", "--steps", "4",
                 "--energy", f"ar:{runs / 'ar'}", "--k", "2", "--out", str(out), "--quiet"]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert s["infill"] == "ab[MASK*5]cd" and s["infill_blanks"] == 5 and s["length"] == 9
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 3 and all(r["text"][:2] == "ab" and r["text"][7:] == "cd" for r in rows)
    for argv, msg in ((["--infill", "ab[MASK*20]"], "--infill has 22 tokens"),
                      (["--infill", "ab[MASK]", "--prefix", "a"], "--prefix and --infill"),
                      (["--infill", "ab[MASK]", "--length", "9"], "leave out --length")):
        assert main(["sample", "--ckpt", str(runs / "mdlm"), *argv, "--out", str(tmp_path / "x.jsonl")]) == 2
        err = capsys.readouterr().err
        assert msg in err and err.count("error") == 1, err
    assert main(["sample", "--ckpt", str(runs / "ar"), "--infill", "ab[MASK]", "--out", str(tmp_path / "y")]) == 2
    assert "--infill applies to an MDLM run" in capsys.readouterr().err


def test_docs_infill_example_runs(runs, monkeypatch):
    import re
    from pathlib import Path

    page = Path(__file__).resolve().parents[1] / "docs" / "sampling.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), re.S)
    assert len(blocks) == 1
    monkeypatch.chdir(runs)  # the block reads runs/mdlm and runs/ar: link them there
    (runs / "runs").mkdir(exist_ok=True)
    for obj in ("mdlm", "ar"):
        if not (runs / "runs" / obj).exists():
            (runs / "runs" / obj).symlink_to(runs / obj)
    ns: dict = {}
    exec(compile(blocks[0], str(page), "exec"), ns)
    assert all(t.startswith("ab") and t[8:10] == "cd" for t in ns["filled"].texts)
    assert (runs / "trace.html").exists() and ns["long"].tokens.shape == (2, 64) and ns["long"].summary["blocks"] == 7
    assert ns["ids"].tokens[:, [0, 1, 4]].tolist() == [[0, 1, 2]] * 2
