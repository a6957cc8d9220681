"""edlm: Energy-Based Diffusion Language Models (EDLM), MDLM and autoregressive baselines.

    import edlm
    edlm.prepare("textfile:notes", source="notes.txt")   # your own text, kept exactly (tokenizer="chars")
    edlm.train(edlm.presets.tiny(), out="runs/x", objective="mdlm", data="textfile:notes")
    run = edlm.load("runs/mdlm")                  # edlm.Run: model, meta (RunMeta), schedule, tokenizer
    a = run.sample(num=8, steps=16, energy=edlm.ar_energy("runs/ar"), k=4)
    run.nelbo(split="test")                       # the report `edlm eval nelbo` prints
    edlm.compare(edlm.score(a, "edlm:runs/judge"), edlm.score(b, "edlm:runs/judge"))   # with an interval
    edlm.bench(mdlm="runs/mdlm", ar="runs/ar", steps=[4, 8], k=[4], out="bench")       # sweep + plots

The names below are imported on first use (from edlm.api): `import edlm` stays free of torch, so `edlm.cli` can
set its OpenMP environment before torch loads.
"""

__version__ = "0.1.0"

_API = ("load", "train", "plot_run", "ar_energy", "coar_energy", "nce_energy", "Run", "RunMeta", "Samples",
        "EnergyChoice", "KPolicy", "prepare", "corpus_info", "score", "compare")
_MODULES = ("presets", "bench")
"""edlm.bench is a callable module: edlm.bench(...) runs the sweep `edlm bench` runs"""
__all__ = ["__version__", *_API, *_MODULES]


def __getattr__(name):
    import importlib

    if name in _API:
        return getattr(importlib.import_module("edlm.api"), name)
    if name in _MODULES:
        return importlib.import_module(f"edlm.{name}")
    raise AttributeError(f"module 'edlm' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
