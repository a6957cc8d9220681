"""Energies for an MDLM proposal, from what a user names: edlm.ar_energy(run), coar_energy, nce_energy (an
EnergyChoice), or a spec string `ar:AR_RUN`, `coar:AR_RUN` or `nce:NCE_RUN`; make_energy builds one from a
loaded network, build_energy from a spec (loading its run). The energies themselves live in edlm.energy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edlm.errors import EdlmError
from edlm.runs.folder import RunMeta, as_meta
from edlm.runs.load import check_compatible, load_model

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


@dataclass
class EnergyChoice:
    """An energy to correct an MDLM with, made by ar_energy / coar_energy / nce_energy; built against the
    proposal (the MDLM run) when sampling or evaluating."""

    kind: str
    """"ar" (the AR model's full joint), "coar" (carry-over AR) or "nce" (a trained energy network)"""
    source: object
    """a loaded edlm.Run, or the folder of the run (loaded on the proposal's device when built)"""
    spec: str | None = None
    """the "kind:path" string it was given as, if any (reported as the summary's "energy")"""

    def label(self) -> str:
        return self.spec or f"{self.kind}:{getattr(self.source, 'path', self.source)}"

    def build(self, proposal, batch_size: int = 0):
        """-> (energy, method name) for `proposal`, the loaded MDLM edlm.Run, on its device."""
        from edlm.sampling.loop import model_denoiser

        src, need = self.source, KINDS[self.kind]
        if isinstance(src, (str, Path)):
            net, meta = load_model(src, proposal.device, expect=need,
                                   accept_data_change=getattr(proposal, "accept_data_change", False))
        elif src.meta.objective != need:
            raise EdlmError(f"a {self.kind} energy needs a {need!r} run; {src.path} is a {src.meta.objective!r} run")
        else:
            net, meta = src.model, src.meta.raw
        den = model_denoiser(proposal.model, proposal.meta.mask_id)
        return make_energy(self.kind, net, meta, den, proposal.meta.raw, f"energy {self.label()}", batch_size)


def ar_energy(run) -> EnergyChoice:
    """EDLM-AR: the energy is the AR model's full joint log-probability (no training). `run`: a loaded AR
    Run or its folder (then loaded on the proposal's device)."""
    return EnergyChoice("ar", run)


def coar_energy(run) -> EnergyChoice:
    """EDLM-coAR: the AR joint over the tokens being generated, carrying over the ones already fixed."""
    return EnergyChoice("coar", run)


def nce_energy(run) -> EnergyChoice:
    """EDLM-NCE: a trained energy network (a run trained with objective "nce")."""
    return EnergyChoice("nce", run)


def as_energy(energy) -> EnergyChoice | None:
    """An EnergyChoice, a "kind:path" string (kind: ar, coar, nce) or None."""
    if energy is None or isinstance(energy, EnergyChoice):
        return energy
    if isinstance(energy, str):
        kind, sep, path = energy.partition(":")
        if sep and kind in KINDS and path:
            return EnergyChoice(kind, path, spec=energy)
    raise EdlmError(f"energy {energy!r} is not understood: give edlm.ar_energy(run), edlm.coar_energy(run), "
                    "edlm.nce_energy(run) or a string 'ar:AR_RUN', 'coar:AR_RUN' or 'nce:NCE_RUN'")
