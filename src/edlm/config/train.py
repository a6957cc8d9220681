"""The typed training configuration. Every field becomes a `edlm train --FIELD` option (help from metadata)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from edlm.config.kernels import KernelsConfig
from edlm.diffusion.schedules import T_EPS
from edlm.errors import EdlmError
from edlm.validate import at_least, finite_in, seed


def _f(default, help_: str, choices: tuple | None = None):
    return field(default=default, metadata={"help": help_, "choices": choices})


@dataclass
class TrainConfig:
    objective: str = _f("mdlm", "what to train: mdlm (masked diffusion), ar (autoregressive), nce (energy)",
                        ("mdlm", "ar", "nce"))
    data: str = _f("synthetic", "corpus name (see `edlm data --help`)")
    seq_len: int = _f(64, "tokens per training sequence")
    batch_size: int = _f(64, "sequences per device per micro-step")
    grad_accum: int = _f(1, "micro-steps per optimizer step")
    lr: float = _f(2e-3, "peak learning rate (AdamW)")
    min_lr_ratio: float = _f(0.1, "cosine schedule floor, as a fraction of lr")
    lr_schedule: str = _f("constant", "constant or cosine, after linear warm-up", ("constant", "cosine"))
    warmup_steps: int = _f(50, "linear warm-up steps")
    max_steps: int = _f(500, "optimizer steps to train for")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    betas: tuple[float, float] = _f((0.9, 0.98), "AdamW betas")
    grad_clip: float = _f(1.0, "clip the global gradient norm (0 = off)")
    diverge_factor: float = _f(10.0, "the run is diverging, and stops unsaved, when the training loss after "
                               "warm-up or the loss of weights about to be saved (one validation batch) exceeds "
                               "this multiple of the first step's loss (0 = off)")
    ema: float = _f(0.999, "EMA decay of the weights used for eval and sampling (0 = off)")
    eval_every: int = _f(250, "validate every N steps (0 = only at the end)")
    eval_batches: int = _f(16, "validation batches per evaluation")
    save_every: int = _f(250, "checkpoint every N steps (always at the end)")
    keep_checkpoints: int = _f(2, "how many checkpoint folders to keep")
    log_every: int = _f(10, "write a metrics row every N steps")
    seed: int = _f(0, "seed for data order, noise and initialisation")
    schedule: str = _f("loglinear", "noise schedule: loglinear, cosine, linear", ("loglinear", "cosine", "linear"))
    loss_weight: str = _f("nelbo", "MDLM training loss: nelbo (weight alpha'/(1-alpha) = 1/t per masked token) or "
                          "flat (every masked token's cross-entropy weighs the same; same minimiser, far lower "
                          "gradient variance: docs/mdlm_recipe.md). Validation always reports the NELBO",
                          ("nelbo", "flat"))
    antithetic: bool = _f(True, "stratified (antithetic) t across the global batch")
    t_eps: float = _f(T_EPS, "smallest t drawn in training")
    precision: str = _f("auto", "auto (bf16 autocast on GPU, fp32 on CPU), bf16 or fp32", ("auto", "bf16", "fp32"))
    compile: bool = _f(False, "torch.compile each block (GPU: ~1.8x eager tokens/s for `small`; first steps compile)")
    device: str = _f("auto", "auto, cpu, cuda, cuda:N")
    diffusion: str = _f("", "NCE only: the trained MDLM run used as frozen proposal and initialisation")
    nce_negatives: int = _f(1, "NCE only: negatives drawn from the MDLM per positive")
    parallel: str = _f("ddp", "under torchrun: ddp or fsdp (FSDP2 fully_shard; with --nproc_per_node 1 too)",
                       ("ddp", "fsdp"))
    kernels: str = _f("", "optional fused GPU kernels, comma-separated: liger (= norm,rope,lce: Liger Kernel's "
                      "LayerNorm, rotary and fused linear + cross-entropy), float8 (the blocks' Linear layers, "
                      "torchao); CUDA only (one warning and the plain path on a CPU); docs/performance.md")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        return cls(**d)


# Options that may change when a run is resumed (`edlm train --resume --lr ...`): how it is optimised from
# here on, how often it logs/saves, and where it runs. Everything else (data, batch, model, seed, objective)
# defines the run and must stay as saved.
RESUME_OVERRIDABLE = ("lr", "min_lr_ratio", "lr_schedule", "warmup_steps", "max_steps", "weight_decay", "betas",
                      "grad_clip", "diverge_factor", "eval_every", "eval_batches", "save_every",
                      "keep_checkpoints", "log_every", "precision", "compile", "device", "parallel", "kernels")


def check_config(cfg: TrainConfig, model_cfg=None) -> None:
    """Every numeric option in range, or one EdlmError naming it (`option` first; the CLI says --option)."""
    for name in ("seq_len", "batch_size", "grad_accum", "max_steps", "eval_batches", "save_every",
                 "keep_checkpoints", "log_every", "nce_negatives"):
        at_least(f"`{name}`", getattr(cfg, name), 1)
    for name in ("warmup_steps", "eval_every"):
        at_least(f"`{name}`", getattr(cfg, name), 0)
    seed("`seed`", cfg.seed)
    finite_in("`lr`", cfg.lr, lo=0, lo_open=True)
    finite_in("`min_lr_ratio`", cfg.min_lr_ratio, 0, 1)
    finite_in("`weight_decay`", cfg.weight_decay, lo=0)
    for b in cfg.betas:
        finite_in("`betas`", b, 0, 1, hi_open=True)
    finite_in("`grad_clip`", cfg.grad_clip, lo=0)
    finite_in("`ema`", cfg.ema, 0, 1, hi_open=True)
    finite_in("`t_eps`", cfg.t_eps, 0, 1, lo_open=True, hi_open=True)
    k = KernelsConfig.parse(cfg.kernels)  # unknown names: EdlmError
    if k.gelu or k.weights != "model":
        raise EdlmError("`kernels`: gelu and weights= are for sampling; training takes liger, norm, rope, lce, float8")
    if cfg.diverge_factor != 0:
        finite_in("`diverge_factor` (or 0 = off)", cfg.diverge_factor, lo=1, lo_open=True)
    if model_cfg is not None:
        for name in ("n_layers", "d_model", "n_heads", "cond_dim", "mlp_ratio", "max_len"):
            at_least(f"`{name}`", getattr(model_cfg, name), 1)
        finite_in("`dropout`", model_cfg.dropout, 0, 1, hi_open=True)
        finite_in("`attn_dropout`", model_cfg.attn_dropout, 0, 1, hi_open=True)
        if model_cfg.d_model % model_cfg.n_heads:
            raise EdlmError(f"`d_model` {model_cfg.d_model} must be a multiple of `n_heads` {model_cfg.n_heads}")
