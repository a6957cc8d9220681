"""Corpus names that stand for ground-truth languages (exact log p), kept apart from the builders so that
both the corpus registry (corpora.py) and the languages (languages.py) can read them without a cycle.

A Markov language of the family takes its knob in the name: `markov2-share0.7` is `markov2` with
share = 0.7 (each successor of a pair comes with probability 0.7 from a list fixed by the last token
alone, so one neighbour reveals more; data/markov.py). The manifest states the knob.
"""

from __future__ import annotations

import re

from edlm.errors import EdlmError

LANGUAGES = ("synthetic", "markov2", "markov3", "lexicon")
"""the named ground-truth languages; `markov2-shareX` / `markov3-shareX` add the knob"""

_KNOB = re.compile(r"^(markov[23])-share(0|1|0\.[0-9]+|1\.0+)$")


def knob(name: str) -> tuple[str, float] | None:
    """('markov2', 0.7) for 'markov2-share0.7'; None for a name without a knob."""
    m = _KNOB.match(name)
    return (m[1], float(m[2])) if m else None


def is_language(name: str) -> bool:
    """True when corpus `name` is a ground-truth language with an exact likelihood."""
    return name in LANGUAGES or knob(name) is not None


_TEXTFILE = re.compile(r"^textfile:([A-Za-z0-9][A-Za-z0-9_.-]{0,63})$")


def textfile_name(name: str) -> str | None:
    """'notes' for 'textfile:notes' (a named corpus of your own text, one folder per name); None for any name
    not of that form. A malformed one ('textfile:', 'textfile:a/b') is an EdlmError."""
    if not name.startswith("textfile:"):
        return None
    m = _TEXTFILE.match(name)
    if m is None:
        raise EdlmError(f"corpus name {name!r}: after 'textfile:' give 1-64 letters, digits, '_', '.' or '-', "
                        "starting with a letter or digit (e.g. textfile:notes)")
    return m[1]


def is_textfile(name: str) -> bool:
    """True for `textfile` and every `textfile:NAME`: corpora built from the user's own text."""
    return name == "textfile" or textfile_name(name) is not None


def folder_name(name: str) -> str:
    """The folder of corpus `name` in the data cache: `textfile:NAME` lives in `textfile-NAME`."""
    t = textfile_name(name)
    return name if t is None else f"textfile-{t}"
