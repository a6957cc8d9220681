"""The energy's own cost inside a sampling job: wall time in its calls (device synchronised) and candidates scored.

    timed = TimedEnergy(energy, device)     # use `timed` wherever the energy was used
    timed.seconds, timed.calls, timed.candidates

A language-model energy can cost more than the denoiser it corrects; the summary reports its time beside the
sampler's so that a speed-up is counted with it. Everything else (normalised, ar, describe ...) is the energy's.
"""

from __future__ import annotations

import time

import torch


class TimedEnergy:
    def __init__(self, energy, device):
        self.inner, self.device = energy, torch.device(device)
        self.seconds, self.calls, self.candidates = 0.0, 0, 0

    def __getattr__(self, name):  # only for what this wrapper does not have itself
        return getattr(self.inner, name)

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def energy(self, x0, x_t, t, *, log_mu=None):
        self._sync()
        t0 = time.perf_counter()
        e = self.inner.energy(x0, x_t, t, log_mu=log_mu)
        self._sync()
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        self.candidates += int(x0.shape[0])
        return e
