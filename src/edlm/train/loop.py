"""The one training loop, for MDLM, AR and NCE, on 1 device or N (torchrun: DDP or FSDP2).

    edlm train --objective mdlm --preset tiny --data synthetic --out runs/mdlm
    torchrun --nproc_per_node 2 $(which edlm) train ... (same flags)

Losses are summed locally, all-reduced, and divided once by the global count, so neither
gradient accumulation nor world size changes a result.

Guards (guards.py): a non-finite loss, weights/EMA/optimizer state that turned NaN/inf, or a diverging
loss (above --diverge_factor x the first step's loss) stop training before anything more is saved, and
every save first scores the weights it is about to write; so each checkpoint is finite and checked, and
stays in place. One training at a time writes a run folder (train.lock).
"""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from edlm.data import corpora
from edlm.data.loader import BlockLoader, iter_eval_blocks
from edlm.diffusion.schedules import get_schedule
from edlm.errors import EdlmError
from edlm.models.transformer import TransformerConfig
from edlm.runs import build_model, load_model
from edlm.sampling.denoiser import ModelDenoiser
from edlm.train import checkpoint as ckpt
from edlm.train.config import TrainConfig, check_config
from edlm.train.distributed import all_reduce_sum, barrier, cleanup, init_distributed, wrap_model
from edlm.train.guards import check_before_save, check_diverging, check_finite, check_finite_state, probe_loss
from edlm.train.lock import RunLock
from edlm.train.objectives import ARObjective, MDLMObjective, NCEObjective
from edlm.train.optim import EMA, lr_at, make_optimizer
from edlm.train.resume import apply_overrides, resume_from, truncate_metrics
from edlm.utils import atomic_write_json, pick_device, progress, set_fused_default
from edlm.validate import out_dir

NOISE_SEED_OFFSET = 12345
"""the training noise stream (t, masks) is seeded cfg.seed + this, apart from the data order's cfg.seed"""
VALIDATION_SEED = 1234
NO_CLIP = 1e9
"""max norm when grad_clip = 0: clip_grad_norm_ still returns the norm (logged as grad_norm), scaling nothing"""
"""validation draws the same t and masks at every evaluation, so validation losses compare across steps"""


def _autocast(cfg: TrainConfig, device):
    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()


def _objective(cfg, mask_id, device):
    if cfg.objective == "mdlm":
        return MDLMObjective(get_schedule(cfg.schedule), mask_id, cfg), None
    if cfg.objective == "ar":
        return ARObjective(mask_id), None
    if cfg.objective == "nce":  # prepare_run has checked that --diffusion is given
        mdlm, _ = load_model(cfg.diffusion, device, expect="mdlm")
        for p in mdlm.parameters():
            p.requires_grad_(False)
        # The frozen proposal always sees the real t (harmless when it ignores t); as a ModelDenoiser it
        # projects onto the vocabulary only at the masked positions the negatives are drawn at.
        return NCEObjective(ModelDenoiser(mdlm, mask_id), get_schedule(cfg.schedule), mask_id, cfg), mdlm
    raise EdlmError(f"unknown objective {cfg.objective!r}: choose mdlm, ar or nce")


def prepare_run(out: Path, cfg: TrainConfig, model_cfg: TransformerConfig, resume: bool,
                max_steps: int | None = None, world_size: int = 1, overrides: dict | None = None):
    """Create or reopen RUN/run.json. Never overwrites an existing run unless resuming it.

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
        meta = ckpt.read_run(out)
        saved = TrainConfig.from_dict(meta["train"])
        overrides = dict(overrides or {})
        if max_steps is not None:
            overrides["max_steps"] = max_steps
        apply_overrides(out, meta, saved, overrides)
        try:
            check_config(saved)
        except EdlmError as e:  # a bad value saved by an older edlm (given ones were checked already)
            opt = str(e).split()[0]
            if opt.lstrip("-") in overrides:
                raise
            raise EdlmError(f"{e} (the value saved in {meta_path}; pass {opt} to override it on --resume)") from None
        global_batch = meta.get("global_batch", saved.batch_size * saved.grad_accum)
        per = global_batch // (world_size * saved.grad_accum)
        if per * world_size * saved.grad_accum != global_batch:
            raise EdlmError(f"the run's global batch {global_batch} does not split over {world_size} devices x "
                            f"{saved.grad_accum} accumulation steps; resume on a device count that divides it")
        saved.batch_size = meta["train"]["batch_size"] = per
        return meta, saved, TransformerConfig.from_dict(meta["model"])
    check_config(cfg, model_cfg)
    if cfg.objective == "nce" and not cfg.diffusion:
        raise EdlmError("--objective nce needs --diffusion MDLM_RUN (the trained MDLM to correct)")
    man = corpora.manifest(cfg.data)
    vocab = man["mask_id"] + 1
    if model_cfg.max_len < cfg.seq_len:
        raise EdlmError(f"--seq_len {cfg.seq_len} is longer than the model allows ({model_cfg.max_len}); "
                        "lower --seq_len or raise --max_len")
    model_cfg = TransformerConfig.from_dict({**model_cfg.to_dict(), "vocab_size": vocab, "out_vocab": vocab,
                                             "causal": cfg.objective == "ar"})
    if cfg.objective == "nce":
        pm = ckpt.read_run(Path(cfg.diffusion))
        if pm["mask_id"] != man["mask_id"]:
            raise EdlmError(f"the MDLM run {cfg.diffusion} was trained on another vocabulary than --data {cfg.data}")
        model_cfg = TransformerConfig.from_dict(pm["model"])
    meta = {"objective": cfg.objective, "data": cfg.data, "mask_id": man["mask_id"], "vocab_size": man["vocab_size"],
            "tokenizer": man.get("tokenizer"), "model": model_cfg.to_dict(), "train": cfg.to_dict(),
            "diffusion": cfg.diffusion or None, "edlm_version": __import__("edlm").__version__,
            "global_batch": cfg.batch_size * cfg.grad_accum * world_size}
    return meta, cfg, model_cfg


def train(cfg: TrainConfig, model_cfg: TransformerConfig, out: str | Path, *, resume: bool = False,
          max_steps: int | None = None, quiet: bool = False, overrides: dict | None = None) -> dict:
    """Train (or resume, keeping the saved config except for `overrides` of RESUME_OVERRIDABLE options and
    `max_steps`). Returns the summary. Holds RUN/train.lock throughout."""
    out = Path(out)
    out_dir("--out", out)
    if not (out / "run.json").exists():
        check_config(cfg, model_cfg)  # before the folder is created
    d = init_distributed(pick_device(cfg.device))
    created = not out.exists()
    lock = None
    try:
        if d.is_main:
            out.mkdir(parents=True, exist_ok=True)
            lock = RunLock(out).acquire()
        return _train(cfg, model_cfg, out, d, resume, max_steps, quiet, overrides)
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


def _train(cfg, model_cfg, out: Path, d, resume: bool, max_steps, quiet: bool, overrides) -> dict:
    device = d.device
    meta, cfg, model_cfg = prepare_run(out, cfg, model_cfg, resume, max_steps, d.world_size, overrides)
    torch.manual_seed(cfg.seed)
    mask_id = meta["mask_id"]
    objective, frozen = _objective(cfg, mask_id, device)
    model = build_model(cfg.objective, model_cfg)
    if cfg.objective == "nce" and not resume:
        model.backbone.load_state_dict(frozen.state_dict())
    model.to(device)
    n_params = sum(p.numel() for p in model.parameters())
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
    step, initial_loss = 0, None
    if resume and ckpt.has_checkpoint(out):
        step, initial_loss = resume_from(out, meta, model, ema, opt, gen, loader, cfg)
    if resume and d.is_main:  # rows past the checkpoint (or all of them, if none was saved) are replayed
        truncate_metrics(out / "metrics.jsonl", step)
    if d.is_main:
        atomic_write_json(out / "run.json", meta)
    fwd = wrapped
    metrics_f = open(out / "metrics.jsonl", "a") if d.is_main else None
    val_tokens = corpora.load_split(cfg.data, "valid")

    def save(at_step):
        # gathering is collective (FSDP2): every rank takes part, rank 0 writes
        model_sd = ckpt.full_cpu_state(model)
        ema_sd = ckpt.full_cpu_state(ema.state_dict()) if ema is not None else None
        optim_sd = ckpt.full_optimizer_state(model, opt)
        # every rank checks (all stop together): finite state, and weights whose loss is not diverging
        check_finite_state(out, at_step, model_sd, ema_sd, optim_sd)
        probe = probe_loss(model, objective, val_tokens, cfg, d, device, _autocast(cfg, device))
        check_before_save(probe, at_step, initial_loss, cfg, out)
        if d.is_main:
            ckpt.save_checkpoint(out, at_step, model_sd, ema_sd, optim_sd,
                                 {"loader": loader.state_dict(), "objective": cfg.objective,
                                  "world_size": d.world_size, "initial_loss": initial_loss, "save_loss": probe,
                                  "identity": ckpt.identity(meta)},
                                 keep=cfg.keep_checkpoints,
                                 rng_extra={"noise": gen.get_state()})
        barrier(d)

    tokens_per_step = cfg.batch_size * cfg.seq_len * cfg.grad_accum * d.world_size
    bar = progress(total=cfg.max_steps, initial=step, desc=f"train {cfg.objective}", unit="step",
                   disable=quiet or not d.is_main or None)
    t0, last_val, result = time.time(), None, {}
    first_bad = torch.tensor([-1.0, 0.0], device=device)  # (step, loss) of the first non-finite loss
    tok_since, time_since = 0, time.time()
    while step < cfg.max_steps:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        sums = torch.zeros(2, device=device)  # loss sum, count
        extra_sums: dict = {}
        model.train()
        for micro in range(cfg.grad_accum):
            x0 = loader.next_batch().to(device, non_blocking=True)
            sync = nullcontext()
            if d.enabled and cfg.parallel == "ddp" and micro < cfg.grad_accum - 1:
                sync = wrapped.no_sync()
            with sync, _autocast(cfg, device):
                loss_sum, count, extra = objective(fwd, x0, gen, d.rank, d.world_size)
                # count is identical on every rank and micro-step: divide once by the global count.
                (loss_sum / (count * cfg.grad_accum)).backward()
            # torch.full, not torch.tensor: a fill kernel instead of a host-to-device copy (no sync)
            sums += torch.stack([loss_sum.detach().float(), torch.full((), float(count), device=device)])
            for k, v in extra.items():
                extra_sums[k] = extra_sums.get(k, 0.0) + torch.as_tensor(v, device=device, dtype=torch.float32)
        all_reduce_sum(sums, d)
        # Remember the first non-finite loss on the device; it is read (a host sync) only when logging or
        # saving, so steps queue back to back and no bad state is ever written.
        bad_now = ~torch.isfinite(sums[0]) & (first_bad[0] < 0)
        first_bad = torch.where(bad_now, torch.stack([torch.full((), float(step), device=device), sums[0]]),
                                first_bad)
        nxt, loss = step + 1, None
        log_now = nxt % cfg.log_every == 0 or nxt == cfg.max_steps
        eval_now = bool(cfg.eval_every and nxt % cfg.eval_every == 0) or nxt == cfg.max_steps
        save_now = nxt % cfg.save_every == 0 or nxt == cfg.max_steps
        if log_now or eval_now or save_now or initial_loss is None:
            loss = (sums[0] / sums[1]).item()
            check_finite(first_bad, out)
            if initial_loss is None:  # the divergence rule's reference: the first step's loss (kept on resume)
                initial_loss = loss
            check_diverging(loss, nxt, initial_loss, cfg, out)
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else NO_CLIP)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update(model, step)
        step += 1
        tok_since += tokens_per_step
        if d.is_main:
            bar.update(1)
        if log_now:
            now = time.time()
            row = {"step": step, "loss": loss, "lr": lr_at(step - 1, cfg), "grad_norm": float(gnorm),
                   "tokens_per_second": tok_since / max(now - time_since, 1e-9), "elapsed": now - t0}
            if extra_sums:
                ex = {k: all_reduce_sum(v.clone(), d).item() for k, v in extra_sums.items()}
                row["nce_accuracy"] = ex["correct"] / ex["decisions"]
                row["e_pos"], row["e_neg"] = ex["e_pos"] / sums[1].item(), ex["e_neg"] / sums[1].item()
            tok_since, time_since = 0, now
            if d.is_main:
                bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{row['tokens_per_second']:.0f}")
                metrics_f.write(json.dumps(row) + "\n")
                metrics_f.flush()
            result = row
        if eval_now:
            last_val = validate(model, ema, objective, val_tokens, cfg, d, device)
            if d.is_main:
                metrics_f.write(json.dumps({"step": step, "val": last_val}) + "\n")
                metrics_f.flush()
        if save_now:
            save(step)
    if d.is_main:
        bar.close()
        metrics_f.close()
    summary = {"run": str(out), "objective": cfg.objective, "data": cfg.data, "steps": step,
               "params": n_params, "loss": result.get("loss"), "val": last_val,
               "tokens_per_second": result.get("tokens_per_second"), "seconds": time.time() - t0,
               "world_size": d.world_size, "device": str(device)}
    cleanup(d)
    return summary


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
    extra = torch.zeros(2, device=device)
    for x0 in iter_eval_blocks(tokens, cfg.seq_len, cfg.batch_size, rank=d.rank, world_size=d.world_size,
                               max_blocks=cfg.eval_batches * cfg.batch_size):
        with _autocast(cfg, device):
            s, c, ex = objective(model, x0.to(device), gen)
        sums += torch.stack([s.float(), torch.tensor(float(c), device=device)])
        if ex:
            extra += torch.stack([ex["correct"].float(), torch.tensor(ex["decisions"], device=device)])
    all_reduce_sum(sums, d)
    all_reduce_sum(extra, d)
    if backup is not None:
        model.load_state_dict(backup)
    out = {"loss": (sums[0] / sums[1].clamp(min=1)).item()}
    if extra[1] > 0:
        out["nce_accuracy"] = (extra[0] / extra[1]).item()
    return out
