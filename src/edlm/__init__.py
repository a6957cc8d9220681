"""edlm: Energy-Based Diffusion Language Models (EDLM), MDLM and autoregressive baselines."""

__version__ = "0.1.0"
