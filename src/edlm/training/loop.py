"""The one training loop, for MDLM, AR and NCE, on 1 device or N (torchrun: DDP or FSDP2).

    state = build_state(cfg, model, objective, train_tokens, d)   # loader, compile, DDP/FSDP2, optimizer, EMA
    summary = fit(state, log, store)                               # steps up to cfg.max_steps

The loop takes a model, an objective and tokens; it never opens a run folder. Where checkpoints go is the
`store`'s business (an object with save(...), last_good_note() and label: edlm.runs.checkpoint.RunStore for a
run folder); edlm.api.trainer wires a run folder to this loop (`edlm train`, edlm.train).

Losses are summed locally, all-reduced, and divided once by the global count, so neither
gradient accumulation nor world size changes a result.

Guards (guards.py): a non-finite loss, weights/EMA/optimizer state that turned NaN/inf, or a diverging
loss (above --diverge_factor x the first step's loss) stop training before anything more is saved, and
every save first scores the weights it is about to write; so each checkpoint is finite and checked.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from edlm.config.train import TrainConfig
from edlm.data.loader import BlockLoader, iter_eval_blocks
from edlm.errors import EdlmError
from edlm.models.kernels import apply_kernels, resolve_kernels
from edlm.training.distributed import Dist, all_reduce_sum, barrier, wrap_model
from edlm.training.guards import check_before_save, check_diverging, check_finite, check_finite_state, probe_loss
from edlm.training.metrics_log import TrainLog
from edlm.training.objectives import Objective
from edlm.training.optim import EMA, lr_at, make_optimizer
from edlm.training.state import full_cpu_state, full_optimizer_state
from edlm.utils import set_fused_default

NOISE_SEED_OFFSET = 12345
"""the training noise stream (t, masks) is seeded cfg.seed + this, apart from the data order's cfg.seed"""
VALIDATION_SEED = 1234
"""validation draws the same t and masks at every evaluation, so validation losses compare across steps"""
NO_CLIP = 1e9
"""max norm when grad_clip = 0: clip_grad_norm_ still returns the norm (logged as grad_norm), scaling nothing"""


def autocast(cfg: TrainConfig, device):
    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()


@dataclass
class TrainState:
    """What one training holds live: made by build_state (and restored on resume), advanced by fit."""

    cfg: TrainConfig
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


def build_state(cfg: TrainConfig, model: torch.nn.Module, objective: Objective, train_tokens: torch.Tensor,
                d: Dist) -> TrainState:
    """Data order, compile, DDP/FSDP2, optimizer, EMA and noise stream for `model` (on d.device, initialised or
    about to be restored). Call after torch.manual_seed(cfg.seed) and building the model, as edlm.api.trainer
    does: the random streams then match an uninterrupted run's."""
    device = d.device
    loader = BlockLoader(train_tokens, cfg.seq_len, cfg.batch_size, seed=cfg.seed, rank=d.rank,
                         world_size=d.world_size)
    if len(train_tokens) < cfg.seq_len * cfg.batch_size * d.world_size:
        raise EdlmError(f"corpus {cfg.data} has {len(train_tokens)} training tokens, fewer than one global batch")
    # Optional fused kernels (config/kernels.py) go in before compiling and wrapping; on a CPU: one warning
    apply_kernels(model, resolve_kernels(getattr(cfg, "kernels", ""), device, training=True), training=True)
    if cfg.compile:
        # Each block compiled on its own (static shapes; what FSDP2 wants); the vocabulary projection,
        # whose rows vary with the mask, stays eager.
        getattr(model, "backbone", model).compile_trunk(per_block=True)
        set_fused_default("on")  # a compiled run pays compile time up front: the fused loss kernels too
    wrapped = wrap_model(model, d, cfg.parallel)
    opt = make_optimizer(model, cfg, device)
    ema = EMA(model, cfg.ema) if cfg.ema > 0 else None
    gen = torch.Generator(device=device)
    gen.manual_seed((cfg.seed + NOISE_SEED_OFFSET) % 2 ** 64)  # seeds are 64-bit; the sum may wrap
    return TrainState(cfg, d, model, wrapped, objective, opt, ema, gen, loader)


def fit(run: TrainState, log: TrainLog, store) -> dict:
    """Optimizer steps up to cfg.max_steps, logging, validating and saving (through `store`) on their cadence.
    Returns the summary (`store.label` names where the run lives)."""
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
            check_finite(first_bad, store.last_good_note)
            if run.initial_loss is None:
                run.initial_loss = loss
            check_diverging(loss, nxt, run.initial_loss, cfg, store.last_good_note)
        gnorm = _optimizer_step(run)
        log.stepped()
        if log_now:
            result = log.train_row(run, loss, gnorm, sums, extra_sums)
        if eval_now:
            last_val = validate(run.model, run.ema, run.objective, run.val_tokens, cfg, d, device)
            log.write({"step": run.step, "val": last_val})
        if save_now:
            _save(run, store)
    return {"run": store.label, "objective": cfg.objective, "data": cfg.data, "steps": run.step,
            "params": sum(p.numel() for p in run.model.parameters()), "loss": result.get("loss"), "val": last_val,
            "tokens_per_second": result.get("tokens_per_second"), "seconds": time.time() - log.t0,
            "world_size": d.world_size, "device": str(device),
            "fsdp": type(run.wrapped).__name__.startswith("FSDP")}


def _accumulate(run: TrainState) -> tuple[torch.Tensor, dict]:
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
        with sync, autocast(cfg, device):
            loss_sum, count, extra = run.objective(run.wrapped, x0, run.gen, d.rank, d.world_size)
            # count is identical on every rank and micro-step: divide once by the global count.
            (loss_sum / (count * cfg.grad_accum)).backward()
        # torch.full, not torch.tensor: a fill kernel instead of a host-to-device copy (no sync)
        sums += torch.stack([loss_sum.detach().float(), torch.full((), float(count), device=device)])
        for k, v in extra.items():
            extra_sums[k] = extra_sums.get(k, 0.0) + torch.as_tensor(v, device=device, dtype=torch.float32)
    all_reduce_sum(sums, d)
    return sums, extra_sums


def _optimizer_step(run: TrainState) -> torch.Tensor:
    """Clip, step, zero the gradients, update the EMA, advance run.step -> the gradient norm before clipping."""
    cfg = run.cfg
    gnorm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else NO_CLIP)
    run.opt.step()
    run.opt.zero_grad(set_to_none=True)
    if run.ema is not None:
        run.ema.update(run.model, run.step)
    run.step += 1
    return gnorm


def _save(run: TrainState, store) -> None:
    """Checkpoint run.step, after the guards: gathering is collective (FSDP2), so every rank takes part and
    every rank checks (all stop together); rank 0 writes."""
    cfg, d, device, model, ema = run.cfg, run.d, run.d.device, run.model, run.ema
    model_sd = full_cpu_state(model)
    ema_sd = full_cpu_state(ema.state_dict()) if ema is not None else None
    optim_sd = full_optimizer_state(model, run.opt)
    # finite state, and weights whose loss is not diverging
    check_finite_state(store.last_good_note, run.step, model_sd, ema_sd, optim_sd)
    probe = probe_loss(model, run.objective, run.val_tokens, cfg, d, device, autocast(cfg, device))
    check_before_save(probe, run.step, run.initial_loss, cfg, store.last_good_note)
    if d.is_main:
        store.save(run.step, model_sd, ema_sd, optim_sd,
                   {"loader": run.loader.state_dict(), "objective": cfg.objective, "world_size": d.world_size,
                    "initial_loss": run.initial_loss, "save_loss": probe},
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
        with autocast(cfg, device):
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
