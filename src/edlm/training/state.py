"""A training's state as full (unsharded) CPU tensors, and back: what a checkpoint holds, for a plain, DDP or
FSDP2 model alike, so a checkpoint resumes on any number of devices and with or without sharding."""

from __future__ import annotations


def full_cpu_state(module_or_sd) -> dict:
    """Full (unsharded) CPU tensors. FSDP2 holds DTensors: gathering them is a collective, so EVERY rank
    must call this, even though only rank 0 writes."""
    sd = module_or_sd.state_dict() if hasattr(module_or_sd, "state_dict") else module_or_sd
    return {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().to("cpu").contiguous()
            for k, v in sd.items()}


def full_optimizer_state(model, optimizer) -> dict:
    """The optimizer state keyed by parameter NAME with full tensors (collective under FSDP2), so a
    checkpoint resumes on any number of devices and with or without sharding."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True))


def load_optimizer_state(model, optimizer, osd: dict) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, optim_state_dict=osd, options=StateDictOptions(full_state_dict=True))


def load_full_model_state(model, sd: dict) -> None:
    """Load full tensors into a plain, DDP or FSDP2 model (each rank keeps its own shard)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, sd, options=StateDictOptions(full_state_dict=True))
