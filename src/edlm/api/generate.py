"""A sampling job named by run folders and an energy spec (what `edlm sample`, bench, demo and the sweeps run):
the run in `req.ckpt` is loaded unless `models` gives it, the energy `req.energy` ("ar:AR_RUN", "coar:AR_RUN",
"nce:NCE_RUN") is built for it, and edlm.sampling.generate samples.

    rows, summary = generate(GenerateRequest(ckpt="runs/mdlm", num=64, steps=16, energy="ar:runs/ar", k=4), device)
"""

from __future__ import annotations

from edlm.api.energies import build_energy
from edlm.config.sampling import GenerateRequest
from edlm.runs.load import load_model
from edlm.sampling import generate as job
from edlm.sampling.generate import Samples  # noqa: F401 (re-exported)
from edlm.sampling.loop import model_denoiser


def generate(req: GenerateRequest, device, *, models=None, energies: dict | None = None, quiet: bool = False,
             on_batch=None, callback=None, trace=None):
    """Returns (rows, summary), as edlm.sampling.generate.generate. `models` = (model, meta) to reuse an already
    loaded run; `energies` = a dict that caches built energies by spec across calls (a sweep then loads each
    energy run once); the other arguments are passed on."""
    model, meta, energy = _prepare(req, device, models, energies)
    return job.generate(req, device, model, meta, energy=energy, quiet=quiet, on_batch=on_batch, callback=callback,
                        trace=trace)


def check(req: GenerateRequest, device, *, models=None, energies: dict | None = None) -> None:
    """Everything generate() checks before its first batch, its memory bound included, without sampling: a
    sweep checks all its settings before it runs the first. Built energies go into `energies` for later."""
    model, meta, energy = _prepare(req, device, models, energies)
    job.check_memory(req, device, model, meta, energy)


def _prepare(req, device, models, energies):
    """-> (model, meta, (energy, method) or None): the run loaded, the request checked, the energy built."""
    model, meta = models or load_model(req.ckpt, device)
    job.check_request(req, model, meta)  # before an energy run is loaded
    energy = None
    if req.energy:
        cache = energies if energies is not None else {}
        if req.energy not in cache:
            cache[req.energy] = build_energy(req.energy, model_denoiser(model, meta["mask_id"]), meta, device)
        energy = cache[req.energy]
    return model, meta, energy
