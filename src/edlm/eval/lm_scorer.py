"""A language model's log-probability of an MDLM's candidates: what an LM energy (edlm.energy.lm) asks for.

The LM is any evaluator model: a Hugging Face or GGUF causal LM (edlm.eval.hf_evaluator) or an edlm AR run
(edlm.eval.evaluators.EdlmAREvaluator). Candidates arrive as ids in the MDLM's vocabulary and are scored at one
of two levels:

- **token**: the LM's tokenizer is the MDLM's (every id decodes to the same string, and probe texts encode to the
  same ids): the candidate's ids are scored as they are, after the LM's BOS, no decoding.
- **text**: each candidate is decoded with the MDLM's tokenizer and the text is scored exactly as
  `edlm eval samples --eos all` scores a sample (the same code: the LM's BOS convention, every token predicted,
  text beyond the LM's context in sliding windows).

Every token counts, EOS included (eos "all"): under the evaluators' default rule the EOS tokens after a sample's
first are unscored context, and an energy would then get runs of EOS for free.

    scorer = LMScorer(get_evaluator("smollm2-135m"), tokenizer_for("wiki-char"), "wiki-char")
    scorer.log_prob(x0)   # (N, L) ids -> (N,) float64 nats
"""

from __future__ import annotations

import torch

from edlm.errors import EdlmError
from edlm.eval.scoring import Evaluator

LEVELS = ("auto", "token", "text")
PROBE_TEXTS = ("the cat sat on the mat", "Hello world, it's 3 o'clock.\nA new line")


class LMScorer:
    """log p_LM(x0) of MDLM candidates under an evaluator's model. `tokenizer`: the MDLM's (edlm.data.tokenizers);
    `corpus`: the MDLM's corpus name (rows carry it); batch_size: sequences per LM forward."""

    def __init__(self, ev: Evaluator, tokenizer, corpus: str, *, level: str = "auto", batch_size: int = 64):
        if level not in LEVELS:
            raise EdlmError(f"LM energy level {level!r}: use one of {', '.join(LEVELS)}")
        self.ev, self.tok, self.corpus, self.batch_size = ev, tokenizer, corpus, batch_size
        same = same_tokens(ev, tokenizer)
        if level == "token" and not same:
            raise EdlmError(f"the LM {ev.name!r} does not share the MDLM's tokenizer ({tokenizer.name}), so it cannot "
                            "score the candidates' ids directly: use level 'text' (or 'auto')")
        self.level = "token" if (level == "token" or (level == "auto" and same)) else "text"
        if self.level == "text":
            check_encodable(ev, tokenizer)
        self.candidates = 0  # distinct sequences scored
        self.lm_tokens = 0  # LM tokens read (BOS and context included), the compute an LM energy spends

    @property
    def name(self) -> str:
        return self.ev.name

    @property
    def identity(self) -> str | None:
        return getattr(self.ev, "identity", None)

    def describe(self) -> dict:
        return {"energy_lm": self.ev.name, "energy_level": self.level, "energy_model": self.identity}

    @torch.no_grad()
    def log_prob(self, x0: torch.Tensor) -> torch.Tensor:
        """(N, L) MDLM ids -> (N,) log p_LM in nats, float64, on x0's device. Identical candidates (frequent on
        late steps, when few positions are left to draw) are scored once."""
        uniq, inverse = torch.unique(x0, dim=0, return_inverse=True)
        ids = uniq.tolist()
        if self.level == "token":
            scores = self._token_scores(ids)
        else:
            scores = self._text_scores(ids)
        self.candidates += len(ids)
        lp = torch.tensor([-s.nll for s in scores], dtype=torch.float64, device=x0.device)
        return lp[inverse]

    def _token_scores(self, ids: list[list[int]]):
        if self.ev.space == "ids":  # an edlm AR run: its own BOS, every id predicted
            self.lm_tokens += sum(len(q) + 1 for q in ids)
            return self.ev.score([{"ids": q, "corpus": self.corpus} for q in ids], batch_size=self.batch_size)
        bos = self.ev.bos
        enc = [([int(bos)] + q, [False] + [True] * len(q)) if bos is not None else (q, [False] + [True] * (len(q) - 1))
               for q in ids]
        self.lm_tokens += sum(len(q) for q, _ in enc)
        return self.ev.score_tokens(enc, batch_size=self.batch_size)

    def _text_scores(self, ids: list[list[int]]):
        texts = self.tok.decode_batch(ids)
        if self.ev.space == "ids":  # an edlm AR run of another tokenizer: the text in its tokens
            ar_tok, data = _ar_tokenizer(self.ev)
            rows = [{"ids": ar_tok.encode(t), "corpus": data} for t in texts]
            self.lm_tokens += sum(len(r["ids"]) + 1 for r in rows)
        else:
            rows = [{"ids": q, "text": t, "corpus": self.corpus} for q, t in zip(ids, texts, strict=True)]
            self.lm_tokens += sum(len(self.ev.encode(t)) for t in texts)
        return self.ev.score(rows, batch_size=self.batch_size)


def _ar_tokenizer(ev):
    from edlm.data.tokenizers import tokenizer_for

    data = ev.meta.get("data")
    return tokenizer_for(data), data


def same_tokens(ev: Evaluator, tokenizer) -> bool:
    """Does the evaluator's model read the MDLM's token ids as they are?"""
    V = tokenizer.vocab_size
    if ev.space == "ids":  # an edlm AR run: the same tokenizer kind and vocabulary
        meta = getattr(ev, "meta", {})
        return meta.get("tokenizer") == tokenizer.name and int(meta.get("mask_id", -1)) == V
    hf = getattr(ev, "tok", None)
    if hf is None or len(hf) < V or getattr(ev, "vocab", 0) < V:
        return False
    theirs = hf.batch_decode([[i] for i in range(V)], skip_special_tokens=False, clean_up_tokenization_spaces=False)
    if theirs != [tokenizer.decode([i]) for i in range(V)]:
        return False
    for text in PROBE_TEXTS:  # the same merges: a text encodes to the same ids
        try:
            ours = tokenizer.encode(text)
        except (ValueError, KeyError):  # not in the MDLM's alphabet: nothing to compare
            continue
        if hf(text, add_special_tokens=False)["input_ids"] != ours:
            return False
    return True


def check_encodable(ev: Evaluator, tokenizer) -> None:
    """Every MDLM token's text must be something the LM's tokenizer can encode (text level), else one error now,
    before any sampling."""
    V = tokenizer.vocab_size
    symbols = [tokenizer.decode([i]) for i in range(V)]
    if ev.space == "ids":
        ar_tok, data = _ar_tokenizer(ev)
        for s in symbols:
            try:
                ar_tok.encode(s)
            except (ValueError, KeyError):
                raise EdlmError(f"the LM {ev.name!r} (an edlm run on {data!r}) cannot encode {s!r}, a token of the "
                                f"MDLM's vocabulary ({tokenizer.name}): use an LM whose tokenizer covers the MDLM's "
                                "text (e.g. smollm2-135m)") from None
        return
    unk = getattr(ev.tok, "unk_token_id", None)
    if unk is None:  # byte-level tokenizers encode any text
        return
    enc = ev.tok(symbols, add_special_tokens=False)["input_ids"]
    for s, e in zip(symbols, enc, strict=True):
        if unk in e and s != ev.tok.unk_token:  # (SmolLM2's unknown token is <|endoftext|>, GPT-2's EOS: fine)
            raise EdlmError(f"the LM {ev.name!r} maps {s!r}, a token of the MDLM's vocabulary ({tokenizer.name}), to "
                            "its unknown token: it cannot score the MDLM's text. Use an LM whose tokenizer covers it "
                            "(e.g. smollm2-135m)")
