"""Build an energy from a command-line spec: `ar:AR_RUN`, `coar:AR_RUN` or `nce:NCE_RUN`."""

from __future__ import annotations

from edlm.errors import EdlmError
from edlm.runs import check_compatible, load_model

KINDS = ("ar", "coar", "nce")


def parse_spec(spec: str) -> tuple[str, str]:
    kind, sep, path = spec.partition(":")
    if not sep or kind not in KINDS or not path:
        raise EdlmError(f"--energy {spec!r} is not understood: use ar:AR_RUN, coar:AR_RUN or nce:NCE_RUN")
    return kind, path


def build_energy(spec: str, proposal, proposal_meta: dict, device, batch_size: int = 0):
    """proposal: denoise(x_t, t) callable of the MDLM being corrected. Returns (energy, method_name)."""
    kind, path = parse_spec(spec)
    if kind in ("ar", "coar"):
        from edlm.energy.ar import AREnergy

        ar, meta = load_model(path, device, expect="ar")
        check_compatible(proposal_meta, meta, f"--energy {spec}")
        return AREnergy(ar, proposal, proposal_meta["mask_id"], carry_over=kind == "coar",
                        batch_size=batch_size), f"edlm-{kind}"
    from edlm.energy.nce import NCEEnergy

    net, meta = load_model(path, device, expect="nce")
    check_compatible(proposal_meta, meta, f"--energy {spec}")
    return NCEEnergy(net, batch_size), "edlm-nce"
