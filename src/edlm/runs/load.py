"""Open a run folder and rebuild its model: the one entry point for sampling, eval and the energies.

    model, meta = load_model("runs/mdlm")       # EMA weights, eval mode; meta: run.json's dict + "step"
    RunMeta.from_dict(meta)                       # its typed view (runs/folder.py): objective, mask_id, model ...
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch

from edlm.config.model import TransformerConfig
from edlm.errors import EdlmError
from edlm.models.transformer import Transformer
from edlm.runs.binding import check_data
from edlm.runs.folder import (
    RunMeta,
    as_meta,
    check_identity,
    load_weights,
    read_meta,
    read_run,  # noqa: F401 (re-exported: callers on other branches import it from here)
)


def build_model(objective: str, model_cfg: TransformerConfig):
    if objective == "nce":
        from edlm.energy.nce import EnergyNet

        return EnergyNet(model_cfg)
    return Transformer(model_cfg)


_INITS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "xavier_uniform_", "xavier_normal_",
          "kaiming_uniform_", "kaiming_normal_")


@contextmanager
def _skip_init():
    """Within the block, torch.nn.init's initialisers leave tensors as allocated (uninitialised memory):
    for modules whose every parameter is then loaded (load_model checks that none is missing)."""
    saved = {n: getattr(torch.nn.init, n) for n in _INITS}
    for n in _INITS:
        setattr(torch.nn.init, n, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for n, f in saved.items():
            setattr(torch.nn.init, n, f)


def load_model(run: str | Path, device="cpu", *, ema: bool = True, expect: str | None = None,
               accept_data_change: bool = False):
    """-> (model, run.json's dict + "step"). run.json must match its checkpoint (check_identity) and its
    corpus as prepared now (check_data; accept_data_change: a warning instead of an error)."""
    meta = read_meta(Path(run))
    obj = meta.objective
    if expect is not None and obj not in expect.split("|"):
        raise EdlmError(f"{run} is a {obj!r} run, but a {expect!r} run is needed here")
    # No random initialisation of weights the checkpoint overwrites, and the checkpoint's tensors taken as
    # they are (assign=True): for `small` on a 2-core CPU that saves 1.7 s of init and a 0.9 s copy
    # (cold start). Not the meta device: initialising meta tensors imports torch._dynamo (~2 s).
    sd, state = load_weights(Path(run), ema=ema, device="cpu")
    check_identity(meta.raw, state, Path(run))
    check_data(meta.raw, run, accept_data_change)
    with _skip_init():
        model = build_model(obj, meta.model)
    try:
        missing, unexpected = model.load_state_dict(sd, strict=False, assign=True)
    except RuntimeError as e:  # shapes differ: strict=False does not cover those
        raise EdlmError(f"checkpoint of {run} does not fit the model run.json describes "
                        f"({str(e).splitlines()[-1].strip()[:160]}): run.json or the weights were edited") from None
    if missing or unexpected:
        raise EdlmError(f"checkpoint of {run} does not match its config: missing {missing[:5]}, "
                        f"unexpected {unexpected[:5]}; it was written by another version or edited")
    model.to(device).eval()
    return model, {**meta.raw, "step": state.get("step")}


def check_compatible(meta: RunMeta | dict, other: RunMeta | dict, what: str):
    """Two runs used together (proposal + energy) must share the vocabulary and the length."""
    meta, other = as_meta(meta), as_meta(other)
    if meta.mask_id != other.mask_id:
        raise EdlmError(f"{what}: vocabularies differ (mask id {meta.mask_id} vs {other.mask_id}); "
                        "use runs trained on the same corpus/tokenizer")
    if other.model.max_len < meta.train.seq_len:
        raise EdlmError(f"{what}: the energy model handles {other.model.max_len} tokens, "
                        f"fewer than the proposal's {meta.train.seq_len}")

