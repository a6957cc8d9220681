"""Hugging Face causal LMs (a hub name, a local folder, or a GGUF file) as gen-PPL evaluators.

They score the rows' decoded text re-tokenised with their own tokenizer (``space == "text"``): their BOS
(if any) first, then the text's tokens, then their EOS when the sample was cut at its own EOS
(edlm.eval.scoring.ENDED), or the sample's documents joined by their EOS (edlm.eval.scoring.DOCS). Text
longer than the model's context is scored in sliding windows.
"""

from __future__ import annotations

import importlib.util
import pickle
import re
import time
from pathlib import Path

import torch

from edlm.errors import EdlmError
from edlm.eval.scoring import (
    BUILTIN_HELP,
    DOCS,
    ENDED,
    EVAL_EXTRA,
    LOGIT_BUDGET,
    Evaluator,
    RowsDone,
    Score,
    cap_predictions,
    window_items,
)
from edlm.utils import pick_device


def require_hf(name: str, gguf: bool = False):
    """Import transformers (and check gguf/accelerate for GGUF files) or say how to install them."""
    need = ["transformers"] + (["gguf", "accelerate"] if gguf else [])
    missing = [m for m in need if importlib.util.find_spec(m) is None]
    if missing:
        raise EdlmError(
            f"evaluator {name!r} needs {', '.join(missing)}, which is not installed: run `{EVAL_EXTRA}`"
        )
    import transformers

    transformers.logging.set_verbosity_error()
    return transformers


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Can we open a connection to the Hugging Face hub (or a proxy is configured)?"""
    import os
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        return False
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _dtype_kw(transformers) -> dict:
    major, minor = (int(x) for x in re.findall(r"\d+", transformers.__version__)[:2])
    return {"dtype": torch.float32} if (major, minor) >= (4, 56) else {"torch_dtype": torch.float32}


class HFEvaluator(Evaluator):
    """A transformers causal LM with its own tokenizer; scores the rows' decoded text."""

    space = "text"
    default_corpus = "gpt2"  # rows that name no corpus are decoded as GPT-2 ids

    def __init__(self, model, tokenizer, name: str, device="cpu", load_seconds: float = 0.0):
        self.name = name
        self.device = pick_device(device)
        self.model = model.to(self.device).eval()
        self.tok = tokenizer
        self.load_seconds = load_seconds
        self.bos = tokenizer.bos_token_id
        self.eos = tokenizer.eos_token_id
        cfg = model.config
        ctx = [getattr(cfg, k, None) for k in ("max_position_embeddings", "n_positions")]
        ml = getattr(tokenizer, "model_max_length", None)
        ctx.append(ml if isinstance(ml, int) and ml < 10**7 else None)
        ctx = [c for c in ctx if isinstance(c, int) and c > 1]
        self.context = min(ctx) if ctx else 1024
        self.vocab = (
            int(model.get_output_embeddings().weight.shape[0])
            if model.get_output_embeddings() is not None
            else int(cfg.vocab_size)
        )
        self._chunked = self._chunked_ok()

    # -- loading -----------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls, source: str, device="cpu", *, gguf_file: str | None = None, name: str | None = None
    ):
        name = name or source
        transformers = require_hf(name, gguf=gguf_file is not None)
        t = time.perf_counter()
        # No code from the model's files: no custom modelling code, and weights from safetensors (or GGUF),
        # never from a pickled pytorch_model.bin.
        kw = {"gguf_file": gguf_file} if gguf_file else {}
        kw["trust_remote_code"] = False
        if not gguf_file and not Path(source).is_dir() and not _hub_reachable():
            # offline: use the local HF cache only, instead of retrying the network for ~50 s
            kw["local_files_only"] = True
        try:
            tok = transformers.AutoTokenizer.from_pretrained(source, **kw)
            model = transformers.AutoModelForCausalLM.from_pretrained(
                source, **kw, **({} if gguf_file else {"use_safetensors": True}), **_dtype_kw(transformers))
        except (OSError, ValueError, KeyError, RuntimeError, pickle.UnpicklingError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            if not gguf_file and ("safetensors" in first or isinstance(e, pickle.UnpicklingError)):
                raise EdlmError(
                    f"evaluator {name!r} has no model.safetensors ({first}): edlm reads Hugging Face weights "
                    f"from safetensors only, since a pytorch_model.bin is a pickle, which could run code; "
                    f"re-save the model with save_pretrained (it writes safetensors) where you trust it"
                ) from None
            if gguf_file:
                raise EdlmError(
                    f"transformers cannot load the GGUF {Path(source) / gguf_file} ({first}); check "
                    f"the file, or upgrade with `pip install -U 'edlm[eval]'`"
                ) from None
            raise EdlmError(
                f"unknown evaluator {name!r}: transformers could not load it as a Hugging Face causal "
                f"LM ({first}). Without internet only local folders and cached models work (the "
                f"offline choices are smollm2-135m and gemma3-270m). Valid evaluators: "
                f"{BUILTIN_HELP}"
            ) from None
        return cls(model, tok, name, device, load_seconds=time.perf_counter() - t)

    @classmethod
    def from_gguf(
        cls,
        path: str | Path,
        device="cpu",
        name: str | None = None,
        bos_token: str | None = None,
        eos_token: str | None = None,
    ):
        path = Path(path).expanduser().resolve()
        if not path.is_file():
            raise EdlmError(f"GGUF file {path} does not exist; check the path after gguf:")
        ev = cls.from_pretrained(str(path.parent), device, gguf_file=path.name, name=name or f"gguf:{path}")
        if bos_token is not None:
            ev.set_bos(bos_token)
        if eos_token is not None:
            ev.set_eos(eos_token)
        return ev

    def _token_id(self, token: str, role: str) -> int:
        i = self.tok.convert_tokens_to_ids(token)
        if not isinstance(i, int) or i == self.tok.unk_token_id and token != self.tok.unk_token:
            raise EdlmError(f"evaluator {self.name!r} has no token {token!r} to use as {role}")
        return i

    def set_bos(self, token: str | None) -> None:
        """Score from this document-start token instead of the tokenizer's BOS (None: no BOS)."""
        self.bos = None if token is None else self._token_id(token, "BOS")

    def set_eos(self, token: str | None) -> None:
        """Predict this document-end token after a sample that ended, instead of the tokenizer's EOS (an
        instruct model's EOS ends a chat turn, not a document). None: predict no EOS."""
        self.eos = None if token is None else self._token_id(token, "EOS")

    # -- scoring -----------------------------------------------------------------------------------
    def encode(self, text: str, max_tokens: int | None = None, *, ended: bool = False) -> list[int]:
        """Evaluator tokens: BOS (if any), the text's tokens, the EOS (if any) when the sample ended there;
        at most max_tokens predictions (every token but the first is predicted). No cut to the context:
        score() reads long sequences in windows."""
        ids = list(self.tok(text, add_special_tokens=False)["input_ids"]) if text else []
        if self.bos is not None:
            ids = [int(self.bos)] + ids
        if ended and self.eos is not None:
            ids.append(int(self.eos))
        return ids if max_tokens is None else ids[: max_tokens + 1]

    def _encode_row(self, row: dict, text: str, max_tokens: int | None) -> tuple[list[int], list[bool]]:
        """(tokens, is each position's prediction scored): the first token is context (the BOS, or the
        text's first token without one); under eos="mdlm" only the first EOS between documents is scored."""
        docs = row.get(DOCS)
        if docs is None:
            ids = self.encode(text, ended=bool(row.get(ENDED)))
            return cap_predictions(ids, [False] + [True] * (len(ids) - 1), max_tokens)
        if self.eos is None:
            raise EdlmError(
                f"evaluator {self.name!r} has no EOS token to put between a sample's documents under "
                "`eos='mdlm'`; use `eos='first'` or `eos='all'`"
            )
        ids = self.encode(docs[0])
        counted = [True] * len(ids)
        for k, d in enumerate(docs[1:]):
            more = [int(self.eos)] + (list(self.tok(d, add_special_tokens=False)["input_ids"]) if d else [])
            ids += more
            counted += [k == 0] + [True] * (len(more) - 1)
        counted[:1] = [False] * min(1, len(counted))
        return cap_predictions(ids, counted, max_tokens)

    def _texts(self, rows) -> list[str]:
        out = []
        for r in rows:
            t = r.get("text")
            if not isinstance(t, str):
                from edlm.data.tokenizers import tokenizer_for

                t = tokenizer_for(r.get("corpus") or self.default_corpus).decode(r["ids"])
            out.append(t)
        return out

    def _chunked_ok(self) -> bool:
        """Can we apply the output layer to the decoder's hidden states ourselves (so only the predicted
        positions get logits)? Checked once against the model's own forward on a few tokens."""
        try:
            dec, head = self.model.get_decoder(), self.model.get_output_embeddings()
            if dec is None or head is None:
                return False
            x = torch.tensor([[1, 2, 3, 4, 5, 6]], device=self.device) % self.vocab
            with torch.no_grad():
                ref = self.model(input_ids=x).logits.float()
                got = self._head(head, dec(input_ids=x).last_hidden_state).float()
            return got.shape == ref.shape and torch.allclose(got, ref, atol=1e-4, rtol=1e-4)
        except Exception:
            return False

    def _head(self, head, h):
        logits = head(h)
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    @torch.no_grad()
    def _nll_batch(self, seqs: list[list[int]], counted: list[list[bool]] | None = None) -> list[float]:
        """Summed NLL of the predictions of each sequence's positions where counted[i] is True (default: all
        but the first); the others are context (e.g. a window's overlap with the previous one)."""
        T = max(len(s) for s in seqs)
        x = torch.zeros(len(seqs), T, dtype=torch.long)
        am = torch.zeros(len(seqs), T, dtype=torch.long)  # attention: the real tokens (right padding)
        sc = torch.zeros(len(seqs), T, dtype=torch.bool)  # scored positions
        for i, s in enumerate(seqs):
            x[i, : len(s)] = torch.tensor(s)
            am[i, : len(s)] = 1
            sc[i, : len(s)] = torch.tensor(counted[i]) if counted else True
        x, am = x.to(self.device), am.to(self.device)
        tgt, valid = x[:, 1:], sc[:, 1:].to(self.device)
        if self._chunked:
            h = self.model.get_decoder()(input_ids=x, attention_mask=am).last_hidden_state[:, :-1]
            hv, tv = h[valid], tgt[valid]  # only the predicted positions
            head = self.model.get_output_embeddings()
            nll_tok = torch.empty(len(tv), dtype=torch.float64, device=self.device)
            step = max(1, LOGIT_BUDGET // self.vocab)
            for j in range(0, len(tv), step):
                lg = self._head(head, hv[j : j + step]).float()
                nll_tok[j : j + step] = torch.nn.functional.cross_entropy(
                    lg, tv[j : j + step], reduction="none"
                )
            per = torch.zeros(valid.shape, dtype=torch.float64, device=self.device)
            per[valid] = nll_tok
        else:
            lg = self.model(input_ids=x, attention_mask=am).logits[:, :-1].float()
            per = torch.nn.functional.cross_entropy(lg.transpose(1, 2), tgt, reduction="none").double()
            per = per * valid
        return per.sum(1).tolist()

    def score(self, rows, *, batch_size=16, max_tokens=None, stride=None, bar=None):
        stride = self.stride_for(stride)
        enc = [self._encode_row(r, t, max_tokens) for r, t in zip(rows, self._texts(rows), strict=True)]
        wins = window_items([q for q, _ in enc], [c for _, c in enc], self.context, stride, 1)
        nll, nwin = [0.0] * len(rows), [0] * len(rows)
        done = RowsDone([w[0] for w in wins], len(rows), bar)
        order = sorted(range(len(wins)), key=lambda k: -len(wins[k][1]))
        j = 0
        while j < len(order):
            T = len(wins[order[j]][1])
            # enough windows to fill the batch, but not more positions than the logit budget allows
            b = batch_size if self._chunked else max(1, min(batch_size, 2 * LOGIT_BUDGET // (T * self.vocab)))
            idx = order[j : j + b]
            got = self._nll_batch([wins[k][1] for k in idx], [wins[k][2] for k in idx])
            for k, v in zip(idx, got, strict=True):
                nll[wins[k][0]] += float(v)
                nwin[wins[k][0]] += 1
            done.done([wins[k][0] for k in idx])
            j += b
        return [Score(nll[i], sum(c), nwin[i]) for i, (_, c) in enumerate(enc)]

    def describe(self):
        name = lambda i: self.tok.convert_ids_to_tokens(i) if i is not None else None
        return {**super().describe(), "evaluator_bos": name(self.bos), "evaluator_eos": name(self.eos)}
