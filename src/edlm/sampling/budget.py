"""Resource bounds of a sampling or likelihood job, checked before anything big is allocated: its peak memory
estimated from its sizes, against what the device has free, so that too big a job is one EdlmError naming
the arguments to lower, not an allocator traceback (or the OOM killer) minutes in.

    need = sample_need(model.cfg, mask_id, batch=16, num=64, length=1024, steps=128, k=8, energy=energy)
    check(need, device)        # EdlmError when need.total > free_bytes(device)

The estimate adds up what the code allocates, term by term, in float32 (the CPU path and the plain GPU path;
bf16 autocast and the fused GPU kernels need less), so it errs high; tests/test_security_bounds.py and
benchmarks/budget_check.py hold it to measured peaks. Weights already loaded are not counted: the free memory
is read after loading them. EDLM_MEMORY_CHECK=0 turns the check off, for a setup where the estimate is wrong.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from edlm.errors import EdlmError
from edlm.sampling.categorical import BLOCK, chunk_rows

F32, I64 = 4, 8
SLACK = 128 << 20
"""allocator rounding, thread-pool and library workspaces: measured 20-40 MB on small CPU jobs"""
MMAP_MAX = 32 << 20
"""glibc's largest mmap threshold: bigger CPU tensors are mapped and unmapped, smaller ones reuse the heap"""
ROW_BYTES, ROW_TOKEN_BYTES = 1200, 48
"""a kept sample row: its dict and summary fields, plus per token a Python int in the ids list, its share of
the text and of the final (num, length) tensor"""


@dataclass
class Need:
    """A job's estimated peak memory in bytes: `total`, its terms, and which arguments lower the biggest one."""

    what: str
    total: int
    parts: dict = field(default_factory=dict)
    fixes: dict = field(default_factory=dict)
    """term name -> what lowers it ("`batch_size` or `k`")"""

    def biggest(self) -> str:
        return max(self.parts, key=self.parts.get)


def trunk_bytes(cfg, seqs: int, length: int) -> int:
    """One no-grad forward through the blocks of `seqs` x `length` tokens: the residual stream, a block's norm,
    q/k/v and attention output, its MLP's hidden layer and activation (SDPA keeps attention O(length) per
    query block). Measured on the CPU at mlp_ratio 4: 12-13x the (seqs, length, d_model) float32 stream, this
    says 14x; but 17-23x while the stream is under glibc's 32 MiB mmap threshold (its tensors then come from
    the heap, which keeps freed blocks), this says 25x there."""
    stream = seqs * length * cfg.d_model * F32
    return stream * (2 * cfg.mlp_ratio + 6 + (11 if stream < MMAP_MAX else 0))


def features_bytes(cfg, seqs: int, length: int) -> int:
    """The output layer's input (seqs, length, d_model), kept while logits are projected from it."""
    return seqs * length * cfg.d_model * F32


def logit_bytes(rows: int, classes: int, width: int) -> int:
    """Logits at `rows` positions (width = the padded output layer), one chunk of categorical.chunk_rows at a
    time, and the float32 temporaries that read them (softmax weights, cross-entropy's log-softmax)."""
    return min(rows, chunk_rows(classes)) * (width + 2 * classes) * F32


def draw_bytes(rows: int, k: int, classes: int, width: int) -> int:
    """k draws at each of `rows` positions: the logits chunk, the two-level search's block tensors per row and
    draw (categorical._draw_plain: int64 columns, float32 and float64 weights, ~40 bytes per BLOCK entry), and
    the (rows, k) tokens and log-probs."""
    c = min(rows, chunk_rows(classes))
    return logit_bytes(rows, classes, width) + c * k * BLOCK * 40 + rows * k * (I64 + F32)


def energy_bytes(energy, seqs: int, length: int) -> int:
    """Scoring `seqs` candidate sequences: an AR energy runs seqs_per_forward of them at a time (trunk, then
    features, logits and cross-entropy's float32 copies); an NCE energy its batch_size (0: all) through the
    fused embeddings and the backbone. 0 for an energy of unknown make."""
    if energy is None:
        return 0
    ar = getattr(energy, "ar", None)
    if ar is not None:
        c = min(seqs, energy.seqs_per_forward(length))
        cfg, V = ar.cfg, energy.mask_id
        head = features_bytes(cfg, c, length) + c * length * (cfg.n_out_padded + 2 * V) * F32
        return max(trunk_bytes(cfg, c, length), head) + 2 * c * length * I64
    net = getattr(energy, "net", None)
    if net is not None:
        c = min(seqs, energy.batch_size or seqs)
        return trunk_bytes(net.cfg, c, length) + 5 * features_bytes(net.cfg, c, length)
    return 0


def _mdlm_step(cfg, classes, b, length, k, energy) -> tuple[int, int]:
    """(plain step, EDLM step) peaks of one sampler step on b sequences of `length` tokens."""
    W = cfg.n_out_padded
    feats = features_bytes(cfg, b, length)
    plain = max(trunk_bytes(cfg, b, length), feats + draw_bytes(b * length, 1, classes, W))
    if energy is None or k <= 1:
        return plain, 0
    # candidates (b*length, k) and their (b, k, length) copies: the flat x0, the repeated x_t (int64 each)
    cands = b * length * k * (I64 + F32 + 3 * I64)
    return plain, feats + cands + max(draw_bytes(b * length, k, classes, W), energy_bytes(energy, b * k, length))


def sample_need(cfg, mask_id: int, *, batch: int, num: int, length: int, steps: int, k: int = 1, energy=None,
                window: int | None = None, autoregressive: bool = False, k_name: str = "k") -> Need:
    """Peak of generating `num` samples of `length` tokens, `batch` at a time (the last batch may be smaller).
    cfg: the generating network's TransformerConfig; mask_id: its number of token classes (the MASK / BOS id);
    window: the tokens one forward sees (semi-autoregressive blocks; default length); energy: the built energy
    (EDLM, with k candidates per step; k_name: the argument that sets it, "k_max" for an adaptive k)."""
    b = min(batch, num)
    rows = num * (ROW_BYTES + ROW_TOKEN_BYTES * length)
    state = 8 * b * length * I64  # x, the start state, clones for callbacks and the semi-AR blocks
    parts = {"rows": rows}
    if autoregressive:  # KV caches (grown by concatenation: one layer's old and new copies at once)
        kv = (cfg.n_layers + 1) * 2 * features_bytes(cfg, b, length)
        parts["forward"] = kv + trunk_bytes(cfg, b, 1) + b * (cfg.n_out_padded + 2 * mask_id) * F32
    else:
        L = min(window or length, length)
        parts["forward"], edlm = _mdlm_step(cfg, mask_id, b, L, k, energy)
        if edlm:
            parts["candidates"] = edlm
        parts["steps"] = 32 * (steps + 1)  # the time grid, a list of Python floats
    total = rows + state + max(v for n, v in parts.items() if n != "rows") + SLACK
    what = f"sampling {num} x {length} tokens (`batch_size={batch}`" + (f", `{k_name}={k}`" if energy else "") + ")"
    return Need(what, total, parts, {"rows": "lower `num` or `length` (every sample is kept in memory until the job "
                                     "ends)", "forward": "lower `batch_size`",
                                     "candidates": f"lower `batch_size` or `{k_name}`", "steps": "lower `steps`"})


def nelbo_need(cfg, mask_id: int, *, objective: str, batch: int, blocks: int, length: int, steps: int | None = None,
               k: int = 1, logz_samples: int = 0, bound_draws: int = 1, energy=None) -> Need:
    """Peak of `edlm eval nelbo` on `blocks` sequences of `length` tokens, `batch` at a time: the model's forward
    and logits (an AR model's all at once, an MDLM's at the masked positions, chunked); with an energy, the
    larger of the T-step bound's k candidates and the estimate's logz_samples proposals, and their energy."""
    given, batch = batch, min(batch, blocks)
    W = cfg.n_out_padded
    feats = features_bytes(cfg, batch, length)
    if objective == "ar":
        forward = max(trunk_bytes(cfg, batch, length), feats + batch * length * (W + 2 * mask_id) * F32)
    else:
        forward = max(trunk_bytes(cfg, batch, length), feats + logit_bytes(batch * length, mask_id, W))
    parts = {"forward": forward}
    if energy is not None:
        n = max(k if steps else 0, logz_samples)
        cands = batch * length * n * (I64 + F32 + 3 * I64) + bound_draws * batch * 2 * I64
        parts["candidates"] = feats + cands + max(draw_bytes(batch * length, n, mask_id, W),
                                                  energy_bytes(energy, batch * n, length))
    if steps:
        parts["steps"] = 32 * (steps + 1) + batch * 3 * 32
    total = max(parts.values()) + 8 * batch * length * I64 + SLACK
    what = f"evaluating {length}-token sequences {batch} at a time (`batch_size={given}`)"
    if energy is not None:
        what += f" with `k={k}` candidates" + (f" and `logz_samples={logz_samples}` proposals" if logz_samples else "")
    return Need(what, total, parts,
                {"forward": "lower `batch_size`", "candidates": "lower `batch_size`, `k` or `logz_samples`",
                 "steps": "lower `steps`"})


def free_bytes(device) -> int | None:
    """Memory this process can still allocate on `device`, in bytes; None where unknown (no check then).
    CUDA: the device's free memory plus what torch's caching allocator holds unused. CPU: MemAvailable, or less
    when a cgroup (container) limit or an address-space rlimit leaves less."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type != "cpu":
        return None
    known = [v for v in (_meminfo_available(), _cgroup_room(), _rlimit_room()) if v is not None]
    return min(known) if known else None


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room() -> int | None:
    """limit - usage of this process's memory cgroup (v2, else v1), None without a limit."""
    try:
        rel = next((ln.split(":", 2)[2] for ln in Path("/proc/self/cgroup").read_text().splitlines()
                    if ln.startswith("0::")), "/")
    except OSError:
        rel = "/"
    root = Path("/sys/fs/cgroup")
    for base in (root / rel.lstrip("/"), root):
        for lim, use in (("memory.max", "memory.current"),
                         ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
            try:
                limit = (base / lim).read_text().strip()
                if limit == "max" or int(limit) >= 1 << 60:
                    continue
                return max(0, int(limit) - int((base / use).read_text()))
            except (OSError, ValueError):
                continue
    return None


def _rlimit_room() -> int | None:
    """RLIMIT_AS (ulimit -v) minus the address space in use, None when unlimited."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft == resource.RLIM_INFINITY:
            return None
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return max(0, soft - int(line.split()[1]) * 1024)
    except (ImportError, OSError, ValueError):
        pass
    return None


def size(n: float) -> str:
    if n >= 1e12:
        return f"{n / 1e12:,.0f} TB" if n >= 1e15 else f"{n / 1e12:.3g} TB"
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.0f} MB"


def check(need: Need, device) -> None:
    """EdlmError when the job's estimated peak exceeds what `device` has free: the job, the figures, and the
    arguments that lower its biggest term."""
    if os.environ.get("EDLM_MEMORY_CHECK", "1").strip() == "0":
        return
    free = free_bytes(device)
    if free is None or need.total <= free:
        return
    over = sorted((n for n, v in need.parts.items() if v > free), key=need.parts.get, reverse=True)
    fixes = dict.fromkeys(need.fixes.get(n, "make the job smaller") for n in over or [need.biggest()])
    raise EdlmError(f"{need.what} needs ~{size(need.total)} at its peak, but {torch.device(device)} has "
                    f"{size(free)} free: {'; '.join(fixes)} (EDLM_MEMORY_CHECK=0 skips this estimate)")
