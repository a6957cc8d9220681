"""Shared fixtures: an isolated data cache per test (EDLM_DATA -> tmp dir), progress bars off."""

import pytest


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    """A fresh, empty $EDLM_DATA for one test."""
    root = tmp_path / "edlm-data"
    monkeypatch.setenv("EDLM_DATA", str(root))
    monkeypatch.setenv("EDLM_NO_PROGRESS", "1")
    return root
