"""The sampling methods `edlm bench` (and the demo) compare, in one registry: which run generates, and which
energy, built from which run, corrects it.

    METHODS["edlm-ar"].runs     -> ("mdlm", "ar")
"""

from __future__ import annotations

from dataclasses import dataclass

from edlm.api.energies import KINDS as ENERGY_RUN  # energy kind -> the objective of the run it is built from
from edlm.errors import EdlmError


@dataclass(frozen=True)
class Method:
    name: str
    generator: str
    """the kind of run that generates: "mdlm" or "ar\""""
    energy: str | None = None
    """the energy kind correcting the MDLM ("ar", "coar", "nce"), None for plain sampling"""
    unmask: str = "random"
    """which positions a diffusion step unmasks: random (MDLM's) or confidence (sampling/confidence.py)"""

    @property
    def runs(self) -> tuple[str, ...]:
        """The kinds of run this method needs, the generator first."""
        return (self.generator,) + ((ENERGY_RUN[self.energy],) if self.energy else ())


METHODS = {m.name: m for m in (Method("mdlm", "mdlm"), Method("edlm-ar", "mdlm", "ar"),
                               Method("edlm-coar", "mdlm", "coar"), Method("edlm-nce", "mdlm", "nce"),
                               Method("ar", "ar"), Method("confidence", "mdlm", unmask="confidence"),
                               Method("confidence+edlm-ar", "mdlm", "ar", unmask="confidence"),
                               Method("confidence+edlm-nce", "mdlm", "nce", unmask="confidence"))}
DEFAULT_METHODS = ("mdlm", "edlm-ar", "edlm-nce", "ar")
"""what `edlm bench` runs without --methods: each of these whose runs are given"""


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise EdlmError(f"unknown method {name!r}: choose from {', '.join(METHODS)}")
    return METHODS[name]
