"""The GuacaMol adapter (:mod:`latentebm.guacamol`) on the shipped QM9 SELFIES model."""

from __future__ import annotations

import abc
import importlib
import sys
import types

import pytest

import latentebm
import latentebm.guacamol as adapter_module
from latentebm.guacamol import GuacaMolGenerator
from latentebm.pretrained import TaskMismatchError

pytest.importorskip("selfies", reason="the QM9 SELFIES model needs selfies (extra 'mol')")


def test_generate_returns_that_many_smiles_from_one_seeded_stream() -> None:
    chem = pytest.importorskip("rdkit.Chem", reason="rdkit checks the SMILES (extra 'mol')")
    model = latentebm.load("pretrained:qm9-selfies")
    first = GuacaMolGenerator(model, seed=0, batch_size=7)
    a, b = first.generate(10), first.generate(5)
    assert len(a) == 10 and len(b) == 5 and first.generate(0) == []
    again = GuacaMolGenerator(model, seed=0, batch_size=7)
    assert again.generate(10) == a and again.generate(5) == b  # the same calls, the same stream
    assert GuacaMolGenerator(model, seed=1, batch_size=7).generate(10) != a
    valid = [s for s in a + b if s and chem.MolFromSmiles(s) is not None]
    assert len(valid) >= 12  # SELFIES decode to valid SMILES (an empty sample is possible)
    assert len(set(a + b)) > 3  # sampled, not greedy: not one molecule over and over


def test_a_text_model_is_refused() -> None:
    with pytest.raises(TaskMismatchError, match="GuacaMol needs a molecule model"):
        GuacaMolGenerator("pretrained:quickstart")


def test_registered_with_guacamols_interface(monkeypatch: pytest.MonkeyPatch) -> None:
    """``isinstance(adapter, DistributionMatchingGenerator)`` where guacamol is installed (a
    stand-in module here: the interface is one abstract method)."""

    class DistributionMatchingGenerator(metaclass=abc.ABCMeta):
        @abc.abstractmethod
        def generate(self, number_samples: int) -> list[str]: ...

    package = types.ModuleType("guacamol")
    module = types.ModuleType("guacamol.distribution_matching_generator")
    module.DistributionMatchingGenerator = DistributionMatchingGenerator  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "guacamol", package)
    monkeypatch.setitem(sys.modules, "guacamol.distribution_matching_generator", module)
    reloaded = importlib.reload(adapter_module)
    try:
        assert issubclass(reloaded.GuacaMolGenerator, DistributionMatchingGenerator)
    finally:
        monkeypatch.undo()
        importlib.reload(adapter_module)
