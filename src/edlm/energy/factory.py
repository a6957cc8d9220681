"""Build an energy for an MDLM proposal: from a loaded network (make_energy, what edlm.api uses) or from a
spec string `ar:AR_RUN`, `coar:AR_RUN` or `nce:NCE_RUN` (build_energy, which loads the run)."""

from __future__ import annotations

from edlm.errors import EdlmError
from edlm.run_folder import RunMeta, as_meta
from edlm.runs import check_compatible, load_model

KINDS = {"ar": "ar", "coar": "ar", "nce": "nce"}
"""energy kind -> the objective of the run it is built from"""


def parse_spec(spec: str) -> tuple[str, str]:
    kind, sep, path = spec.partition(":")
    if not sep or kind not in KINDS or not path:
        raise EdlmError(f"energy {spec!r} is not understood: use ar:AR_RUN, coar:AR_RUN or nce:NCE_RUN")
    return kind, path


def make_energy(kind: str, net, net_meta: RunMeta | dict, proposal, proposal_meta: RunMeta | dict, what: str,
                batch_size: int = 0):
    """net: the loaded AR model (kind ar/coar) or energy network (nce); proposal: denoise(x_t, t) of the MDLM
    being corrected. Returns (energy, method_name)."""
    check_compatible(proposal_meta, net_meta, what)
    if kind in ("ar", "coar"):
        from edlm.energy.ar import AREnergy

        return AREnergy(net, proposal, as_meta(proposal_meta).mask_id, carry_over=kind == "coar",
                        batch_size=batch_size), f"edlm-{kind}"
    from edlm.energy.nce import NCEEnergy

    return NCEEnergy(net, batch_size), "edlm-nce"


def build_energy(spec: str, proposal, proposal_meta: dict, device, batch_size: int = 0):
    """The energy a spec string names, its run loaded on `device`. Returns (energy, method_name)."""
    kind, path = parse_spec(spec)
    net, meta = load_model(path, device, expect=KINDS[kind])
    return make_energy(kind, net, meta, proposal, proposal_meta, f"energy {spec}", batch_size)
