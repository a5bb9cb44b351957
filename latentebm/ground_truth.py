"""Synthetic data from a latent model that is known exactly: the ground-truth benchmark.

The true model is ``p(x, z) = p(z) p_beta*(x | z)`` with

* ``p(z)``: a ring of equal Gaussian modes (:class:`~latentebm.mixture_prior.GaussianMixturePrior`
  in the plane of the first two coordinates, every coordinate with standard deviation
  ``component_std``), in 2 dimensions or in a larger ``z_dim``: a multimodal prior that a Gaussian
  cannot represent and that an EBM prior (Pang et al. 2020, "Learning latent space energy-based
  prior model", eq. 2) can;
* ``p_beta*(x | z)``: a generator of the toolkit's own classes with fixed random weights, so the
  learned models (same class, same sizes) can represent it exactly:
  * ``text``: an :class:`~latentebm.generators.lstm.LSTMDecoder` over the words ``w00 w01 ...``,
    its weights drawn from ``Unif(-init_range, init_range)``, the weights that read z scaled by
    ``latent_scale`` (so the sentence depends on z), ``<eos>``'s output bias set by
    ``eos_bias`` (the sentence length) and the never-emitted specials' to -30;
  * ``images``: a :class:`~latentebm.generators.conv.ConvGenerator` (``mnist28``, ``ngf``) with
    its Xavier-normal initial weights, the first layer's (which reads z) scaled by
    ``image_latent_scale``; ``x = g(z) + tau eps`` without clamping (continuous data, written as
    float arrays);
  * ``images`` with ``image_generator: linear``: a
    :class:`~latentebm.generators.linear.LinearGenerator`, ``x = W z + b + tau eps`` with ``W``
    Xavier-normal scaled by ``linear_latent_scale`` and ``b = 0``. Under a linear generator a
    Gaussian prior can only make a Gaussian ``p(x)``, so the ring has to be learned by the prior
    (the nonlinear generator above can instead warp a Gaussian onto the data). The true ``log
    p(x)`` is then also known in closed form
    (:func:`~latentebm.mixture_prior.mixture_marginal_linear_gaussian`).

Data are exact draws (:func:`latentebm.metrics.bdmc.simulate`: sequences that are empty, hold
``<pad>``/``<bos>`` before ``<eos>`` or do not end within ``max_length`` tokens are rejected; the
count is recorded). Text data thus follow ``p(x | A)``, ``A`` the accepted sentences, whose
cross-entropy is the true model's ``-log p(x)`` plus ``log P(A)`` (:func:`true_nll_shift`).
:func:`write_dataset` writes the splits where :class:`latentebm.tasks.text.TextTask` (``train.txt``,
``valid.txt``, ``test.txt``: one sentence per line) and the image task's ``array`` data set
(``train.npy``, ``test.npy``) read them, plus ``true_model.pt`` (settings and weights, loadable
with ``weights_only=True``) and ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from latentebm.atomic import atomic_write, write_bytes_atomic
from latentebm.generators.conv import ConvGenerator
from latentebm.generators.linear import LinearGenerator
from latentebm.generators.lstm import LSTMDecoder
from latentebm.langevin import LangevinSampler
from latentebm.mixture_prior import GaussianMixturePrior
from latentebm.model import LatentEBM

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
MODEL_FILE = "true_model.pt"
SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class GroundTruthConfig:
    """Settings of a true model and its data (module docstring)."""

    kind: Literal["text", "images"] = "text"
    z_dim: int = 2
    n_modes: int = 8
    radius: float = 2.0
    component_std: float = 0.25
    seed: int = 0
    n_train: int = 20_000
    n_valid: int = 1_000
    n_test: int = 1_000
    # text
    n_words: int = 30
    embedding_dim: int = 16
    hidden_dim: int = 32
    init_range: float = 1.0
    latent_scale: float = 5.0
    eos_bias: float = 2.2
    max_length: int = 60
    # images
    ngf: int = 16
    likelihood_sigma: float = 0.3
    image_latent_scale: float = 6.0
    image_generator: Literal["conv", "linear"] = "conv"
    linear_latent_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in ("text", "images"):
            raise ValueError(f"kind must be 'text' or 'images', got {self.kind!r}")
        if self.image_generator not in ("conv", "linear"):
            raise ValueError(
                f"image_generator must be 'conv' or 'linear', got {self.image_generator!r}"
            )
        if self.image_generator != "conv" and self.kind != "images":
            raise ValueError(f"image_generator {self.image_generator!r} needs kind 'images'")
        if not (math.isfinite(self.linear_latent_scale) and self.linear_latent_scale > 0):
            raise ValueError(f"linear_latent_scale must be > 0, got {self.linear_latent_scale}")
        if self.z_dim < 2:
            raise ValueError(f"z_dim must be >= 2 (a ring), got {self.z_dim}")
        for name in ("n_modes", "n_train", "n_test", "n_words", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def words(config: GroundTruthConfig) -> list[str]:
    """The true model's words, in its token order after the four specials."""
    return [f"w{i:02d}" for i in range(config.n_words)]


def build_true_model(config: GroundTruthConfig) -> LatentEBM:
    """The true model with its fixed random weights (deterministic in ``config.seed``)."""
    torch.manual_seed(config.seed)
    prior = GaussianMixturePrior.ring(
        config.n_modes, config.radius, config.component_std, z_dim=config.z_dim
    )
    if config.kind == "text":
        decoder = LSTMDecoder(
            LSTMDecoder.Config(
                embedding_dim=config.embedding_dim,
                hidden_dim=config.hidden_dim,
                init_range=config.init_range,
                max_decode_length=config.max_length,
            ),
            z_dim=config.z_dim,
            vocab_size=len(SPECIALS) + config.n_words,
            pad_id=PAD,
            bos_id=BOS,
            eos_id=EOS,
        )
        with torch.no_grad():
            decoder.latent_to_hidden.weight.mul_(config.latent_scale)
            decoder.lstm.weight_ih_l0[:, config.embedding_dim :].mul_(config.latent_scale)
            decoder.output.bias[[PAD, BOS, UNK]] = -30.0
            decoder.output.bias[EOS] = config.eos_bias
        generator: torch.nn.Module = decoder
    elif config.image_generator == "linear":
        generator = LinearGenerator(
            LinearGenerator.Config(likelihood_sigma=config.likelihood_sigma),
            z_dim=config.z_dim,
            image_shape=(1, 28, 28),
        )
        with torch.no_grad():
            generator.linear.weight.mul_(config.linear_latent_scale)
    else:
        generator = ConvGenerator(
            ConvGenerator.Config(
                ngf=config.ngf,
                architecture="mnist28",
                likelihood_sigma=config.likelihood_sigma,
            ),
            z_dim=config.z_dim,
            image_shape=(1, 28, 28),
        )
        with torch.no_grad():
            first = generator.net[0]
            assert isinstance(first, torch.nn.ConvTranspose2d)
            first.weight.mul_(config.image_latent_scale)
    for p in generator.parameters():
        p.requires_grad_(False)
    return LatentEBM(prior, generator, LangevinSampler(0, 0.4), LangevinSampler(0, 0.1))


def encode(sentences: Sequence[str], config: GroundTruthConfig) -> Tensor:
    """Sentences of the true model's words as its token batch (``<bos> ... <eos> <pad>``)."""
    index = {w: i + len(SPECIALS) for i, w in enumerate(words(config))}
    rows = [[BOS, *(index[w] for w in s.split()), EOS] for s in sentences]
    out = torch.full((len(rows), max(map(len, rows))), PAD, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row)
    return out


def decode(tokens: Tensor, config: GroundTruthConfig) -> list[str]:
    """Token batch (with ``<bos>``) -> sentences."""
    vocabulary = [*SPECIALS, *words(config)]
    out = []
    for row in tokens.tolist():
        body = row[1:]
        body = body[: body.index(EOS)] if EOS in body else body
        out.append(" ".join(vocabulary[t] for t in body))
    return out


def write_dataset(config: GroundTruthConfig, out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Draw the splits from the true model and write them with the model (module docstring).

    Refuses a folder that already holds a ``true_model.pt`` of different settings. Returns the
    summary (also written to ``summary.json``): sizes, rejections, the true model's information
    ``E[log p(x | z*)] - E[log p(x | z')]`` (``z'`` an independent prior draw: what ``z`` tells
    about ``x``).
    """
    from latentebm.metrics.bdmc import simulate

    out = Path(out_dir)
    existing = out / MODEL_FILE
    if existing.exists():
        saved = torch.load(existing, weights_only=True)["config"]
        if not _same_settings(saved, config):
            raise FileExistsError(f"{existing}: holds another true model; not overwritten")
    out.mkdir(parents=True, exist_ok=True)
    model = build_true_model(config)
    generator = torch.Generator().manual_seed(config.seed + 1)
    sizes = {"train": config.n_train, "valid": config.n_valid, "test": config.n_test}
    summary: dict[str, Any] = {"config": dataclasses.asdict(config), "splits": {}}
    for split, n in sizes.items():
        if n == 0:
            continue
        data = simulate(model, n, generator=generator, max_length=config.max_length, min_length=1)
        with torch.no_grad():
            other = model.prior.sample(n, generator=generator)
            own = model.generator.log_likelihood(data.x, data.z).double()
            shuffled = model.generator.log_likelihood(data.x, other).double()
        info: dict[str, Any] = {
            "examples": n,
            "rejected": data.rejected,
            "acceptance": n / (n + data.rejected),
            "information": float((own - shuffled).mean()),
        }
        if config.kind == "text":
            lines = decode(data.x, config)
            write_bytes_atomic(out / f"{split}.txt", ("\n".join(lines) + "\n").encode())
            info["mean_words"] = float(np.mean([len(s.split()) for s in lines]))
        else:
            if split == "valid":
                continue  # the image task cuts valid from train (task.valid_fraction)
            buffer = _npy_bytes(data.x.numpy().astype(np.float32))
            write_bytes_atomic(out / f"{split}.npy", buffer)
        with atomic_write(out / f"{split}_z.pt") as handle:
            torch.save(data.z, handle)
        summary["splits"][split] = info
    state = {"config": dataclasses.asdict(config), "generator": model.generator.state_dict()}
    with atomic_write(existing) as handle:
        torch.save(state, handle)
    write_bytes_atomic(out / SUMMARY_FILE, (json.dumps(summary, indent=2) + "\n").encode())
    return summary


def _same_settings(saved: dict[str, Any], config: GroundTruthConfig) -> bool:
    """Whether a saved config describes ``config``: a key it lacks (written before that setting
    existed) means the default; a key this version does not know, or invalid settings, never
    match."""
    if not set(saved) <= {f.name for f in dataclasses.fields(GroundTruthConfig)}:
        return False
    try:
        return GroundTruthConfig(**saved) == config
    except (TypeError, ValueError):
        return False


def true_nll_shift(summary: dict[str, Any]) -> float:
    """``log P(A)`` from the acceptance over all splits of ``summary`` (0 for images): add it to
    the true model's ``-log p(x)`` to get the NLL of the data's own distribution ``p(x | A)``."""
    splits = summary["splits"].values()
    kept = sum(s["examples"] for s in splits)
    total = kept + sum(s["rejected"] for s in splits)
    return float(np.log(kept / total))


def load_true_model(folder: str | os.PathLike[str]) -> tuple[LatentEBM, GroundTruthConfig]:
    """The true model written by :func:`write_dataset` (weights checked against a rebuild)."""
    state = torch.load(Path(folder) / MODEL_FILE, weights_only=True)
    config = GroundTruthConfig(**state["config"])
    model = build_true_model(config)
    model.generator.load_state_dict(state["generator"])
    return model, config


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()
