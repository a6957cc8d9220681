"""The Python API: the application layer that opens run folders, builds energies from what users name, and
wires samplers, training and evaluation. `import edlm` exposes the names below (edlm.load, edlm.train ...).

    run = edlm.load("runs/mdlm")                                      # api/run.py
    run.sample(num=8, steps=16, energy=edlm.ar_energy("runs/ar"), k=4)   # energies: api/energies.py
    edlm.train(edlm.presets.tiny(), out="runs/x", objective="mdlm")   # api/trainer.py
    edlm.prepare("textfile:notes", source="notes.txt")                # data/corpora.py
    edlm.compare(edlm.score(a, "smollm2-135m"), edlm.score(b, "smollm2-135m"))   # api/score.py
"""

from edlm.api.energies import EnergyChoice, ar_energy, as_energy, coar_energy, nce_energy
from edlm.api.run import Run, load, plot_run
from edlm.api.score import compare, score
from edlm.api.trainer import train
from edlm.config.sampling import KPolicy
from edlm.data.corpora import info as corpus_info
from edlm.data.corpora import prepare
from edlm.runs.folder import RunMeta
from edlm.sampling.generate import Samples

__all__ = ["EnergyChoice", "KPolicy", "Run", "RunMeta", "Samples", "ar_energy", "as_energy", "coar_energy",
           "compare", "corpus_info", "load", "nce_energy", "plot_run", "prepare", "score", "train"]
