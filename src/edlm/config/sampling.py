"""What a sampler is asked to do: the step loop's settings (SamplerConfig), the adaptive-k policy (KPolicy,
explained in sampling/adaptive.py) and a whole sampling job (GenerateRequest).

    SamplerConfig(steps=16, k=4, window=(0.0, 1.0))
    GenerateRequest(ckpt="runs/mdlm", num=64, steps=16, energy="ar:runs/ar", k=4)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edlm import validate
from edlm.errors import EdlmError

if TYPE_CHECKING:  # the CLI imports this module before torch is needed
    import torch

from edlm.config.unmasking import UNMASKINGS  # which positions a step unmasks: the registered strategies

K_POLICIES = ("fixed", "ess")

SAMPLERS = ("step", "first-hit", "threshold")
"""the sampler's loop (SamplerConfig.sampler): step (MDLM's time grid, sampling/loop.py), first-hit (exact
continuous time, one network call per token, sampling/firsthit.py), threshold (every position above a top
probability at once, sampling/threshold.py)"""

KV_CACHES = ("none", "prefix", "dual")
"""keys and values kept across a block's network calls (GenerateRequest.kv_cache; sampling/kvcache.py)"""


def check_sharpness(token_temperature: float, top_p: float) -> None:
    """ValueError unless 0 < token_temperature < inf and 0 < top_p <= 1 (sampling/sharpen.py: the knobs)."""
    t_ok = isinstance(token_temperature, (int, float)) and not isinstance(token_temperature, bool)
    if not (t_ok and math.isfinite(token_temperature) and token_temperature > 0):
        raise ValueError(f"`token_temperature` must be a finite number > 0, not {token_temperature!r}")
    p_ok = isinstance(top_p, (int, float)) and not isinstance(top_p, bool)
    if not (p_ok and 0 < top_p <= 1):
        raise ValueError(f"`top_p` must be a number in (0, 1], not {top_p!r}")


@dataclass(frozen=True)
class KPolicy:
    """Adapt k between EDLM steps from the ESS (the rule and why: sampling/adaptive.py). The first step in the
    window uses SamplerConfig.k (clamped to [k_min, k_max])."""

    k_max: int = 16
    """the most candidates a step may draw"""
    k_min: int = 2
    """the fewest; 2 (the default) keeps the energy on; 1 lets a sequence fall back to plain MDLM steps for the
    rest of the run after one step of flat weights (k = 1 measures no ESS, so nothing raises it again)"""
    double_below: float = 0.25
    """double k when the weights use at most this share of the extra candidates, (ESS - 1) / (k - 1)"""
    halve_above: float = 0.75
    """halve k when they use at least this share (near-uniform weights)"""

    def __post_init__(self):
        if not 1 <= self.k_min <= self.k_max:
            raise ValueError(f"k policy: need 1 <= k_min ({self.k_min}) <= k_max ({self.k_max})")
        if not 0.0 <= self.double_below < self.halve_above <= 1.0:
            raise ValueError(f"k policy: need 0 <= double_below ({self.double_below}) < halve_above "
                             f"({self.halve_above}) <= 1")

    def start(self, k: int) -> int:
        return min(max(k, self.k_min), self.k_max)

    def next_k(self, k: int, ess: torch.Tensor) -> int:
        """k for the next step in the window, from this step's k and its ESS (B_active,) (one host sync)."""
        if k <= 1 or ess.numel() == 0:
            return k
        usage = (float(ess.double().mean()) - 1.0) / (k - 1)
        if usage <= self.double_below:
            return min(2 * k, self.k_max)
        if usage >= self.halve_above:
            return max(k // 2, self.k_min)
        return k

    def next_ks(self, k: torch.Tensor, ess: torch.Tensor) -> torch.Tensor:
        """Per sequence: each sequence's next k (B,) from its own k (B,) and its own ESS (B,) on this step, the
        rule of next_k applied row by row, so a sequence's k never depends on the other sequences of its batch."""
        import torch

        k = k.long()
        usage = (ess.double() - 1.0) / (k - 1).clamp(min=1).double()
        up = torch.minimum(2 * k, torch.full_like(k, self.k_max))
        down = torch.maximum(k // 2, torch.full_like(k, self.k_min))
        out = torch.where(usage <= self.double_below, up, torch.where(usage >= self.halve_above, down, k))
        return torch.where(k <= 1, k, out)


def parse_k_policy(kind, k_max: int = 16, k_min: int = 2) -> KPolicy | None:
    """A k policy as users name it: None or 'fixed' -> None (every EDLM step uses k), 'ess' -> KPolicy(k_max,
    k_min), a KPolicy -> itself."""
    if kind is None or isinstance(kind, KPolicy):
        return kind
    if kind == "fixed":
        return None
    if kind == "ess":
        return KPolicy(k_max=k_max, k_min=k_min)
    raise ValueError(f"k_policy {kind!r}: use one of {', '.join(K_POLICIES)} or an edlm.KPolicy")


@dataclass
class SamplerConfig:
    steps: int = 64
    k: int = 1
    """candidates per step inside the window (EDLM); 1 or no energy = plain MDLM"""
    window: tuple[float, float] | None = (0.0, 1.0)
    """EDLM is used at steps whose current t is in [t_lo, t_hi]; None = never"""
    temperature: float = 1.0
    """the ENERGY's temperature tau: EDLM weighs candidates by softmax(-E / tau); 1 = the exact EDLM target"""
    cache: bool = True
    """reuse the denoiser output when x_t did not change, for denoisers that declare themselves
    time-independent (time_conditioning = False); a plain callable is assumed to depend on t"""
    unmask: str = "random"
    """which positions a step unmasks: random (MDLM: each masked one with the schedule's probability) or
    confidence (the schedule's expected count, the most confident draws first; sampling/confidence.py)"""
    k_policy: KPolicy | str | None = None
    """None or "fixed": k candidates on every step in the window. A KPolicy, or "ess" for KPolicy()
    (sampling/adaptive.py): k is the first step's count, and each sequence's ESS on an EDLM step sets its own k
    on the next (halved when the weights are flat, doubled when one candidate takes all the weight), within
    [k_min, k_max]"""
    min_unmask: int = 1
    """EDLM steps run the energy only for sequences that unmask at least this many positions on the step; the
    others take a plain MDLM draw (sampling/importance.py: one token from exact marginals needs no energy).
    Random unmasking only"""
    token_temperature: float = 1.0
    """the proposal's per-position distribution p(v) becomes p(v)^(1/T) before the draw (sampling/sharpen.py);
    1 = the model's own. Not the energy's `temperature`"""
    top_p: float = 1.0
    """nucleus: draw only from the smallest set of most probable tokens (after token_temperature) with mass >= p"""

    sampler: str = "step"
    """step (the time grid of `steps`), first-hit (exact: one network call per token; steps and unmask do not
    apply) or threshold (every masked position whose top probability exceeds `threshold`, at least one per
    step; approximate; steps and unmask do not apply)"""
    threshold: float = 0.9
    """the threshold sampler's top-probability threshold"""

    def __post_init__(self):
        check_sharpness(self.token_temperature, self.top_p)
        self.k_policy = parse_k_policy(self.k_policy)
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler {self.sampler!r}: use one of {', '.join(SAMPLERS)}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold {self.threshold!r}: give a probability in [0, 1]")
        if self.sampler != "step" and self.unmask != "random":
            raise ValueError(f"unmask {self.unmask!r} is a rule of the step sampler; the {self.sampler} sampler "
                             "chooses its own positions")
        if self.unmask not in UNMASKINGS:
            raise ValueError(f"unmask {self.unmask!r}: use one of {', '.join(UNMASKINGS)}")
        if self.min_unmask < 1 or (self.min_unmask > 1 and not UNMASKINGS[self.unmask].min_unmask):
            ok = ", ".join(n for n, u in UNMASKINGS.items() if u.min_unmask)
            raise ValueError(f"min_unmask {self.min_unmask}: give 1 or more, and more than 1 only with unmask "
                             f"{ok}")


@dataclass
class GenerateRequest:
    ckpt: str
    num: int = 16
    steps: int = 64
    batch_size: int = 16
    length: int | None = None
    seed: int = 0
    energy: str | None = None
    k: int = 1
    window: tuple[float, float] | None = (0.0, 1.0)
    temperature: float = 1.0
    """the energy's temperature tau in softmax(-E / tau) (EDLM); see token_temperature for the tokens'"""
    prefix: list[int] | None = None
    cache: bool = True
    unmask: str = "random"
    """random (MDLM's positions) or confidence (the most confident draws first; sampling/confidence.py)"""
    k_policy: KPolicy | str | None = None
    """None or "fixed": `k` candidates on every EDLM step; a KPolicy (or "ess"): `k` on the first, then each
    sequence's k set by its own ESS on the step before (sampling/adaptive.py)"""
    min_unmask: int = 1
    """EDLM: the energy runs only for sequences that unmask at least this many positions on a step (the others
    take a plain MDLM draw); random unmasking only"""
    precision: str = "auto"
    """auto = bf16 autocast on a GPU, fp32 on the CPU; bf16; fp32. Categorical draws are float64 always"""
    fixed: list | None = None
    """infill: one entry per position, a token id (kept) or None (generated); sets the length
    (sampling/infill.py)"""
    stride: int | None = None
    """semi-autoregressive: generate in blocks of the training length, each new block `stride` tokens on,
    with the tokens before it in its window as fixed context (sampling/semiar.py); allows any length"""
    sampler: str = "step"
    """step, first-hit or threshold (SamplerConfig.sampler)"""
    threshold: float = 0.9
    """the threshold sampler's top-probability threshold"""
    block_size: int | None = None
    """block-wise generation: denoise the positions to generate in left-to-right blocks of this many, each with
    the sampler's `steps` (sampling/blocks.py); None = one block per window"""
    kv_cache: str = "none"
    """none, prefix or dual: keep the keys and values of the positions outside the current block across its
    network calls (an approximation for these bidirectional models; sampling/kvcache.py). Needs blocks: a
    `stride` or a `block_size`"""
    kv_refresh: int = 0
    """with kv_cache: recompute the kept keys and values every this many network calls of a block (0 = only at
    the block's start; 1 = every call, the same samples as no cache)"""
    compile: bool = False
    """torch.compile the denoiser's trunk (with CUDA graphs on a GPU) and the fused draw / log-prob kernels
    at once; the first batch pays the compile. Without it those kernels compile only once the job has run
    long enough to pay for it (utils.fused_on_gpu), so a short job starts at once"""
    token_temperature: float = 1.0
    """every draw (MDLM, EDLM candidates, confidence, AR) from p(v)^(1/T), renormalised (sampling/sharpen.py)"""
    top_p: float = 1.0
    """every draw from the nucleus of mass >= top_p (after token_temperature); 1 = all tokens"""

    def __post_init__(self):
        self.k_policy = parse_k_policy(self.k_policy)

    def check(self) -> None:
        """Every field in range and of its type (one EdlmError naming it), before anything is loaded."""
        for name in ("num", "steps", "batch_size", "k", "min_unmask"):
            validate.at_least(f"`{name}`", getattr(self, name), 1)
        validate.at_most("`steps`", self.steps, validate.MAX_LOOP, validate.STEPS_WHY)
        validate.at_least("`length`", self.length, 1, optional=True)
        validate.at_least("`stride`", self.stride, 1, optional=True)
        validate.seed("`seed`", self.seed)
        validate.temperature("`temperature`", self.temperature)
        validate.window_in_unit(self.window)
        if self.unmask not in UNMASKINGS:
            raise EdlmError(f"`unmask` {self.unmask!r}: use {' or '.join(UNMASKINGS)}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise EdlmError(f"`precision` {self.precision!r}: use auto, bf16 or fp32")
        if self.k_policy is not None and not isinstance(self.k_policy, KPolicy):
            raise EdlmError(f"`k_policy` {self.k_policy!r}: give None, 'fixed', 'ess' or an edlm.KPolicy")
        try:
            check_sharpness(self.token_temperature, self.top_p)
        except ValueError as e:
            raise EdlmError(f"{e} (1 = the model's own distribution)") from None
        if (self.token_temperature != 1.0 or self.top_p != 1.0) and self.sampler != "step":
            raise EdlmError(f"`token_temperature` and `top_p` sharpen the step sampler's and AR's draws; the "
                            f"{self.sampler} sampler draws from the model's own distribution: give sampler 'step'")
