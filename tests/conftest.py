"""Shared fixtures: an isolated data cache per test (EDLM_DATA -> tmp dir), progress bars off."""

import pytest


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    """A fresh, empty $EDLM_DATA for one test."""
    root = tmp_path / "edlm-data"
    monkeypatch.setenv("EDLM_DATA", str(root))
    monkeypatch.setenv("EDLM_NO_PROGRESS", "1")
    return root


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory):
    """A prepared `synthetic` corpus shared by the model tests (session-wide $EDLM_DATA)."""
    import os

    from edlm.data import corpora

    root = tmp_path_factory.mktemp("edlm-data-shared")
    old = os.environ.get("EDLM_DATA")
    os.environ["EDLM_DATA"] = str(root)
    os.environ["EDLM_NO_PROGRESS"] = "1"
    corpora.prepare("synthetic")
    yield root
    if old is None:
        os.environ.pop("EDLM_DATA", None)
    else:
        os.environ["EDLM_DATA"] = old


@pytest.fixture(scope="session")
def micro_runs(synthetic_data, tmp_path_factory):
    """ROOT/mdlm and ROOT/ar trained with micro_configs on `synthetic`, shared by the sampling-feature tests
    (semi-AR, trace); tests read them and write their outputs elsewhere."""
    import edlm

    root = tmp_path_factory.mktemp("micro-runs")
    for obj in ("mdlm", "ar"):
        edlm.train(micro_configs(obj), out=root / obj)
    return root


def micro_configs(objective="mdlm", **over):
    """A model + training config small enough for a test to train in seconds on 2 CPU cores."""
    from dataclasses import replace

    from edlm.config.model import TransformerConfig
    from edlm.config.train import TrainConfig

    m = TransformerConfig(n_layers=2, d_model=32, n_heads=2, cond_dim=16, max_len=16)
    t = TrainConfig(objective=objective, data="synthetic", seq_len=16, batch_size=8, lr=3e-3, warmup_steps=2,
                    max_steps=6, ema=0.9, eval_every=0, save_every=3, eval_batches=2, log_every=1)
    return m, replace(t, **over)
