"""A sampling job over a loaded model: MDLM, EDLM (MDLM + energy) or AR, in batches, with timing, the rows
`edlm sample` writes and its summary. It takes the model, its run.json dict and a built energy; opening run
folders and building energies from spec strings is edlm.api.generate's (used by `edlm sample`, demo and bench).

    rows, summary = generate(GenerateRequest(ckpt="label", num=8, steps=16), device, model, meta)
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from edlm.config.sampling import GenerateRequest, SamplerConfig
from edlm.data.tokenizers import tokenizer_for
from edlm.diffusion.schedules import get_schedule
from edlm.errors import EdlmError
from edlm.sampling import budget
from edlm.sampling.ar import ar_sample
from edlm.sampling.blocks import block_plan, sample_blocks
from edlm.sampling.energy_clock import TimedEnergy
from edlm.sampling.fast import block_denoiser, check_fast, sampler_fn
from edlm.sampling.infill import Infill
from edlm.sampling.loop import model_denoiser
from edlm.sampling.semiar import block_windows, sample_long
from edlm.sampling.sharpen import make_sharpen
from edlm.utils import fused_mode, fused_policy, process_seconds, progress


@dataclass
class Samples:
    """What Run.sample returns: tokens (num, length) int64, their texts, one row per sample (ids, text,
    seconds, method, steps, k, window, corpus, seed: the rows `edlm sample` writes) and the summary
    (`edlm sample`'s JSON: timing, mean_ess, method ...)."""

    tokens: torch.Tensor
    texts: list[str]
    rows: list[dict]
    summary: dict

    def __len__(self) -> int:
        return len(self.texts)


def precision_context(precision: str, device):
    """The autocast context for a precision name (the models' forwards run in it; draws stay float64)."""
    if precision not in ("auto", "bf16", "fp32"):
        raise EdlmError(f"precision {precision!r}: use auto, bf16 or fp32")
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def _compile_once(model, device):
    """Compile a network's trunk for sampling (CUDA graphs on a GPU), unless a sweep already did."""
    if model._compiled_features is None:
        model.compile_trunk(mode="reduce-overhead" if device.type == "cuda" else None)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class _Job:
    """What every batch of one generate() call shares: the run, the sampler and its settings, the stream."""

    objective: str  # "mdlm" or "ar"
    model: torch.nn.Module
    denoise: object  # the MDLM denoiser (None for an AR run)
    schedule: object
    mask_id: int
    scfg: SamplerConfig
    energy: object
    generator: torch.Generator
    length: int
    device: torch.device
    fixed: tuple | None = None  # infill: token ids, None where to generate
    stride: int | None = None  # semi-AR: new tokens per block
    window: int = 0  # semi-AR: tokens one block sees
    block: int | None = None  # block-wise: tokens per block (sampling/blocks.py)
    kv_cache: str = "none"  # keys/values kept outside the block (sampling/kvcache.py)
    kv_refresh: int = 0

    def batch(self, b: int, prefix=None, clock=None, trace=None, fixed_rows=None):
        """One batch of b sequences -> (x0 (b, length), SampleStats or None for AR). prefix: one list of ids per
        sequence (or None); fixed_rows: one infill (ids, None where generated) per sequence, else self.fixed."""
        if self.objective == "ar":
            pre, plen = _padded(prefix, self.mask_id, self.device)
            return ar_sample(self.model, b, self.length, self.mask_id, prefix=pre, generator=self.generator,
                             device=self.device, prefix_len=plen,
                             sharpen=make_sharpen(self.scfg.token_temperature, self.scfg.top_p)), None
        x_init = torch.full((b, self.length), self.mask_id, dtype=torch.long, device=self.device)
        for r, p in enumerate(prefix or ()):
            x_init[r, :len(p)] = torch.tensor(p, dtype=torch.long, device=self.device)
        if fixed_rows is not None:
            x_init = torch.cat([Infill(tuple(f)).x_init(1, self.mask_id, self.device) for f in fixed_rows])
        elif self.fixed is not None:
            x_init = Infill(tuple(self.fixed)).x_init(b, self.mask_id, self.device)
        on_choice = None
        if trace is not None:
            trace.begin(x_init, self.mask_id)
            on_choice = trace.on_choice
        if self.block is not None or self.kv_cache != "none":
            plan = block_plan(self.length, self.window if self.stride else self.length, self.stride or self.length,
                              self.block)
            return sample_blocks(self._sample_view, x_init, plan, self.mask_id, self.scfg.steps, callback=clock,
                                 on_choice=on_choice, on_block=None if trace is None else trace.on_block)
        if self.stride is None or self.length <= self.window:
            return self._sample(x_init, clock, on_choice)
        return sample_long(self._sample, x_init, self.window, self.stride, self.mask_id, self.scfg.steps,
                           callback=clock, on_choice=on_choice, on_block=None if trace is None else trace.on_block)

    def _sample(self, x_init, callback, on_choice, denoise=None):
        return sampler_fn(self.scfg.sampler)(denoise or self.denoise, self.schedule, self.mask_id, self.scfg,
                                             x_init=x_init, energy=self.energy, generator=self.generator,
                                             callback=callback, on_choice=on_choice)

    def _sample_view(self, x_view, tail, block_start, callback, on_choice):
        den = block_denoiser(self.model, self.mask_id, tail, block_start, self.kv_cache, self.kv_refresh)
        return self._sample(x_view, callback, on_choice, den)


def _padded(prefixes, fill: int, device):
    """Per-sequence prefixes -> (B, P) ids (padded with `fill`) and their lengths (B,); (None, None) if none.
    Lengths are None when all prefixes have the same length (the plain shared-prefix path)."""
    if not prefixes or not any(prefixes):
        return None, None
    P = max(len(p) for p in prefixes)
    out = torch.full((len(prefixes), P), fill, dtype=torch.long, device=device)
    for r, p in enumerate(prefixes):
        out[r, :len(p)] = torch.tensor(p, dtype=torch.long, device=device)
    same = len({len(p) for p in prefixes}) == 1
    return out, None if same else torch.tensor([len(p) for p in prefixes], device=device)


def per_sample(value, num: int) -> list | None:
    """A request's prefix or infill as one entry per sample: a list of per-sample entries (len == num) is kept,
    one shared entry is repeated, None stays None."""
    if value is None:
        return None
    if value and isinstance(value[0], (list, tuple)):
        return [list(v) for v in value]
    return [list(value)] * num


class StepClock:
    """Wall time of every sampler step (each step syncs with the host once, so the times are the device's).
    The first two steps of a process carry its one-off costs (CUDA libraries, compiles): the per-step cost
    is the mean over the steps after them, and everything else is fixed cost."""

    def __init__(self):
        self.times: list[float] = []
        self.last = None

    def start(self):
        self.last = time.perf_counter()

    def __call__(self, i, x, t=None, ess=None):
        now = time.perf_counter()
        self.times.append(now - self.last)
        self.last = now

    def summary(self, startup_s: float, sampling_s: float) -> dict:
        steady = self.times[2:]
        per_step = sum(steady) / len(steady) if steady else None
        fixed = startup_s + sampling_s - per_step * len(self.times) if per_step is not None else None
        return {"steps_run": len(self.times), "per_step_s": per_step, "fixed_s": fixed}


def check_request(req: GenerateRequest, model, meta: dict) -> tuple[int, int]:
    """The request's checks against the run, before any work -> (sample length, semi-AR block length)."""
    req.check()
    obj = meta["objective"]
    if obj == "nce":
        raise EdlmError(f"{req.ckpt} is an energy (nce) run: sample with `ckpt` MDLM_RUN and `energy=nce:{req.ckpt}`")
    fixed, prefixes = per_sample(req.fixed, req.num), per_sample(req.prefix, req.num)
    for what, v in (("fixed", fixed), ("prefix", prefixes)):
        if v is not None and len(v) != req.num:
            raise EdlmError(f"{len(v)} {what} entries for `num` {req.num} samples: give one per sample, or one for all")
    if fixed is not None and len({len(f) for f in fixed}) > 1:
        raise EdlmError(f"the infill templates have {sorted({len(f) for f in fixed})} tokens: samples generated "
                        "together need templates of one length (add or remove [MASK] blanks)")
    length = len(fixed[0]) if fixed is not None else (req.length or meta["train"]["seq_len"])
    window = min(meta["train"]["seq_len"], model.cfg.max_len)  # what one semi-AR block sees
    if req.stride is not None:
        if obj != "mdlm":
            raise EdlmError("`stride` (semi-autoregressive blocks) applies to an MDLM run; an AR run needs none")
        if not 1 <= req.stride <= window:
            raise EdlmError(f"`stride` {req.stride}: give 1..{window} (new tokens per block of {window})")
    elif length > model.cfg.max_len:
        raise EdlmError(f"`length` {length} exceeds what the model allows ({model.cfg.max_len}); to generate "
                        f"longer, add `stride` S (semi-autoregressive blocks of {window} tokens, e.g. S={window // 2})")
    if req.fixed is not None and obj != "mdlm":
        raise EdlmError("infilling needs an MDLM run (an AR run only continues a `prefix`)")
    longest = max((len(p) for p in prefixes), default=0) if prefixes else 0
    if longest >= length:
        raise EdlmError(f"the prefix has {longest} tokens, not fewer than `length` {length}")
    if req.energy and obj != "mdlm":
        raise EdlmError("`energy` applies to an MDLM run (`ckpt` MDLM_RUN); this run is autoregressive")
    check_fast(obj, sampler=req.sampler, threshold=req.threshold, block_size=req.block_size, kv_cache=req.kv_cache,
               kv_refresh=req.kv_refresh, unmask=req.unmask, stride=req.stride)
    return length, window


def check_memory(req: GenerateRequest, device, model, meta: dict, energy=None) -> tuple[int, int]:
    """check_request, then the request's estimated peak memory against what `device` has free
    (sampling/budget.py): one EdlmError naming the arguments to lower, before the first batch. energy: (energy,
    method name) as for generate(). -> (sample length, semi-AR block length)."""
    length, window = check_request(req, model, meta)
    adaptive = req.k_policy is not None and req.k_policy.k_max > req.k  # an adaptive k grows up to k_max
    net = energy[0] if energy is not None else None
    need = budget.sample_need(model.cfg, meta["mask_id"], batch=req.batch_size, num=req.num, length=length,
                              steps=req.steps, k=(req.k_policy.k_max if adaptive else req.k) if net is not None else 1,
                              energy=net, window=window if req.stride is not None else None,
                              autoregressive=meta["objective"] == "ar", k_name="k_max" if adaptive else "k")
    budget.check(need, device)
    return length, window


def generate(req: GenerateRequest, device, model, meta: dict, *, energy=None, quiet: bool = False, on_batch=None,
             callback=None, trace=None):
    """Returns (rows, summary). model, meta: the run's network and run.json dict; energy: (energy, method name)
    built for this MDLM (EDLM), or None; req.ckpt and req.energy only label the rows and summary. `on_batch` is
    called with each batch's finished rows as soon as they exist (`edlm sample` streams them to disk);
    `callback(i, x, t, ess)` sees every sampler step (MDLM/EDLM; its time counts in the step times);
    `trace` (a sampling/trace.py TraceRecorder) records the first batch's denoising. A job whose estimated peak
    memory exceeds what the device has free is refused before the first batch (check_memory)."""
    length, window = check_memory(req, device, model, meta, energy)
    obj = meta["objective"]
    mask_id = meta["mask_id"]
    gen = torch.Generator(device=device)
    gen.manual_seed(req.seed)
    method = "ar" if obj == "ar" else "mdlm"
    denoise, lm_tokens0 = None, None
    amp = precision_context(req.precision, device)
    if req.compile:
        _compile_once(model, device)
    if obj == "mdlm":
        denoise = model_denoiser(model, mask_id)
        if energy is not None:
            energy, method = energy
            energy = TimedEnergy(energy, device)  # its own time and candidates, for the summary
            lm_tokens0 = getattr(getattr(energy, "scorer", None), "lm_tokens", None)
            ar = getattr(energy, "ar", None)  # the AR energy's network: compiled alongside the denoiser
            if req.compile and ar is not None:
                _compile_once(ar, device)
    scfg = SamplerConfig(steps=req.steps, k=req.k if energy is not None else 1, window=req.window,
                         temperature=req.temperature, cache=req.cache, unmask=req.unmask,
                         k_policy=req.k_policy if energy is not None else None,
                         min_unmask=req.min_unmask if energy is not None else 1, sampler=req.sampler,
                         threshold=req.threshold, token_temperature=req.token_temperature, top_p=req.top_p)
    sharp = {k: v for k, v in (("token_temperature", req.token_temperature), ("top_p", req.top_p)) if v != 1.0}
    unmask = None if obj == "ar" else req.unmask
    schedule = get_schedule(meta["train"].get("schedule", "loglinear"))
    rows, ess_all, t_total, forwards = [], [], 0.0, 0
    cost = {"candidates": 0, "seq_steps": 0, "vetoed": 0, "forwards": 0}  # energy candidate-evaluations, the
    # sequence-steps that drew them, those whose candidates were all vetoed (ESS 0), denoiser passes x sequences
    bar = progress(total=req.num, desc=f"sample {method}", unit="seq", disable=quiet or None)
    clock = StepClock()
    step_cb = clock if callback is None else (lambda *a: (clock(*a), callback(*a)))
    with fused_policy("on" if req.compile else None):
        fused = fused_mode()  # what the fused kernels do in this call (the environment wins over --compile)
    _sync(device)
    startup_s = process_seconds()  # imports, CUDA start-up, loading the model(s): everything before batch 1
    tok = tokenizer_for(meta["data"])
    shared = req.fixed if req.fixed is not None and not isinstance(req.fixed[0], (list, tuple)) else None
    job = _Job(obj, model, denoise, schedule, mask_id, scfg, energy, gen, length, device, fixed=shared,
               stride=req.stride, window=window, block=req.block_size, kv_cache=req.kv_cache,
               kv_refresh=req.kv_refresh)
    prefixes, fixed = per_sample(req.prefix, req.num), per_sample(req.fixed, req.num)
    for start in range(0, req.num, req.batch_size):
        b = min(req.batch_size, req.num - start)
        prefix = prefixes[start:start + b] if prefixes else None
        fixed_rows = fixed[start:start + b] if fixed and isinstance(req.fixed[0], (list, tuple)) else None
        _sync(device)
        t0 = time.perf_counter()
        clock.start()
        tr = trace if (trace is not None and start == 0 and obj != "ar") else None
        cb = step_cb if tr is None else (lambda *a, tr=tr: (step_cb(*a), tr(*a)))
        with amp, fused_policy("on" if req.compile else None):
            x, stats = job.batch(b, prefix, cb, tr, fixed_rows)
        _sync(device)
        dt = time.perf_counter() - t0
        t_total += dt
        forwards += stats.forwards if stats is not None else 0
        if stats is not None:
            cost["forwards"] += stats.forwards * b
        if stats is not None and stats.ess:
            ess_all.extend(stats.ess)
            cost["candidates"] += stats.candidates
            cost["seq_steps"] += sum(e.numel() for e in stats.ess)
            cost["vetoed"] += sum(int((e == 0).sum()) for e in stats.ess)
        batch_rows = [{"ids": x[i].tolist(), "seconds": dt / b, "method": method, "steps": req.steps,
                       "k": scfg.k, "window": list(req.window) if req.window else None, "unmask": unmask,
                       "corpus": meta["data"], "seed": req.seed, **sharp} for i in range(b)]
        if energy is not None:  # which model chose these samples: the circularity guard of eval reads it
            for r in batch_rows:
                r.update(energy=req.energy, energy_model=getattr(energy, "model_identity", None))
        for r in batch_rows:
            r["text"] = tok.decode(r["ids"])
        rows.extend(batch_rows)
        if on_batch is not None:
            on_batch(batch_rows)
        bar.update(b)
        bar.set_postfix(tok_s=f"{len(rows) * length / max(t_total, 1e-9):.0f}")
    bar.close()
    mean_ess = float(torch.cat(ess_all).mean()) if ess_all else None
    summary = {"num": len(rows), "steps": req.steps, "seconds": t_total,
               "seconds_per_sample": t_total / max(len(rows), 1),
               "tokens_per_second": len(rows) * length / max(t_total, 1e-9), "method": method, "k": scfg.k,
               "window": list(req.window) if (req.window and energy is not None) else None,
               "mean_ess": mean_ess, "unmask": unmask, "length": length, "ckpt": str(req.ckpt),
               "energy": req.energy,
               # fixed cost vs per-step cost: startup_s (process start to the first batch) + sampling_s
               # (all batches) = fixed_s + per_step_s x steps_run
               "startup_s": startup_s, "sampling_s": t_total, **clock.summary(startup_s, t_total),
               "fused": fused}
    if obj == "mdlm":
        summary["denoiser_forwards_per_sample"] = cost["forwards"] / max(len(rows), 1)
    if energy is not None:  # the energy's cost, comparable across fixed and adaptive k
        n = max(len(rows), 1)
        summary.update(energy_candidates_per_sample=cost["candidates"] / n,
                       mean_k=cost["candidates"] / cost["seq_steps"] if cost["seq_steps"] else None,
                       energy_seconds=energy.seconds, energy_seconds_per_sample=energy.seconds / n,
                       energy_share_of_time=energy.seconds / t_total if t_total > 0 else None,
                       all_vetoed=cost["vetoed"], energy_model=getattr(energy, "model_identity", None))
        describe = getattr(energy, "describe", None)
        summary.update(describe() if callable(describe) else {})
        if lm_tokens0 is not None:  # an LM energy: the LM tokens it read in this job
            summary["energy_lm_tokens_per_sample"] = (energy.scorer.lm_tokens - lm_tokens0) / n
    if req.k_policy is not None and energy is not None:
        p = req.k_policy
        summary.update(k_policy="ess", k_max=p.k_max, k_min=p.k_min)
    if req.min_unmask > 1 and energy is not None:
        summary.update(min_unmask=req.min_unmask)
    summary.update(sharp)  # only when not 1: the JSON of a plain run is unchanged
    if req.stride is not None:  # fields added only when used: the JSON of a plain run is unchanged
        summary.update(stride=req.stride, block=window, blocks=len(block_windows(length, window, req.stride)))
    if obj == "mdlm" and (req.sampler != "step" or req.block_size is not None or req.kv_cache != "none"):
        summary.update(sampler=req.sampler, network_calls_per_batch=forwards / max(1, -(-req.num // req.batch_size)))
        if req.sampler == "threshold":
            summary.update(threshold=req.threshold)
        if req.block_size is not None:
            summary.update(block_size=req.block_size)
        if req.kv_cache != "none":
            summary.update(kv_cache=req.kv_cache, kv_refresh=req.kv_refresh)
    if req.fixed is not None:
        shown = [Infill(tuple(f)).render(tok.decode) for f in (fixed[:1] if shared is not None else fixed)]
        summary.update(infill=shown[0] if shared is not None else shown,
                       infill_blanks=sum(i is None for i in fixed[0]))
    return rows, summary
