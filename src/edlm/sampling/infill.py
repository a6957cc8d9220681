"""Infilling: tokens fixed at any positions, the others generated (MDLM, EDLM-AR, EDLM-NCE alike).

A template is text in which `[MASK]` stands for one token to generate and `[MASK*N]` for N of them:

    "ab[MASK*5]cd"        ->  a b _ _ _ _ _ c d      (9 tokens, 5 generated)
    "[MASK*3]x[MASK]"     ->  _ _ _ x _

The text between markers is tokenised piece by piece with the run's tokenizer (for GPT-2 BPE a piece is
encoded on its own, so write the space before a word into the piece: "The[MASK*3] sat"). Token ids work
too: a list with None for each token to generate ([3, None, None, 7]), or ids plus a keep-mask.

Nothing else is needed in the sampler: it never changes a token that is not MASK (method.md 1), so an
infill is its start state, fixed tokens where given and MASK elsewhere. The energies see whole sequences:
the AR energy scores every position, the fixed tokens included (method.md 3a).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from numbers import Integral

import torch

from edlm.errors import EdlmError

MARKER = re.compile(r"\[MASK(?:\*(\d+))?\]")
"""`[MASK]` = one token to generate, `[MASK*N]` = N of them"""
MAX_TOKENS = 1 << 24
"""the longest infill (16.7M tokens): a bound checked before the blanks are spelled out, so `[MASK*N]` with a
mistyped N is an error rather than a list of N entries (the job's memory is checked later, sampling/budget.py)"""


@dataclass(frozen=True)
class Infill:
    """A sequence with fixed tokens and blanks: ids[i] is a token id, or None where a token is generated."""

    ids: tuple

    @property
    def length(self) -> int:
        return len(self.ids)

    @property
    def keep(self) -> list[bool]:
        """True where the token is fixed."""
        return [i is not None for i in self.ids]

    @property
    def blanks(self) -> int:
        return sum(i is None for i in self.ids)

    def x_init(self, batch: int, mask_id: int, device=None) -> torch.Tensor:
        """The sampler's start state (batch, length): the fixed tokens, MASK at the blanks."""
        row = torch.tensor([mask_id if i is None else i for i in self.ids], dtype=torch.long, device=device)
        return row[None].repeat(batch, 1)

    def render(self, decode, mask_token: str = "[MASK]") -> str:
        """The template as text again, each run of blanks written [MASK*N] (summaries, trace titles)."""
        out, run, piece = [], 0, []
        for i in list(self.ids) + ["end"]:
            if i is None:
                if piece:
                    out.append(decode(piece))
                    piece = []
                run += 1
                continue
            if run:
                out.append(mask_token if run == 1 else f"{mask_token[:-1]}*{run}]")
                run = 0
            if i != "end":
                piece.append(i)
        if piece:
            out.append(decode(piece))
        return "".join(out)

    @classmethod
    def from_ids(cls, ids, keep=None) -> Infill:
        """ids: token ids, None for a blank; or ids with keep (True = fixed, False = generate there)."""
        ids = list(ids.tolist() if torch.is_tensor(ids) else ids)
        if keep is not None:
            keep = list(keep.tolist() if torch.is_tensor(keep) else keep)
            if len(keep) != len(ids):
                raise EdlmError(f"infill: {len(ids)} ids but a keep-mask of {len(keep)}; give one flag per token")
            ids = [i if k else None for i, k in zip(ids, keep, strict=True)]
        for p, i in enumerate(ids):
            if i is not None and (isinstance(i, bool) or not isinstance(i, Integral)):
                raise EdlmError(f"infill: position {p} holds {i!r}; give integer token ids, None for a blank")
        out = tuple(None if i is None else int(i) for i in ids)
        return cls(_checked(out))

    @classmethod
    def from_template(cls, text: str, encode) -> Infill:
        """text with [MASK] / [MASK*N] markers; encode(piece) -> ids (the run's tokenizer)."""
        if "[MASK" in MARKER.sub("", text):
            raise EdlmError(f"infill template {_short(text)}: write blanks as [MASK] (one token) or [MASK*N] "
                            "(N tokens)")
        ids, pos = [], 0
        for m in MARKER.finditer(text):
            ids.extend(encode(text[pos:m.start()]) if m.start() > pos else [])
            digits = m.group(1) or "1"
            n = int(digits) if len(digits) <= 9 else MAX_TOKENS + 1  # (int() refuses over 4300 digits)
            if n < 1:
                raise EdlmError(f"infill template {_short(text)}: [MASK*{digits}] must stand for at least one token")
            if len(ids) + n > MAX_TOKENS:
                shown = digits if len(digits) <= 20 else f"{digits[:20]}... ({len(digits)} digits)"
                raise EdlmError(f"infill template {_short(text)}: [MASK*{shown}] makes it longer than "
                                f"{MAX_TOKENS} tokens; give a smaller N")
            ids.extend([None] * n)
            pos = m.end()
        if pos < len(text):
            ids.extend(encode(text[pos:]))
        return cls(_checked(tuple(ids), text))


def _short(text: str, n: int = 60) -> str:
    """repr of text, cut to n characters (an error message must stay one readable line)."""
    return repr(text) if len(text) <= n else repr(text[:n]) + f"... ({len(text)} characters)"


def _checked(ids: tuple, text: str | None = None) -> tuple:
    what = f"infill template {_short(text)}" if text is not None else "infill"
    if not ids:
        raise EdlmError(f"{what} is empty: give fixed tokens and [MASK] / [MASK*N] blanks")
    if len(ids) > MAX_TOKENS:
        raise EdlmError(f"{what} has {len(ids)} tokens, more than {MAX_TOKENS}; give a shorter one")
    if all(i is not None for i in ids):
        raise EdlmError(f"{what} has no blank: mark the tokens to generate with [MASK] or [MASK*N] "
                        "(or None among token ids)")
    return ids


def as_infill(spec, encode) -> Infill:
    """A template string, a list of ids with None blanks, an (ids, keep) pair, or an Infill."""
    if isinstance(spec, Infill):
        return spec
    if isinstance(spec, str):
        return Infill.from_template(spec, encode)
    if isinstance(spec, tuple) and len(spec) == 2 and not isinstance(spec[0], (int, type(None))):
        return Infill.from_ids(*spec)
    if isinstance(spec, (list, tuple)) or torch.is_tensor(spec):
        return Infill.from_ids(spec)
    raise EdlmError(f"infill {spec!r} is not understood: give a template 'ab[MASK*5]cd', token ids with None "
                    "for blanks, or (ids, keep)")
