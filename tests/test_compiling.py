"""``model.compile``: the compiled chains are the eager chains (same noise, same states)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch._dynamo

from latentebm.build import build_model, build_task
from latentebm.compiling import compile_log_density
from latentebm.config import RecipeError, load_recipe


def test_compiled_chains_equal_eager_chains(tiny_recipe) -> None:
    recipe = load_recipe(tiny_recipe(), [])
    task = build_task(recipe)
    model = build_model(recipe, task)
    x = task.batches("train", 8, seed=0, epoch=0)[0]

    def chains() -> tuple:
        posterior = model.sample_posterior(x, generator=torch.Generator().manual_seed(0))
        prior = model.sample_prior(8, generator=torch.Generator().manual_seed(1))
        return posterior, prior

    eager = chains()
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    model.compile_mode = "default"
    compiled = chains()
    assert set(model._compiled) == {"posterior", "prior"}
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 2  # really compiled
    assert not torch._dynamo.utils.counters["graph_break"]  # the LSTM is traced, not skipped
    for fast, plain in zip(compiled, eager, strict=True):
        assert fast.z.shape == plain.z.shape
        torch.testing.assert_close(fast.z, plain.z, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fast.log_density, plain.log_density, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(fast.grad_norm, plain.grad_norm, rtol=1e-5, atol=1e-5)
    model.compile_mode = None  # back to eager: the cached compiled functions are not used
    again = model.sample_posterior(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.z, eager[0].z)


def test_compile_mode_is_checked(tiny_recipe, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="compile mode must be one of"):
        compile_log_density(torch.sin, "fastest")  # type: ignore[arg-type]
    with pytest.raises(RecipeError, match="model.compile"):
        load_recipe(tiny_recipe(), ["model.compile=fastest"])
