"""Tokenizers: char round trip and MASK rendering; GPT-2 ids from the offline files (network)."""

import pytest

from edlm.data.tokenizers import SyntheticTokenizer, char_tokenizer, gpt2_tokenizer, tokenizer_for


def test_char_round_trip_and_mask():
    tok = char_tokenizer()
    assert tok.vocab_size == 27 and tok.mask_id == 27 and tok.model_vocab_size == 28 and tok.eos_id is None
    text = "the quick brown fox jumps over the lazy dog"
    ids = tok.encode(text)
    assert isinstance(ids, list) and all(isinstance(i, int) for i in ids)
    assert ids[:4] == [19, 7, 4, 26] and tok.decode(ids) == text
    assert tok.encode("AbZ") == [0, 1, 25]
    assert tok.decode([0, 27, 26, 1]) == "a_ b"
    with pytest.raises(ValueError, match="alphabet"):
        tok.encode("a1")
    assert tokenizer_for("char").name == "char"


def test_synthetic_tokenizer():
    tok = SyntheticTokenizer(32)
    ids = list(range(32))
    assert tok.decode(ids + [32]).endswith("_") and tok.encode(tok.decode(ids)) == ids
    wide = SyntheticTokenizer(100)
    assert wide.encode(wide.decode([0, 99])) == [0, 99]


@pytest.mark.network
def test_gpt2_ids_and_round_trip(data_root):
    tok = gpt2_tokenizer()
    assert tok.vocab_size == 50257 and tok.mask_id == 50257 and tok.eos_id == 50256
    assert tok.encode("Hello world!") == [15496, 995, 0]
    text = "Energy-based diffusion, 1234 ünïcödé  spaces<|endoftext|>next"
    ids = tok.encode(text)
    assert 50256 in ids and tok.decode(ids) == text
    assert tok.encode_batch(["Hello world!", " x"]) == [[15496, 995, 0], [2124]]
    assert tok.decode([15496, 50257, 995]) == "Hello[MASK] world"
