"""``model.prior.kind: none``: the decoder alone (the CharRNN baseline of issue 4)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import latentebm
from latentebm.evaluate import evaluate
from tests.conftest import train_tiny_run


@pytest.fixture(scope="module")
def no_latent_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("no_latent")
    return train_tiny_run(
        root,
        f"trainer.run_dir={root / 'run'}",
        "model.prior.kind=none",
        "model.generator.cell=gru",
        trainer={"max_steps": 4, "samples_at_end": 0},
    )


def test_the_model_has_no_latent_and_no_chains(no_latent_run: Path) -> None:
    pretrained = latentebm.load(no_latent_run)
    model = pretrained.model
    assert model.z_dim == 0 and not model.prior.has_energy
    assert model.prior_chain.n_steps == 0 and model.posterior_chain.n_steps == 0
    assert isinstance(model.generator.lstm, torch.nn.GRU)
    assert not any(name.startswith("prior.") for name, _ in model.named_parameters())
    assert len(pretrained.generate(3, decode="sample", seed=0)) == 3


def test_the_learning_loss_is_the_plain_likelihood(no_latent_run: Path) -> None:
    pretrained = latentebm.load(no_latent_run)
    model, task = pretrained.model, pretrained.task
    x = task.encode(task.sentences("valid")[:8])
    terms = model.compute_losses(x, generator=torch.Generator().manual_seed(0))
    plain = model.generator.log_likelihood(x, torch.zeros(8, 0))
    torch.testing.assert_close(terms.generator_loss, -plain.mean())
    assert terms.prior_loss is None


def test_nll_is_exact(no_latent_run: Path) -> None:
    pretrained = latentebm.load(no_latent_run)
    model, task = pretrained.model, pretrained.task
    result = evaluate(no_latent_run, "valid", "nll", batch_size=8, progress=False, write=False)
    entry = result["metrics"]["marginal_nll"]
    x = task.encode(task.sentences("valid"))
    with torch.no_grad():
        exact = -model.generator.log_likelihood(x, torch.zeros(x.shape[0], 0)).sum()
    assert entry["total_nll"] == pytest.approx(float(exact), rel=1e-5)
    assert entry["std_error"] == 0.0 and entry["log_z"]["value"] == 0.0
    assert entry["settings"] == {"estimator": "exact"}  # no AIS statistics for an exact sum


def test_estimate_log_likelihood_is_exact_per_example(no_latent_run: Path) -> None:
    from latentebm.metrics.nll import estimate_log_likelihood

    pretrained = latentebm.load(no_latent_run)
    model, task = pretrained.model, pretrained.task
    x = task.encode(task.sentences("valid")[:5])
    estimate = estimate_log_likelihood(model, x, n_importance=4)
    with torch.no_grad():
        exact = model.generator.log_likelihood(x, torch.zeros(5, 0))
    torch.testing.assert_close(estimate, exact.double(), rtol=1e-6, atol=1e-6)
