"""The method registry behind `edlm bench`, and energies saying whether their likelihood is exact."""

import pytest

from edlm.api.methods import METHODS, get_method
from edlm.energy.base import TableEnergy, is_normalised
from edlm.errors import EdlmError
from edlm.eval.report import likelihood_report


def test_registry_names_the_runs_each_method_needs():
    assert list(METHODS) == ["mdlm", "edlm-ar", "edlm-coar", "edlm-nce", "ar", "confidence", "confidence+edlm-ar",
                             "confidence+edlm-nce"]
    assert METHODS["edlm-coar"].runs == ("mdlm", "ar")
    assert METHODS["confidence+edlm-ar"].runs == ("mdlm", "ar") and METHODS["confidence"].unmask == "confidence"
    assert METHODS["edlm-ar"].unmask == "random"
    assert METHODS["edlm-nce"].runs == ("mdlm", "nce")
    assert METHODS["ar"].runs == ("ar",) and METHODS["ar"].energy is None
    with pytest.raises(EdlmError, match="choose from mdlm, edlm-ar, edlm-coar, edlm-nce, ar"):
        get_method("edlm-xyz")


def test_settings_follow_the_registry():
    from edlm.bench import settings_for

    got = settings_for(["mdlm", "edlm-nce", "ar"], [4], [2], [(0.0, 1.0)])
    assert [(s.method, s.steps, s.k) for s in got] == [("mdlm", 4, 1), ("edlm-nce", 4, 2), ("ar", 0, 1)]
    sharp = settings_for(["mdlm", "ar"], [4], [2], [(0.0, 1.0)], token_temperatures=[0.8, 1.0], top_ps=[0.9])
    assert [(s.method, s.token_temperature, s.top_p) for s in sharp] == [
        ("mdlm", 0.8, 0.9), ("mdlm", 1.0, 0.9), ("ar", 0.8, 0.9), ("ar", 1.0, 0.9)]


class _Normalised:
    normalised = True

    def energy(self, x0, x_t, t, *, log_mu=None):
        return x0.sum(-1) * 0.0


def _res(**extra):
    sums = {"mdlm": 10.0, "edlm_estimate_lo": 9.0, "edlm_estimate_hi": 9.5, "logz_ess": 4.0}
    return {"sums": sums, "sq": {k: v * v for k, v in sums.items()}, "seqs": 2, "tokens": 8, **extra}


def test_the_report_notes_an_exact_energy_by_its_attribute_not_its_name():
    assert is_normalised(_Normalised()) and not is_normalised(TableEnergy(lambda x: x))
    assert not is_normalised(object())  # an energy that does not say is taken as unnormalised
    kw = dict(objective="mdlm", char=False, energy="nce:somewhere", logz_samples=8)
    exact = likelihood_report(_res(energy_normalised=True), **kw)["results"]["edlm_estimate"]
    plain = likelihood_report(_res(energy_normalised=False), **kw)["results"]["edlm_estimate"]
    assert "carry-over AR is normalised" in exact["note"] and "note" not in plain
