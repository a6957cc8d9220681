"""Data: tokenizers, the synthetic ground-truth language, corpus preparation and block loaders.

    from edlm.data import prepare, load_split, BlockLoader, tokenizer_for
    prepare("synthetic")                                   # or `edlm data prepare synthetic`
    loader = BlockLoader(load_split("synthetic", "train"), seq_len=128, batch_size=32)
"""

# `manifest` here is the function (corpora.manifest); the module of that name is edlm.data.manifest, reached by
# `from edlm.data.manifest import ...`.
from edlm.data.corpora import CORPORA, corpus_dir, info, load_split, manifest, prepare
from edlm.data.loader import BlockLoader, iter_eval_blocks
from edlm.data.synthetic import SyntheticConfig, SyntheticLanguage, load_language
from edlm.data.tokenizers import Tokenizer, char_tokenizer, gpt2_tokenizer, tokenizer_for

__all__ = [
    "CORPORA", "corpus_dir", "info", "load_split", "manifest", "prepare",
    "BlockLoader", "iter_eval_blocks", "SyntheticConfig", "SyntheticLanguage", "load_language",
    "Tokenizer", "char_tokenizer", "gpt2_tokenizer", "tokenizer_for",
]  # fmt: skip
