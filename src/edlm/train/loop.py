"""The one training loop, for MDLM, AR and NCE, on 1 device or N (torchrun: DDP or FSDP2).

    edlm train --objective mdlm --preset tiny --data synthetic --out runs/mdlm
    torchrun --nproc_per_node 2 $(which edlm) train ... (same flags)

Losses are summed locally, all-reduced, and divided once by the global count, so neither
gradient accumulation nor world size changes a result.

Guards (guards.py): a non-finite loss, weights/EMA/optimizer state that turned NaN/inf, or a diverging
loss (above --diverge_factor x the first step's loss) stop training before anything more is saved, and
every save first scores the weights it is about to write; so each checkpoint is finite and checked, and
stays in place. One training at a time writes a run folder (train.lock).

Metrics always go to RUN/metrics.jsonl; with log=("tensorboard",) (`--log tensorboard`, needs
`pip install 'edlm[tensorboard]'`) also to TensorBoard event files in RUN/tensorboard/.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from edlm.data import corpora
from edlm.data.loader import BlockLoader, iter_eval_blocks
from edlm.errors import EdlmError
from edlm.models.transformer import TransformerConfig
from edlm.run_folder import RunMeta, read_meta, read_run, write_run
from edlm.runs import build_model
from edlm.safe_io import check_kinds, check_outputs
from edlm.train import checkpoint as ckpt
from edlm.train.config import TrainConfig, check_config
from edlm.train.distributed import Dist, all_reduce_sum, barrier, cleanup, init_distributed, wrap_model
from edlm.train.guards import check_before_save, check_diverging, check_finite, check_finite_state, probe_loss
from edlm.train.lock import LOCK_NAME, RunLock
from edlm.train.metrics_log import RunLog, check_log
from edlm.train.objectives import Objective, build_objective
from edlm.train.optim import EMA, lr_at, make_optimizer
from edlm.train.resume import apply_overrides, resume_from, truncate_metrics
from edlm.utils import pick_device, set_fused_default
from edlm.validate import out_dir

NOISE_SEED_OFFSET = 12345
"""the training noise stream (t, masks) is seeded cfg.seed + this, apart from the data order's cfg.seed"""
VALIDATION_SEED = 1234
"""validation draws the same t and masks at every evaluation, so validation losses compare across steps"""
NO_CLIP = 1e9
"""max norm when grad_clip = 0: clip_grad_norm_ still returns the norm (logged as grad_norm), scaling nothing"""


def _autocast(cfg: TrainConfig, device):
    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()


def prepare_run(out: Path, cfg: TrainConfig, model_cfg: TransformerConfig, resume: bool,
                max_steps: int | None = None, world_size: int = 1, overrides: dict | None = None):
    """-> (RunMeta, TrainConfig, TransformerConfig) of a new run, or of the run in `out` on resume (written
    to RUN/run.json later, by _resume). Never overwrites an existing run unless resuming it.

    On resume the saved config wins, except for the options in `overrides` that RESUME_OVERRIDABLE lists
    (learning rate and schedule, clipping, logging/saving cadence, length of training, device); any other
    option given with a value that differs from the saved one is an error. The per-device batch is
    re-derived from the saved GLOBAL batch, so a run can continue on another number of devices."""
    out = Path(out)
    meta_path = out / "run.json"
    if not meta_path.exists() and (ckpt.has_run_state(out)):
        raise EdlmError(f"{out} holds training state (checkpoints or metrics.jsonl) but no run.json (the run's "
                        "config): restore run.json from a backup; it cannot be rebuilt from the preset safely")
    if meta_path.exists():
        if not resume:
            raise EdlmError(f"{out} already holds a run: pass --resume to continue it, or choose another --out")
        raw = read_run(out)
        saved = TrainConfig.from_dict(raw["train"])
        overrides = dict(overrides or {})
        if max_steps is not None:
            overrides["max_steps"] = max_steps
        apply_overrides(out, raw, saved, overrides)
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
        saved.batch_size = raw["train"]["batch_size"] = per
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
                          tokenizer=man.get("tokenizer"), global_batch=cfg.batch_size * cfg.grad_accum * world_size)
    return meta, cfg, model_cfg


def train(cfg: TrainConfig, model_cfg: TransformerConfig, out: str | Path, *, resume: bool = False,
          max_steps: int | None = None, quiet: bool = False, overrides: dict | None = None, log=()) -> dict:
    """Train (or resume, keeping the saved config except for `overrides` of RESUME_OVERRIDABLE options and
    `max_steps`). Returns the summary. log: extra metric sinks besides metrics.jsonl ("tensorboard": event
    files in RUN/tensorboard/). Holds RUN/train.lock throughout; the lock, the metrics files, the progress
    bar and the process group are released however training ends."""
    out = Path(out)
    sinks = check_log(log)
    out_dir("`out`", out)
    check_outputs({"`out`": out}, {"`diffusion`": cfg.diffusion or None, f"corpus {cfg.data}": _corpus(cfg.data)})
    check_kinds(out, files=("run.json", "latest.json", "metrics.jsonl", LOCK_NAME), folders=("checkpoints",))
    if not (out / "run.json").exists():
        check_config(cfg, model_cfg)  # before the folder is created
    d = init_distributed(pick_device(cfg.device))
    created = not out.exists()
    lock = None
    try:
        if d.is_main:
            out.mkdir(parents=True, exist_ok=True)
            lock = RunLock(out).acquire()
        meta, cfg, model_cfg = prepare_run(out, cfg, model_cfg, resume, max_steps, d.world_size, overrides)
        run = _build(cfg, model_cfg, meta, out, d, resume)
        log = RunLog(out, d, cfg, quiet, run.step, sinks)
        try:
            result = _loop(run, log)
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


def _corpus(name: str) -> Path | None:
    """The corpus folder training reads (None for a name that is not a corpus: prepare_run says so)."""
    try:
        return corpora.corpus_dir(name)
    except EdlmError:
        return None


@dataclass
class _Run:
    """What one training holds live: built by _build, advanced by _loop."""

    cfg: TrainConfig
    meta: RunMeta
    out: Path
    d: Dist
    model: torch.nn.Module
    wrapped: torch.nn.Module
    """the model as DDP/FSDP2 applied it (the model itself on one device): what training forwards through"""
    objective: Objective
    opt: torch.optim.Optimizer
    ema: EMA | None
    gen: torch.Generator
    """the training noise stream (t, masks, negatives)"""
    loader: BlockLoader
    val_tokens: torch.Tensor | None = None
    step: int = 0
    initial_loss: float | None = None
    """the divergence rule's reference: the first step's loss (kept on resume)"""


def _build(cfg: TrainConfig, model_cfg: TransformerConfig, meta: RunMeta, out: Path, d: Dist, resume: bool) -> _Run:
    """Model, objective, data, optimizer, EMA and noise stream, restored from the checkpoint on resume."""
    device = d.device
    torch.manual_seed(cfg.seed)
    objective = build_objective(cfg, meta.mask_id, device)
    model = build_model(cfg.objective, model_cfg)
    if not resume:
        objective.init_model(model)
    model.to(device)
    train_tokens = corpora.load_split(cfg.data, "train")
    loader = BlockLoader(train_tokens, cfg.seq_len, cfg.batch_size, seed=cfg.seed, rank=d.rank,
                         world_size=d.world_size)
    if len(train_tokens) < cfg.seq_len * cfg.batch_size * d.world_size:
        raise EdlmError(f"corpus {cfg.data} has {len(train_tokens)} training tokens, fewer than one global batch")
    if cfg.compile:
        # Each block compiled on its own (static shapes; what FSDP2 wants); the vocabulary projection,
        # whose rows vary with the mask, stays eager.
        getattr(model, "backbone", model).compile_trunk(per_block=True)
        set_fused_default("on")  # a compiled run pays compile time up front: the fused loss kernels too
    wrapped = wrap_model(model, d, cfg.parallel)
    opt = make_optimizer(model, cfg, device)
    ema = EMA(model, cfg.ema) if cfg.ema > 0 else None
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed + NOISE_SEED_OFFSET)
    run = _Run(cfg, meta, out, d, model, wrapped, objective, opt, ema, gen, loader)
    _resume(run, resume)
    run.val_tokens = corpora.load_split(cfg.data, "valid")
    return run


def _resume(run: _Run, resume: bool) -> None:
    """Restore the checkpoint's state (if any) and cut metrics.jsonl back to it; (re)write run.json."""
    out, d = run.out, run.d
    if resume and ckpt.has_checkpoint(out):
        run.step, run.initial_loss = resume_from(out, run.meta.raw, run.model, run.ema, run.opt, run.gen, run.loader,
                                                 run.cfg)
    if resume and d.is_main:  # rows past the checkpoint (or all of them, if none was saved) are replayed
        truncate_metrics(out / "metrics.jsonl", run.step)
    if d.is_main:
        write_run(out, run.meta)


def _loop(run: _Run, log: RunLog) -> dict:
    """Optimizer steps up to cfg.max_steps, logging, validating and saving on their cadence."""
    cfg, d, device = run.cfg, run.d, run.d.device
    last_val, result = None, {}
    first_bad = torch.tensor([-1.0, 0.0], device=device)  # (step, loss) of the first non-finite loss
    while run.step < cfg.max_steps:
        sums, extra_sums = _accumulate(run)
        # Remember the first non-finite loss on the device; it is read (a host sync) only when logging or
        # saving, so steps queue back to back and no bad state is ever written.
        bad_now = ~torch.isfinite(sums[0]) & (first_bad[0] < 0)
        first_bad = torch.where(bad_now, torch.stack([torch.full((), float(run.step), device=device), sums[0]]),
                                first_bad)
        nxt, loss = run.step + 1, None
        log_now = nxt % cfg.log_every == 0 or nxt == cfg.max_steps
        eval_now = bool(cfg.eval_every and nxt % cfg.eval_every == 0) or nxt == cfg.max_steps
        save_now = nxt % cfg.save_every == 0 or nxt == cfg.max_steps
        if log_now or eval_now or save_now or run.initial_loss is None:
            loss = (sums[0] / sums[1]).item()
            check_finite(first_bad, run.out)
            if run.initial_loss is None:
                run.initial_loss = loss
            check_diverging(loss, nxt, run.initial_loss, cfg, run.out)
        gnorm = _optimizer_step(run)
        log.stepped()
        if log_now:
            result = log.train_row(run, loss, gnorm, sums, extra_sums)
        if eval_now:
            last_val = validate(run.model, run.ema, run.objective, run.val_tokens, cfg, d, device)
            log.write({"step": run.step, "val": last_val})
        if save_now:
            _save(run)
    return {"run": str(run.out), "objective": cfg.objective, "data": cfg.data, "steps": run.step,
            "params": sum(p.numel() for p in run.model.parameters()), "loss": result.get("loss"), "val": last_val,
            "tokens_per_second": result.get("tokens_per_second"), "seconds": time.time() - log.t0,
            "world_size": d.world_size, "device": str(device)}


def _accumulate(run: _Run) -> tuple[torch.Tensor, dict]:
    """Forward and backward over cfg.grad_accum micro-batches -> ((loss sum, count) reduced over ranks,
    the objective's extra sums of this rank)."""
    cfg, d, device = run.cfg, run.d, run.d.device
    for g in run.opt.param_groups:
        g["lr"] = lr_at(run.step, cfg)
    sums = torch.zeros(2, device=device)  # loss sum, count
    extra_sums: dict = {}
    run.model.train()
    for micro in range(cfg.grad_accum):
        x0 = run.loader.next_batch().to(device, non_blocking=True)
        sync = nullcontext()
        if d.enabled and cfg.parallel == "ddp" and micro < cfg.grad_accum - 1:
            sync = run.wrapped.no_sync()
        with sync, _autocast(cfg, device):
            loss_sum, count, extra = run.objective(run.wrapped, x0, run.gen, d.rank, d.world_size)
            # count is identical on every rank and micro-step: divide once by the global count.
            (loss_sum / (count * cfg.grad_accum)).backward()
        # torch.full, not torch.tensor: a fill kernel instead of a host-to-device copy (no sync)
        sums += torch.stack([loss_sum.detach().float(), torch.full((), float(count), device=device)])
        for k, v in extra.items():
            extra_sums[k] = extra_sums.get(k, 0.0) + torch.as_tensor(v, device=device, dtype=torch.float32)
    all_reduce_sum(sums, d)
    return sums, extra_sums


def _optimizer_step(run: _Run) -> torch.Tensor:
    """Clip, step, zero the gradients, update the EMA, advance run.step -> the gradient norm before clipping."""
    cfg = run.cfg
    gnorm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else NO_CLIP)
    run.opt.step()
    run.opt.zero_grad(set_to_none=True)
    if run.ema is not None:
        run.ema.update(run.model, run.step)
    run.step += 1
    return gnorm


def _save(run: _Run) -> None:
    """Checkpoint run.step, after the guards: gathering is collective (FSDP2), so every rank takes part and
    every rank checks (all stop together); rank 0 writes."""
    cfg, d, device, model, ema = run.cfg, run.d, run.d.device, run.model, run.ema
    model_sd = ckpt.full_cpu_state(model)
    ema_sd = ckpt.full_cpu_state(ema.state_dict()) if ema is not None else None
    optim_sd = ckpt.full_optimizer_state(model, run.opt)
    # finite state, and weights whose loss is not diverging
    check_finite_state(run.out, run.step, model_sd, ema_sd, optim_sd)
    probe = probe_loss(model, run.objective, run.val_tokens, cfg, d, device, _autocast(cfg, device))
    check_before_save(probe, run.step, run.initial_loss, cfg, run.out)
    if d.is_main:
        ckpt.save_checkpoint(run.out, run.step, model_sd, ema_sd, optim_sd,
                             {"loader": run.loader.state_dict(), "objective": cfg.objective,
                              "world_size": d.world_size, "initial_loss": run.initial_loss, "save_loss": probe,
                              "identity": ckpt.identity(run.meta.raw)},
                             keep=cfg.keep_checkpoints, rng_extra={"noise": run.gen.get_state()})
    barrier(d)


@torch.no_grad()
def validate(model, ema, objective, tokens, cfg, d, device) -> dict:
    """Validation loss with the EMA weights (what eval and sampling use), fixed noise seed."""
    backup = None
    if ema is not None:
        backup = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict({k: v.to(device) for k, v in ema.state_dict().items()}, strict=False)
    model.eval()
    gen = torch.Generator(device=device)
    gen.manual_seed(VALIDATION_SEED)
    sums = torch.zeros(2, device=device)
    keys = objective.val_keys
    extra = torch.zeros(len(keys), device=device)  # the objective's extra sums it reads in val_metrics
    for x0 in iter_eval_blocks(tokens, cfg.seq_len, cfg.batch_size, rank=d.rank, world_size=d.world_size,
                               max_blocks=cfg.eval_batches * cfg.batch_size):
        with _autocast(cfg, device):
            s, c, ex = objective(model, x0.to(device), gen)
        sums += torch.stack([s.float(), torch.tensor(float(c), device=device)])
        if keys:
            extra += torch.stack([torch.as_tensor(ex[k], dtype=torch.float32, device=device) for k in keys])
    all_reduce_sum(sums, d)
    if keys:
        all_reduce_sum(extra, d)
    if backup is not None:
        model.load_state_dict(backup)
    return {"loss": (sums[0] / sums[1].clamp(min=1)).item(), **objective.val_metrics(extra)}
