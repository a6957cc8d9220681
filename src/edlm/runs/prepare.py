"""The run.json of a training about to start: a new run's, built from its configs and corpus, or, on resume, the
saved one with the options that may change applied (runs/resume.py)."""

from __future__ import annotations

from pathlib import Path

from edlm.config.model import TransformerConfig
from edlm.config.train import TrainConfig, check_config
from edlm.data import corpora
from edlm.errors import EdlmError
from edlm.runs import checkpoint as ckpt
from edlm.runs.binding import manifest_binding, rebind
from edlm.runs.folder import RunMeta, read_meta, read_run
from edlm.runs.resume import apply_overrides


def prepare_run(out: Path, cfg: TrainConfig, model_cfg: TransformerConfig, resume: bool,
                max_steps: int | None = None, world_size: int = 1, overrides: dict | None = None,
                accept_data_change: bool = False):
    """-> (RunMeta, TrainConfig, TransformerConfig) of a new run, or of the run in `out` on resume (written
    to RUN/run.json later, by edlm.api.trainer). Never overwrites an existing run unless resuming it.

    On resume the saved config wins, except for the options in `overrides` that RESUME_OVERRIDABLE lists
    (learning rate and schedule, clipping, logging/saving cadence, length of training, device); any other
    option given with a value that differs from the saved one is an error. The per-device batch is
    re-derived from the saved GLOBAL batch, so a run can continue on another number of devices. The corpus
    must be the one the run was made from (runs/binding.py check_data), unless accept_data_change."""
    out = Path(out)
    meta_path = out / "run.json"
    if not meta_path.exists() and (ckpt.has_run_state(out)):
        raise EdlmError(f"{out} holds training state (checkpoints or metrics.jsonl) but no run.json (the run's "
                        "config): restore run.json from a backup; it cannot be rebuilt from the preset safely")
    if meta_path.exists():
        if not resume:
            raise EdlmError(f"{out} already holds a run: pass `resume=True` to continue it (`resume='auto'` "
                            "continues a run or starts one), `overwrite=True` to start it again, or choose another "
                            "`out`")
        raw = read_run(out)
        if ckpt.has_checkpoint(out):  # run.json as its checkpoint left it, before anything is built from it
            ckpt.check_identity(raw, ckpt.checked_state(out, quiet=True)[1], out)
        saved = TrainConfig.from_dict(raw["train"])
        overrides = dict(overrides or {})
        if max_steps is not None:
            overrides["max_steps"] = max_steps
        changed = apply_overrides(out, raw, saved, overrides, rebind(raw, out, accept_data_change))
        try:
            check_config(saved)
        except EdlmError as e:  # a bad value saved by an older edlm (given ones were checked already)
            opt = str(e).split()[0]
            if opt.strip("`") in overrides:
                raise
            raise EdlmError(f"{e} (the value saved in {meta_path}; pass {opt} to override it on `resume=True`)"
                            ) from None
        global_batch = raw.get("global_batch", saved.batch_size * saved.grad_accum)
        per = global_batch // (world_size * saved.grad_accum)
        if per * world_size * saved.grad_accum != global_batch:
            raise EdlmError(f"the run's global batch {global_batch} does not split over {world_size} devices x "
                            f"{saved.grad_accum} accumulation steps; resume on a device count that divides it")
        if per != saved.batch_size:  # the per-device batch follows the device count
            changed["batch_size"] = [saved.batch_size, per]
        saved.batch_size = raw["train"]["batch_size"] = per
        raw.setdefault("global_batch", global_batch)
        if changed:  # what this resume changed: binding.check_identity accepts exactly these
            raw.setdefault("resumed", []).append({"changed": changed})
        meta = RunMeta.from_dict(raw)
        return meta, saved, meta.model
    check_config(cfg, model_cfg)
    if cfg.objective == "nce" and not cfg.diffusion:
        raise EdlmError("objective 'nce' needs `diffusion` (the trained MDLM run to correct)")
    man = corpora.manifest(cfg.data)
    vocab = man["mask_id"] + 1
    if model_cfg.max_len < cfg.seq_len:
        raise EdlmError(f"`seq_len` {cfg.seq_len} is longer than the model allows ({model_cfg.max_len}); "
                        "lower `seq_len` or raise `max_len`")
    model_cfg = TransformerConfig.from_dict({**model_cfg.to_dict(), "vocab_size": vocab, "out_vocab": vocab,
                                             "causal": cfg.objective == "ar"})
    if cfg.objective == "nce":
        proposal = read_meta(Path(cfg.diffusion))
        if proposal.mask_id != man["mask_id"]:
            raise EdlmError(f"the MDLM run {cfg.diffusion} was trained on another vocabulary than `data` {cfg.data}")
        model_cfg = proposal.model
    meta = RunMeta.create(model_cfg, cfg, vocab_size=man["vocab_size"], mask_id=man["mask_id"],
                          tokenizer=man.get("tokenizer"), global_batch=cfg.batch_size * cfg.grad_accum * world_size,
                          **manifest_binding(man))
    return meta, cfg, model_cfg
