"""Training into a run folder. edlm.train (train() here) and `edlm train` call train_run(): it makes or
reopens the folder (run.json, train.lock, metrics, checkpoints: edlm.runs), builds the model, objective and
data, and hands them to the one training loop (edlm.training.loop), which never sees the folder itself.

    train_run(cfg, model_cfg, "runs/mdlm")                 # a new run
    train_run(cfg, model_cfg, "runs/mdlm", resume=True)    # continue it exactly (RESUME_OVERRIDABLE may change)
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import torch

from edlm.config.model import TransformerConfig
from edlm.config.train import TrainConfig, check_config
from edlm.data import corpora
from edlm.data.manifest import corpus_path
from edlm.errors import EdlmError
from edlm.models.kernels import check_kernels
from edlm.runs import checkpoint as ckpt
from edlm.runs.checkpoint import RunStore
from edlm.runs.clear import clear_run
from edlm.runs.folder import RunMeta, write_run
from edlm.runs.load import build_model, load_model
from edlm.runs.lock import LOCK_NAME, RunLock
from edlm.runs.metrics_files import check_log, metric_sinks
from edlm.runs.prepare import prepare_run
from edlm.runs.resume import resume_from, truncate_metrics
from edlm.safe_io import check_kinds, check_outputs
from edlm.training.distributed import Dist, barrier, cleanup, init_distributed
from edlm.training.loop import TrainState, build_state, fit
from edlm.training.metrics_log import TrainLog
from edlm.training.objectives import build_objective
from edlm.utils import pick_device
from edlm.validate import out_dir


def train_run(cfg: TrainConfig, model_cfg: TransformerConfig, out: str | Path, *, resume: bool | str = False,
              max_steps: int | None = None, quiet: bool = False, overrides: dict | None = None, log=(),
              overwrite: bool = False, accept_data_change: bool = False) -> dict:
    """Train (or resume, keeping the saved config except for `overrides` of RESUME_OVERRIDABLE options and
    `max_steps`). Returns the summary. log: extra metric sinks besides metrics.jsonl ("tensorboard": event
    files in RUN/tensorboard/). resume="auto": resume when `out` holds a run, else start one. overwrite: start
    the run in `out` again (its training files removed, under the lock). Holds RUN/train.lock throughout; the
    lock, the metrics files, the progress bar and the process group are released however training ends."""
    out = Path(out)
    sinks = check_log(log)
    out_dir("`out`", out)
    check_outputs({"`out`": out}, {"`diffusion`": cfg.diffusion or None, f"corpus {cfg.data}": corpus_path(cfg.data)})
    check_kinds(out, files=("run.json", "latest.json", "metrics.jsonl", LOCK_NAME), folders=("checkpoints",))
    if resume not in (True, False, "auto"):
        raise EdlmError(f"`resume` {resume!r}: give True, False or 'auto'")
    if resume and overwrite:
        raise EdlmError("`resume` continues the run in `out` and `overwrite` starts it again: give one")
    if resume == "auto":
        resume = (out / "run.json").exists()
    if overwrite or not (out / "run.json").exists():
        check_config(cfg, model_cfg)  # before the folder is created (or cleared)
    device = pick_device(cfg.device)
    check_kernels(cfg.kernels, device, training=True)  # a missing package: before the folder exists
    d = init_distributed(device, group=cfg.parallel == "fsdp")
    created = not out.exists()
    lock = None
    try:
        if d.is_main:
            out.mkdir(parents=True, exist_ok=True)
            lock = RunLock(out).acquire()
            if overwrite:
                clear_run(out)
        meta, cfg, model_cfg = prepare_run(out, cfg, model_cfg, resume, max_steps, d.world_size, overrides,
                                           accept_data_change)
        run = _build(cfg, model_cfg, meta, out, d, resume, accept_data_change)
        log = TrainLog(d, cfg, quiet, run.step, metric_sinks(out, run.step, sinks) if d.is_main else ())
        try:
            result = fit(run, log, RunStore(out, meta.raw))
        finally:
            log.close()
        # every rank past its last collective before any rank tears the group down. Seen once (a .ci/run of
        # 2026-12-02): rank 1 of a complete 2-process FSDP2 run on gloo aborted at exit ("terminate called
        # without an active exception"), failing torchrun; not reproduced in 12 runs since, so a precaution
        barrier(d)
        return result
    except BaseException:
        if lock is not None:
            lock.release()
            lock = None
        if created and d.is_main and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a command that failed before writing anything leaves nothing behind
        raise
    finally:
        if lock is not None:
            lock.release()
        cleanup(d)


def _build(cfg: TrainConfig, model_cfg: TransformerConfig, meta: RunMeta, out: Path, d: Dist, resume: bool,
           accept_data_change: bool = False) -> TrainState:
    """Model, objective, data, optimizer, EMA and noise stream, restored from the checkpoint on resume; (re)writes
    run.json. The order of the random draws is the one every edlm run was trained with: keep it."""
    device = d.device
    torch.manual_seed(cfg.seed)
    proposal = None
    if cfg.objective == "nce":  # the frozen MDLM the energy corrects (prepare_run checked that it is given)
        proposal, _ = load_model(cfg.diffusion, device, expect="mdlm", accept_data_change=accept_data_change)
    objective = build_objective(cfg, meta.mask_id, device, proposal)
    model = build_model(cfg.objective, model_cfg)
    if not resume:
        objective.init_model(model)
    model.to(device)
    run = build_state(cfg, model, objective, corpora.load_split(cfg.data, "train"), d)
    if resume and ckpt.has_checkpoint(out):
        run.step, run.initial_loss = resume_from(out, meta.raw, run.model, run.ema, run.opt, run.gen, run.loader, cfg)
    if resume and d.is_main:  # rows past the checkpoint (or all of them, if none was saved) are replayed
        truncate_metrics(out / "metrics.jsonl", run.step)
    if d.is_main:
        write_run(out, meta)
    run.val_tokens = corpora.load_split(cfg.data, "valid")
    return run


def _split_configs(configs) -> tuple[TransformerConfig, TrainConfig]:
    if isinstance(configs, str):
        from edlm.presets import get_preset

        return get_preset(configs)
    found = {type(c): c for c in (configs or ())}
    if set(found) != {TransformerConfig, TrainConfig} or len(configs) != 2:
        raise EdlmError("configs must be a preset name or a (TransformerConfig, TrainConfig) pair, as "
                        "edlm.presets.tiny() returns")
    return found[TransformerConfig], found[TrainConfig]


def train(configs="tiny", out: str | Path | None = None, *, preset: str | None = None, resume: bool | str = False,
          overwrite: bool = False, quiet: bool | None = None, log=(), accept_data_change: bool = False,
          **options) -> dict:
    """Train (or, with resume=True, continue) a model into the run folder `out`; returns the summary.

    configs: a preset's (TransformerConfig, TrainConfig) pair, e.g. edlm.presets.tiny() (either order is
    accepted), or a preset name; preset: a preset by name (as `edlm train --preset`), instead of configs.
    options: any TrainConfig or TransformerConfig field, e.g. objective="ar", data="synthetic", max_steps=200,
    d_model=64. resume: True continues the run in `out` exactly where it stopped (its saved options win, see
    `edlm train --help`); "auto" continues it if there is one, else starts it (a run killed before its first
    checkpoint restarts from step 0). overwrite: start the run in `out` over (its checkpoints, metrics and
    run.json are removed). quiet: no progress bar (default: quiet unless stderr is a terminal).
    log="tensorboard": metrics also go to TensorBoard event files in out/tensorboard/ (pip install
    'edlm[tensorboard]'); metrics.jsonl always. The trained run opens with edlm.load(out). accept_data_change:
    resume (or, for objective "nce", use the `diffusion` run) although the corpus changed since the run was
    made: a warning instead of an error, and a resumed run is bound to the corpus as it is now
    (docs/reliability.md)."""
    from dataclasses import replace

    from edlm.utils import quiet_default

    if out is None:
        raise EdlmError("train needs `out`, the run folder to write")
    if preset is not None:
        if not (configs == "tiny" or configs == preset):
            raise EdlmError("give `configs` or `preset`, not both")
        configs = preset
    model_cfg, cfg = _split_configs(configs)
    tr_names = {f.name for f in fields(TrainConfig)}
    md_names = {f.name for f in fields(TransformerConfig)}
    unknown = sorted(set(options) - tr_names - md_names)
    if unknown:
        raise EdlmError(f"unknown option(s) {', '.join(unknown)}: give fields of TrainConfig or TransformerConfig")
    tr = {k: v for k, v in options.items() if k in tr_names}
    md = {k: v for k, v in options.items() if k in md_names and k not in tr_names}
    cfg, model_cfg = replace(cfg, **tr), replace(model_cfg, **md)
    if "seq_len" in tr and "max_len" not in md:  # a longer sequence than the preset's widens the model
        model_cfg = replace(model_cfg, max_len=max(model_cfg.max_len, cfg.seq_len))
    if not resume:
        check_config(cfg, model_cfg)  # on resume the saved values merged with `options` are checked instead
    return train_run(cfg, model_cfg, out, resume=resume, max_steps=tr.get("max_steps"), quiet=quiet_default(quiet),
                     overrides={**tr, **md}, log=log, overwrite=overwrite, accept_data_change=accept_data_change)
