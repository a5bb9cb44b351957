"""``encode``, ``reconstruct`` and ``log_prob`` of a loaded text model (:class:`Pretrained`)."""

from __future__ import annotations

import pytest
import torch

import latentebm
from latentebm.metrics.quadrature import quadrature_log_marginal
from latentebm.pretrained import TaskMismatchError
from tests.conftest import tiny_sentences, train_tiny_run


@pytest.fixture(scope="module")
def model_2d(tmp_path_factory: pytest.TempPathFactory) -> latentebm.Pretrained:
    """A tiny text model with a 2-D latent (so quadrature gives its exact log p(x))."""
    root = tmp_path_factory.mktemp("api")
    overrides = ["trainer.max_steps=3", "model.z_dim=2", f"trainer.run_dir={root / 'run'}"]
    run = train_tiny_run(root, *overrides)
    return latentebm.load(run)


def test_log_prob_is_the_marginal_likelihood(model_2d: latentebm.Pretrained) -> None:
    texts = tiny_sentences()[:6]
    log_p = model_2d.log_prob(texts, batch_size=4)  # two batches, one log Z
    assert log_p.shape == (6,) and log_p.dtype == torch.float64
    exact = quadrature_log_marginal(model_2d.model, model_2d.task.encode(texts)).log_marginal
    error = log_p - exact.double().cpu()  # AIS: a stochastic estimate, a few hundredths off
    assert float(error.abs().max()) < 0.2 and abs(float(error.mean())) < 0.05, error
    again = model_2d.log_prob(texts, batch_size=4)  # seeded: the same calls, the same values
    torch.testing.assert_close(again, log_p, atol=1e-9, rtol=0)
    assert model_2d.log_prob([]).shape == (0,)


def test_encode_and_reconstruct(model_2d: latentebm.Pretrained) -> None:
    texts = tiny_sentences()[:5]
    z = model_2d.encode(texts, seed=1, batch_size=2)
    assert z.shape == (5, 2) and z.device == torch.device("cpu")
    torch.testing.assert_close(model_2d.encode(texts, seed=1, batch_size=2), z)
    assert not torch.equal(model_2d.encode(texts, seed=2, batch_size=2), z)
    again = model_2d.reconstruct(texts, seed=1)
    assert len(again) == 5 and all(isinstance(s, str) for s in again)
    assert model_2d.reconstruct(texts, seed=1) == again
    sampled = model_2d.reconstruct(texts, seed=1, decode="sample", temperature=2.0)
    assert len(sampled) == 5


def test_an_image_model_is_refused_by_name() -> None:
    model = latentebm.load("pretrained:quickstart")
    model.model.generator.image_shape = (1, 2, 2)  # looks like an image model now
    with pytest.raises(TaskMismatchError, match="encode decodes token sequences"):
        model.encode(["a b"])
    with pytest.raises(TaskMismatchError, match="log_prob decodes token sequences"):
        model.log_prob(["a b"])
