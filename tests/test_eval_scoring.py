"""What a text evaluator scores (edlm.eval.scoring): up to the first EOS (--eos first), MDLM's mask (--eos
mdlm), everything (--eos all), and text longer than the context in sliding windows; each checked against
the tiny Hugging Face model of test_eval_hf run by hand."""

import types

import numpy as np
import pytest
import torch

from edlm.data.tokenizers import GPT2_EOS
from edlm.errors import EdlmError
from edlm.eval import scoring
from edlm.eval.evaluators import HFEvaluator, get_evaluator
from edlm.eval.genppl import evaluate_rows

pytest.importorskip("transformers")
from test_eval_hf import (  # noqa: E402 (after the skip: it needs transformers)
    REAL_CORPUS_EOS,
    WORDS,
    direct_nll,
    gpt2_eos_for_prose_bpe,
    make_tiny_hf,
    rows_of,
    window_nll,
)


@pytest.fixture(autouse=True)
def prose_bpe_eos(monkeypatch):
    gpt2_eos_for_prose_bpe(monkeypatch)


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
    return make_tiny_hf(tmp_path_factory.mktemp("tiny-hf"))


def test_text_is_scored_up_to_its_first_eos(tiny_hf):
    """A GPT-2 sample's text ends at its first <|endoftext|>: the text before it is scored, then the
    evaluator's own EOS (</s> here) is predicted; what follows is another document and is not scored."""
    d, model, tok = tiny_hf
    ev = get_evaluator(str(d))
    assert (ev.bos, ev.eos) == (2, tok.convert_tokens_to_ids("</s>"))
    head, tail = "the cat sat", f"dog ran{GPT2_EOS}mat on a mat"
    rows = rows_of([head + GPT2_EOS + tail, "a dog ran"])
    res = evaluate_rows(rows, ev, eos="first")
    ids = [ev.bos] + tok(head, add_special_tokens=False)["input_ids"] + [ev.eos]
    cut_nll = window_nll(model, ids, 0, len(ids), 1)
    plain_nll, _ = direct_nll(model, tok, "a dog ran")
    assert res["tokens_scored"] == 4 + 3 and (res["eos"], res["samples_cut_at_eos"]) == ("first", 1)
    assert res["gen_nll"] == pytest.approx((cut_nll + plain_nll) / 7, rel=1e-6)
    assert res["evaluator_eos"] == "</s>" and res["entropy_nats"] == pytest.approx(np.log(3))  # stats: row ids
    # --eos all is the old behaviour: the markers and the next document are scored too
    old = evaluate_rows(rows, ev, eos="all")
    assert old["tokens_scored"] > 7 and old["samples_cut_at_eos"] == 0 and old["gen_nll"] != res["gen_nll"]
    # an evaluator without an EOS token scores the text before the marker only
    ev.set_eos(None)
    try:
        res = evaluate_rows(rows[:1], ev, eos="first")
        assert res["tokens_scored"] == 3 and res["evaluator_eos"] is None
        assert res["gen_nll"] == pytest.approx(window_nll(model, ids[:-1], 0, 4, 1) / 3, rel=1e-6)
    finally:
        ev.set_eos("</s>")
    with pytest.raises(EdlmError, match="`eos` 'last' is not one of first, mdlm, all"):
        evaluate_rows(rows, ev, eos="last")


def test_mdlm_mode_scores_every_document_and_the_first_eos_only(tiny_hf):
    """eos="mdlm" (MDLM's mask): the documents are joined by the evaluator's EOS; every text token and the
    first EOS are predicted, the later EOS (a run of them too) are context."""
    d, model, tok = tiny_hf
    ev = get_evaluator(str(d))
    E, w = ev.eos, lambda t: tok(t, add_special_tokens=False)["input_ids"]
    rows = rows_of([f"cat{GPT2_EOS}dog{GPT2_EOS}{GPT2_EOS}ran", "a dog ran"])
    ids = [ev.bos, *w("cat"), E, *w("dog"), E, E, *w("ran")]
    x = torch.tensor([ids])
    with torch.no_grad():
        lp = torch.log_softmax(model(x).logits[0, :-1].double(), -1).gather(-1, x[0, 1:, None])[:, 0]
    want = -(lp[0] + lp[1] + lp[2] + lp[5]).item() + direct_nll(model, tok, "a dog ran")[0]  # positions 1, 2, 3, 6
    res = evaluate_rows(rows, ev, eos="mdlm")
    assert res["tokens_scored"] == 4 + 3 and (res["eos_tokens_skipped"], res["samples_cut_at_eos"]) == (2, 0)
    assert res["gen_nll"] == pytest.approx(want / 7, rel=1e-6)
    # with windows: 19 words in 4 documents (the 20-token text of the windows test, plus 3 EOS), context 8
    text = GPT2_EOS.join(" ".join((WORDS * 4)[a:b]) for a, b in ((0, 5), (5, 9), (9, 15), (15, 19)))
    toks = [ev.bos]
    for k, (a, b) in enumerate(((0, 5), (5, 9), (9, 15), (15, 19))):
        toks += ([E] if k else []) + w(" ".join((WORDS * 4)[a:b]))
    assert len(toks) == 23
    eos_at = [p for p, t in enumerate(toks) if t == E]
    assert eos_at == [6, 11, 18]
    counted = [p for p in range(1, 23) if p not in eos_at[1:]]  # the 2nd and 3rd EOS are context
    spans = [(0, 8, 1), (4, 12, 8), (8, 16, 12), (12, 20, 16), (15, 23, 20)]

    def per_position(seq, spans):  # position -> NLL, from the window that scores it
        per = {}
        for b, e, s0 in spans:
            xw = torch.tensor([seq[b:e]])
            with torch.no_grad():
                lpw = torch.log_softmax(model(xw).logits[0, :-1].double(), -1).gather(-1, xw[0, 1:, None])[:, 0]
            per.update({p: -lpw[p - b - 1].item() for p in range(s0, e)})
        return per

    per = per_position(toks, spans)
    got = ev.score(scoring.apply_eos(rows_of([text]), ev, "mdlm")[0])[0]
    assert (got.tokens, got.windows) == (20, 5) and got.nll == pytest.approx(sum(per[p] for p in counted), rel=1e-6)
    # --max-tokens 10: the sequence ends after its 10th scored prediction (position 10), then windows
    per = per_position(toks[:11], [(0, 8, 1), (3, 11, 8)])
    capped = ev.score(scoring.apply_eos(rows_of([text]), ev, "mdlm")[0], max_tokens=10)[0]
    assert capped.tokens == 10 and capped.nll == pytest.approx(sum(per[p] for p in counted[:10]), rel=1e-6)
    ev.set_eos(None)
    try:
        with pytest.raises(EdlmError, match="no EOS token to put between a sample's documents.*`eos='first'`"):
            evaluate_rows(rows, ev, eos="mdlm")
    finally:
        ev.set_eos("</s>")


def test_long_text_is_scored_in_windows(tiny_hf):
    """Context 8: a 20-token text (BOS + 19 words) is scored on all 19 predictions, window by window."""
    d, model, tok = tiny_hf
    ev = get_evaluator(str(d))
    text = " ".join((WORDS * 4)[:19])
    ids = [ev.bos] + tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == 20
    # stride 7 (context - 1): one token of left context for the first prediction of each new window; the
    # last window ends at the text's end and so starts at 12 (more context than the stride requires)
    by_hand = {
        7: [(0, 8, 1), (7, 15, 8), (12, 20, 15)],
        4: [(0, 8, 1), (4, 12, 8), (8, 16, 12), (12, 20, 16)],
        1: [(0, 8, 1)] + [(b, b + 8, b + 7) for b in range(1, 13)],
    }
    try:
        for chunked in (True, False):
            ev._chunked = chunked
            for stride, spans in by_hand.items():
                want, n = direct_nll(model, tok, text, spans)
                got = ev.score(rows_of([text, "a dog ran"]), stride=stride, batch_size=2)
                assert (got[0].tokens, got[0].windows, got[1].windows) == (19, len(spans), 1) and n == 19
                assert got[0].nll == pytest.approx(want, rel=1e-6)
    finally:
        ev._chunked = True
    res = evaluate_rows(rows_of([text, "a dog ran"]), ev)  # default stride: half the context
    assert (res["stride"], res["samples_windowed"], res["tokens_scored"]) == (4, 1, 19 + 3)  # was 7 + 3: cut
    for bad in (0, 8, 20):
        with pytest.raises(EdlmError, match=rf"`stride` {bad} must be between 1 and 7.*8 tokens"):
            evaluate_rows(rows_of([text]), ev, stride=bad)


class Bigram(torch.nn.Module):
    """A 'causal LM' whose next-token logits depend on the previous token only: any window that gives a
    prediction one token of context scores it exactly as the full sequence does."""

    def __init__(self, vocab: int, context: int):
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(0)))
        self.config = types.SimpleNamespace(n_positions=context, vocab_size=vocab)

    def get_output_embeddings(self):
        return None

    def get_decoder(self):
        return None

    def forward(self, input_ids, attention_mask=None):
        return types.SimpleNamespace(logits=self.table[input_ids])


def test_windows_equal_the_plain_score_when_context_does_not_matter(tiny_hf):
    _, _, tok = tiny_hf
    text = " ".join((WORDS * 5)[:29])
    ids = torch.tensor([2] + tok(text, add_special_tokens=False)["input_ids"])
    one = HFEvaluator(Bigram(len(tok), 64), tok, "bigram")
    one.context = 64  # the tokenizer says 8; this model has no limit: one pass over the 30 tokens
    plain = one.score(rows_of([text]))[0]
    assert (plain.tokens, plain.windows) == (29, 1)
    ref = -torch.log_softmax(one.model.table[ids[:-1]].double(), -1).gather(-1, ids[1:, None]).sum().item()
    assert plain.nll == pytest.approx(ref, rel=1e-6)  # the logits are float32
    ev = HFEvaluator(Bigram(len(tok), 5), tok, "bigram")
    assert ev.context == 5 and not ev._chunked
    for stride in range(1, 5):
        got = ev.score(rows_of([text]), stride=stride)[0]
        assert got.tokens == 29 and got.windows > 1 and got.nll == pytest.approx(plain.nll, rel=1e-12)


@pytest.mark.network
def test_corpus_eos_comes_from_the_tokenizer(data_root):
    assert REAL_CORPUS_EOS("gpt2") == (50256, GPT2_EOS)  # the real lookup, not the autouse stand-in
    assert REAL_CORPUS_EOS("char") == (None, None)
    with pytest.raises(EdlmError, match="corpus 'prose-bpe' is not prepared.*`eos='all'`"):
        REAL_CORPUS_EOS("prose-bpe")
