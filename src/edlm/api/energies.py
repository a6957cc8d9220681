"""Energies for an MDLM proposal, from what a user names: edlm.ar_energy(run), coar_energy, nce_energy,
lm_energy(NAME) (any causal LM an evaluator can be), fn_energy(fn) (any function of the candidates; a plain callable
passed as `energy=` is one) -- each an EnergyChoice -- or a spec string `ar:AR_RUN`, `coar:AR_RUN`, `nce:NCE_RUN`,
`lm:NAME` or `py:MODULE:FUNCTION`; make_energy builds one from a loaded network, build_energy from a spec (loading
its run or model; api/lm_energies.py builds the lm and function kinds). The energies live in edlm.energy."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edlm import validate
from edlm.errors import EdlmError
from edlm.runs.folder import RunMeta, as_meta
from edlm.runs.load import check_compatible, load_model

KINDS = {"ar": "ar", "coar": "ar", "nce": "nce"}
"""energy kind -> the objective of the run it is built from"""
OTHER_KINDS = ("lm", "py")
"""spec kinds built from something other than a run of one objective: any LM (lm:NAME), a function (py:...)"""
SPEC_HELP = "ar:AR_RUN, coar:AR_RUN, nce:NCE_RUN, lm:NAME (smollm2-135m, gemma3-270m, a HF folder ...) or py:MODULE:FN"


def parse_spec(spec: str) -> tuple[str, str]:
    kind, sep, path = spec.partition(":")
    if not sep or kind not in (*KINDS, *OTHER_KINDS) or not path:
        raise EdlmError(f"energy {spec!r} is not understood: use {SPEC_HELP}")
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


def build_energy(spec: str, proposal, proposal_meta: dict, device, batch_size: int = 0, options: dict | None = None):
    """The energy a spec string names, its run (or LM) loaded on `device`. Returns (energy, method_name).
    options: an lm: or py: energy's options (form, scale, level, batch_size / inputs, scale)."""
    from edlm.eval.evaluators import model_identity

    kind, path = parse_spec(spec)
    if kind == "lm":
        from edlm.api.lm_energies import build_lm

        return build_lm(path, options or {}, proposal, proposal_meta, device)
    if kind == "py":
        from edlm.api.lm_energies import build_fn, load_function

        fn = load_function(spec)
        return build_fn(fn, spec, {"inputs": getattr(fn, "edlm_inputs", "texts"), **(options or {})}, proposal_meta,
                        device)
    net, meta = load_model(path, device, expect=KINDS[kind])
    built = make_energy(kind, net, meta, proposal, proposal_meta, f"energy {spec}", batch_size)
    built[0].model_identity = model_identity(path) if kind != "nce" else None  # an AR run can be an evaluator
    return built


@dataclass
class EnergyChoice:
    """An energy to correct an MDLM with, made by ar_energy / coar_energy / nce_energy; built against the
    proposal (the MDLM run) when sampling or evaluating."""

    kind: str
    """"ar" (the AR model's full joint), "coar" (carry-over AR), "nce" (a trained energy network), "lm" (any causal
    LM by name) or "fn" (a function of the candidates)"""
    source: object
    """a loaded edlm.Run, or the folder of the run (loaded on the proposal's device when built); "lm": the LM's
    name; "fn": the function"""
    spec: str | None = None
    """the "kind:path" string it was given as, if any (reported as the summary's "energy")"""
    options: dict = field(default_factory=dict)
    """"lm": form, scale, level, batch_size; "fn": inputs, scale (api/lm_energies.py)"""

    def label(self) -> str:
        return self.spec or f"{self.kind}:{getattr(self.source, 'path', self.source)}"

    def build(self, proposal, batch_size: int = 0):
        """-> (energy, method name) for `proposal`, the loaded MDLM edlm.Run, on its device."""
        from edlm.eval.evaluators import model_identity
        from edlm.sampling.loop import model_denoiser

        if self.kind in ("lm", "fn"):
            from edlm.api.lm_energies import build_fn, build_lm

            if self.kind == "fn":
                return build_fn(self.source, self.label(), self.options, proposal.meta.raw, proposal.device)
            den = model_denoiser(proposal.model, proposal.meta.mask_id)
            return build_lm(self.source, self.options, den, proposal.meta.raw, proposal.device)
        src, need = self.source, KINDS[self.kind]
        if isinstance(src, (str, Path)):
            net, meta = load_model(src, proposal.device, expect=need,
                                   accept_data_change=getattr(proposal, "accept_data_change", False))
        elif src.meta.objective != need:
            raise EdlmError(f"a {self.kind} energy needs a {need!r} run; {src.path} is a {src.meta.objective!r} run")
        else:
            net, meta = src.model, src.meta.raw
        den = model_denoiser(proposal.model, proposal.meta.mask_id)
        built = make_energy(self.kind, net, meta, den, proposal.meta.raw, f"energy {self.label()}", batch_size)
        if self.kind != "nce":  # an AR run can also be an evaluator: the circularity guard compares them
            built[0].model_identity = model_identity(src if isinstance(src, (str, Path)) else src.path)
        return built


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


def lm_energy(name: str, form: str = "residual", scale: float = 1.0, level: str = "auto",
              batch_size: int = 64) -> EnergyChoice:
    """An energy from any causal language model: NAME as `edlm eval samples --evaluator` takes it (smollm2-135m,
    gemma3-270m, a Hugging Face folder or hub name, gguf:FILE, an edlm AR run folder).

    form "residual" (the paper's): E = scale * (-log p_LM(x0) + log mu(x0|x_t)), target mu^(1-scale) p_LM^scale
    (scale 1: p_LM itself). form "product": E = -scale * log p_LM(x0), target mu * p_LM^scale (a reranker).
    level: "token" (score the MDLM's ids directly: the LM must share its tokenizer), "text" (decode, re-tokenise
    as the evaluators do) or "auto" (token when the tokenizers agree). batch_size: candidates per LM forward."""
    from edlm.energy.lm import FORMS, check_scale
    from edlm.eval.lm_scorer import LEVELS

    if form not in FORMS:
        raise EdlmError(f"energy form {form!r}: use residual (target p_LM, the paper's) or product (target "
                        "mu * p_LM^scale, a reranker)")
    if level not in LEVELS:
        raise EdlmError(f"LM energy level {level!r}: use one of {', '.join(LEVELS)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise EdlmError(f"batch_size must be an integer >= 1, not {batch_size!r}")
    check_scale(scale)
    name = str(name).strip()
    if not name:
        raise EdlmError("lm_energy needs the LM's name: smollm2-135m, gemma3-270m, a Hugging Face folder ...")
    return EnergyChoice("lm", name, spec=f"lm:{name}",
                        options={"form": form, "scale": float(scale), "level": level, "batch_size": batch_size})


def fn_energy(fn, inputs: str = "texts", scale: float = 1.0, name: str | None = None) -> EnergyChoice:
    """Any function as the energy: fn(candidates) -> one log-weight r per candidate, so every step in the window
    samples mu(x0|x_t) * exp(scale * r(x0)). inputs "texts": fn gets a list of N decoded texts; "ids": an (N, L)
    int64 tensor of token ids. r = -inf vetoes a candidate (when a step's k candidates are all vetoed, the step
    takes a plain proposal draw and the summary counts it as all_vetoed); NaN or +inf is an error."""
    from edlm.energy.lm import INPUTS, check_scale

    if not callable(fn):
        raise EdlmError(f"fn_energy needs a callable, not {fn!r}")
    if inputs not in INPUTS:
        raise EdlmError(f"energy function inputs {inputs!r}: use texts or ids")
    check_scale(scale)
    label = name or f"fn:{getattr(fn, '__qualname__', type(fn).__name__)}"
    return EnergyChoice("fn", fn, spec=label, options={"inputs": inputs, "scale": float(scale)})


def energy_with(energy, energy_form: str | None = None, energy_scale: float | None = None):
    """`energy` as as_energy takes it, with the form and scale of a string "lm:NAME" (form residual or product,
    scale lambda) or "py:MODULE:FUNCTION" (scale) applied: Run.sample's energy_form / energy_scale, the
    command line's --energy-form / --energy-scale. Neither given: `energy` unchanged."""
    if energy_form is None and energy_scale is None:
        return energy
    kind, _, name = energy.partition(":") if isinstance(energy, str) else ("", "", "")
    if energy_form is not None and kind != "lm":
        raise EdlmError("`energy_form` chooses the form of an lm: energy (`energy=lm:NAME`); for an energy object "
                        "give edlm.lm_energy(name, form=...)" +
                        ("; a py: function is a log-weight r, its target is mu * exp(r) (product form)"
                         if kind == "py" else ""))
    if energy_scale is not None and kind not in ("lm", "py"):
        raise EdlmError("`energy_scale` applies to `energy=lm:NAME` or `energy=py:MODULE:FUNCTION`; for an "
                        "energy object give edlm.lm_energy(name, scale=...) or edlm.fn_energy(fn, scale=...)")
    if energy_scale is not None:
        validate.finite_in("`energy_scale`", energy_scale, lo=0, lo_open=True)
    scale = 1.0 if energy_scale is None else energy_scale
    if kind == "lm":
        return lm_energy(name, form=energy_form or "residual", scale=scale)
    choice = as_energy(energy)
    return fn_energy(choice.source, inputs=choice.options["inputs"], scale=scale, name=energy)


def as_energy(energy) -> EnergyChoice | None:
    """An EnergyChoice, a "kind:path" string (kind: ar, coar, nce, lm, py), a callable (fn_energy) or None."""
    if energy is None or isinstance(energy, EnergyChoice):
        return energy
    if isinstance(energy, str):
        kind, sep, path = energy.partition(":")
        if sep and kind in KINDS and path:
            return EnergyChoice(kind, path, spec=energy)
        if sep and kind == "lm" and path:
            return lm_energy(path)
        if sep and kind == "py" and path:
            from edlm.api.lm_energies import load_function

            fn = load_function(energy)
            return fn_energy(fn, inputs=getattr(fn, "edlm_inputs", "texts"), name=energy)
    elif callable(energy):
        return fn_energy(energy)
    raise EdlmError(f"energy {energy!r} is not understood: give edlm.ar_energy(run), edlm.coar_energy(run), "
                    "edlm.nce_energy(run), edlm.lm_energy(name), a function of the candidates' texts, or a string "
                    f"{SPEC_HELP}")
