"""MAUVE (eval/mauve.py) and the sample metrics by name (eval/metrics.py, `edlm eval samples --metrics`), offline:
features from a tiny random Hugging Face model in a folder, or from an edlm AR run."""

import json
import random

import numpy as np
import pytest

from edlm.cli import main
from edlm.errors import EdlmError
from edlm.eval.evaluators import get_evaluator
from edlm.eval.mauve import MauveConfig, features, mauve_of_rows, mauve_score
from edlm.eval.metrics import evaluate_samples, parse_metrics, read_reference

transformers = pytest.importorskip("transformers")
pytest.importorskip("mauve")

ADJ = ["big", "small", "red", "old", "new"]
NOUN = ["cat", "dog", "mat", "hat", "car", "tree"]
VERB = ["sees", "likes", "finds", "hits"]
WORDS = ["the", "a"] + ADJ + NOUN + VERB


def sentences(n, seed):
    r = random.Random(seed)
    return [f"the {r.choice(ADJ)} {r.choice(NOUN)} {r.choice(VERB)} a {r.choice(NOUN)}" for _ in range(n)]


def shuffled(texts, seed):
    r = random.Random(seed)
    out = []
    for t in texts:
        w = t.split()
        r.shuffle(w)
        out.append(" ".join(w))
    return out


def rows(texts):
    return [{"ids": [1, 2, 3], "text": t, "corpus": "prose-bpe"} for t in texts]


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    """A random 2-layer GPT-2 with a word-level tokenizer (<s> BOS), saved in a folder."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers

    d = tmp_path_factory.mktemp("tiny-lm")
    vocab = {"<pad>": 0, "<unk>": 1, "<s>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="<s>",
                                               unk_token="<unk>", pad_token="<pad>", model_max_length=16)
    tok.save_pretrained(d)
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=len(vocab), n_positions=16, n_embd=32, n_layer=2, n_head=2,
                                  bos_token_id=2, eos_token_id=2)
    transformers.GPT2LMHeadModel(cfg).eval().save_pretrained(d)
    return d


@pytest.fixture(autouse=True)
def no_eos(monkeypatch):
    from edlm.eval import scoring

    monkeypatch.setattr(scoring, "corpus_eos", lambda c: (None, None))


FAST = MauveConfig(bootstrap=8, seeds=3, kmeans_redo=2, kmeans_iter=100)


def test_mauve_of_a_set_against_itself_is_one_and_against_shuffled_text_low(tiny_lm):
    ev = get_evaluator(str(tiny_lm))
    a, b = sentences(120, 0), sentences(120, 1)
    p = features(ev, rows(a), FAST)
    assert p.shape == (120, 32) and p.dtype == np.float32
    assert mauve_score(p, p.copy(), FAST)["mauve"] == pytest.approx(1.0, abs=1e-6)
    same = mauve_of_rows(rows(a), rows(b), ev, FAST)  # two draws of the same language
    shuf = mauve_of_rows(rows(shuffled(a, 2)), rows(b), ev, FAST)
    assert same["mauve"] > 0.8 and shuf["mauve"] < 0.3 and shuf["mauve"] < same["mauve"] - 0.5
    lo, hi = same["mauve_ci95"]
    assert 0 <= lo <= hi <= 1 and same["mauve_seeds"]["n"] == 3
    assert same["mauve_num_samples"] == 120 and same["mauve_num_reference"] == 120 and same["mauve_buckets"] == 12
    f = same["mauve_features"]
    assert f["model"] == ev.name and f["layer"] == -1 and f["dim"] == 32 and f["max_tokens"] == 16
    assert same["mauve_settings"]["scaling"] == 5.0 and same["mauve_settings"]["bootstrap"] == 8


def test_features_are_the_last_tokens_state_at_the_layer_asked(tiny_lm):
    import torch

    ev = get_evaluator(str(tiny_lm))
    texts = ["the big cat", "a dog likes the old hat"]
    for layer in (-1, 1):
        got = features(ev, rows(texts), MauveConfig(layer=layer))
        for t, g in zip(texts, got, strict=True):
            x = torch.tensor([ev.encode(t)])
            with torch.no_grad():
                h = ev.model.get_decoder()(input_ids=x, output_hidden_states=True).hidden_states[layer][0, -1]
            assert np.allclose(g, h.numpy(), atol=1e-5)
    cut = features(ev, rows(["the big cat sees a dog"]), MauveConfig(max_tokens=2))  # <s> the
    x = torch.tensor([ev.encode("the")])
    with torch.no_grad():
        h = ev.model.get_decoder()(input_ids=x).last_hidden_state[0, -1]
    assert np.allclose(cut[0], h.numpy(), atol=1e-5)
    with pytest.raises(EdlmError, match="mauve_layer"):
        features(ev, rows(texts), MauveConfig(layer=7))
    with pytest.raises(EdlmError, match="no hidden states"):
        features(get_evaluator("true"), rows(texts))
    with pytest.raises(EdlmError, match="at least 2 clusters"):
        MauveConfig(buckets=1)


def test_metrics_by_name_and_the_command_line(tiny_lm, tmp_path, capsys):
    assert parse_metrics("mauve, repetition") == ("mauve", "repetition") and parse_metrics(None) == ("genppl",)
    with pytest.raises(EdlmError, match="choose from"):
        parse_metrics("mauve,bleu")
    r = rows(sentences(40, 3))
    out = evaluate_samples(r, metrics=("repetition",))
    assert out["metrics"] == ["repetition"] and "gen_ppl" not in out and out["rep_2"] == 0.0
    with pytest.raises(EdlmError, match="needs an `evaluator`"):
        evaluate_samples(r, metrics=("genppl",))
    samples = tmp_path / "s.jsonl"
    samples.write_text("".join(json.dumps({"ids": [i % 5 + 3, 1, 2, 1, 2], "text": t, "corpus": "prose-bpe"}) + "\n"
                               for i, t in enumerate(sentences(40, 4))))
    ref = tmp_path / "ref.txt"
    ref.write_text("\n".join(sentences(40, 5)) + "\n")
    assert [x["text"] for x in read_reference(ref)][:2] == sentences(40, 5)[:2]
    capsys.readouterr()
    rc = main(["eval", "samples", "--samples", str(samples), "--metrics", "mauve,repetition", "--reference", str(ref),
               "--mauve-features", str(tiny_lm), "--mauve-bootstrap", "4", "--mauve-seeds", "2", "--quiet"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["metrics"] == ["mauve", "repetition"] and 0 < res["mauve"] <= 1 and res["mauve_num_reference"] == 40
    assert res["rep_2"] == pytest.approx(1 - 3 / 4) and res["mauve_reference"] == str(ref)
    assert "entropy_nats" in res and "gen_ppl" not in res
    # bad input: exit 2 and a message naming the flag, before any work
    for argv, msg in ((["--metrics", "genppl"], "--evaluator"), (["--metrics", "repetition", "--reference", str(ref)],
                                                                   "--reference"),
                      (["--metrics", "blue"], "--metrics"), (["--metrics", "mauve", "--mauve-buckets", "0"],
                                                            "--mauve-buckets")):
        assert main(["eval", "samples", "--samples", str(samples), *argv]) == 2
        assert msg in capsys.readouterr().err


def test_mauve_against_held_out_windows_of_the_corpus_with_an_edlm_run(micro_runs, synthetic_data):
    """No reference given: held-out test windows of the samples' corpus and length; features from an AR run."""
    import edlm
    from edlm.api.evaluators import evaluate_samples as api_evaluate

    smp = edlm.load(micro_runs / "mdlm").sample(num=24, steps=4, seed=0)
    out = api_evaluate(smp.rows, metrics=("genppl", "mauve", "repetition"), evaluator="true",
                       mauve_features=f"edlm:{micro_runs / 'ar'}", mauve=FAST)
    assert out["gen_ppl"] > 1 and 0 < out["mauve"] <= 1 and out["mauve_num_reference"] == 24
    assert out["mauve_reference"] == "synthetic test split, 24 windows of 16 tokens"
    assert out["mauve_features"]["model"].startswith("edlm:") and out["rep_1"] is not None
