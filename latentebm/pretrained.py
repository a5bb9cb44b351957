"""Use a trained model from Python: ``latentebm.load(run_dir).generate(20)``."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentebm.build import build_model, build_task_from_checkpoint, resolve_device
from latentebm.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_weights,
    require_fields,
)
from latentebm.config import Recipe, recipe_from_dict
from latentebm.errors import DataSpaceCheckpoint
from latentebm.export import TRAINING_ONLY_BUFFERS, resolve_model
from latentebm.model import LatentEBM


class TaskMismatchError(TypeError, ValueError):
    """A :class:`Pretrained` method that does not apply to the model's task: an image method
    (:meth:`~Pretrained.sample_images`, :meth:`~Pretrained.anomaly_score`) on a model of token
    sequences (text, molecules), or a sequence method (:meth:`~Pretrained.generate`,
    :meth:`~Pretrained.trajectory`, :meth:`~Pretrained.interpolate`) on an image model.

    A ``TypeError`` (the model is the wrong kind of object for the call) and a ``ValueError``
    (so that the ``latentebm`` command reports it in one line)."""


def _count(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an ``int``; ``TypeError`` if it is not an integer, ``ValueError`` naming
    ``name`` if it is below ``minimum``."""
    try:
        count = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r}") from None
    if count < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {count}")
    return count


def _steps(name: str, value: Any) -> int | None:
    """A chain length: ``None`` (the model's own) or an integer >= 0."""
    return None if value is None else _count(name, value, minimum=0)


@dataclass
class Pretrained:
    """A trained ``LatentEBM`` with its task (tokenizer) and recipe.

    Attributes:
        model: the model, in eval mode.
        task: the task object that encodes and decodes examples.
        recipe: the resolved recipe the model was trained with.
        step: the training step of the checkpoint.
        checkpoint: where it was loaded from.
    """

    model: LatentEBM
    task: Any
    recipe: Recipe
    step: int
    checkpoint: Path

    @property
    def is_image_model(self) -> bool:
        """Whether the generator makes images (``sample_images``, ``anomaly_score``) rather
        than token sequences decoded to strings (``generate``, ``trajectory``,
        ``interpolate``)."""
        return getattr(self.model.generator, "image_shape", None) is not None

    def _describe(self) -> str:
        """``CHECKPOINT is an image model (latentebm.tasks.images.ImageTask)`` or ``... is a
        token-sequence model (latentebm.tasks.text.TextTask)``, for :class:`TaskMismatchError`."""
        cls = type(self.task)
        kind = "an image model" if self.is_image_model else "a token-sequence model"
        return f"{self.checkpoint} is {kind} ({cls.__module__}.{cls.__qualname__})"

    def _require_images(self, method: str) -> None:
        if not self.is_image_model:
            raise TaskMismatchError(
                f"{method} needs an image model; {self._describe()}: use generate, trajectory "
                "or interpolate"
            )

    def _require_sequences(self, method: str, instead: str) -> None:
        if self.is_image_model:
            raise TaskMismatchError(
                f"{method} decodes token sequences (text, molecules); {self._describe()}: "
                f"use {instead}"
            )

    def generate(
        self,
        n: int,
        *,
        decode: str = "greedy",
        temperature: float = 1.0,
        top_k: int | None = None,
        langevin_steps: int | None = None,
        seed: int | None = None,
        batch_size: int = 500,
        beam_size: int = 5,
        length_penalty: float = 0.0,
        progress: bool = False,
        top_p: float | None = None,
        repetition_penalty: float = 1.0,
        max_length: int | None = None,
        max_new_tokens: int | None = None,
    ) -> list[str]:
        """``n`` decoded samples: ``z`` from the prior chain (K0 steps, or ``langevin_steps``).

        ``decode``: ``greedy``, ``sample`` (``temperature``, ``top_k``, ``top_p``) or ``beam``
        (``beam_size``, ``length_penalty``), see
        :meth:`~latentebm.generators.decoding.StepwiseDecoder.sample`. ``top_p``: nucleus
        sampling (Holtzman et al. 2020), in (0, 1]. ``repetition_penalty``: CTRL's penalty
        (Keskar et al. 2019) on tokens a sample has already generated, for greedy and sample
        decoding (> 0; 1: off; refused with beam). ``max_new_tokens`` (as in Hugging Face
        ``generate``) and ``max_length`` are the same bound: most tokens per sample, excluding
        ``<bos>`` (default: the generator's ``max_decode_length``). ``progress``: a tqdm bar on
        stderr. Samples are drawn ``batch_size`` at a time from one random stream, so they
        depend on the seed, ``n`` and ``batch_size``.

        Raises:
            TaskMismatchError: an image model (use :meth:`sample_images`).
            ValueError: ``n`` or ``batch_size`` below 1, ``langevin_steps`` below 0, a bad
                decoding option, or ``max_length`` and ``max_new_tokens`` that differ (checked
                before any sampling).
        """
        from latentebm.generators.decoding import (
            check_beam_options,
            check_decode_options,
            resolve_max_length,
        )

        self._require_sequences("generate", "sample_images")
        n = _count("n", n)
        batch_size = _count("batch_size", batch_size)
        langevin_steps = _steps("langevin_steps", langevin_steps)
        max_length = resolve_max_length(max_length, max_new_tokens)
        check_decode_options(
            decode,
            temperature=temperature,
            top_k=top_k,
            max_length=max_length,
            default_length=1,
            top_p=top_p,
            repetition_penalty=repetition_penalty,
        )
        if decode == "beam":
            check_beam_options(
                beam_size=beam_size,
                length_penalty=length_penalty,
                max_length=max_length,
                default_length=1,
            )
        generator = self.random_generator(seed)
        options: dict[str, Any] = (
            {"beam_size": beam_size, "length_penalty": length_penalty} if decode == "beam" else {}
        )
        # the newer options only when given: a generator's ``sample`` may predate them
        if top_p is not None:
            options["top_p"] = top_p
        if repetition_penalty != 1.0:
            options["repetition_penalty"] = repetition_penalty
        if max_length is not None:
            options["max_length"] = max_length
        out: list[str] = []
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n, desc="generate", unit="sample", dynamic_ncols=True, leave=False)
        while len(out) < n:
            size = min(batch_size, n - len(out))
            tokens = self.model.generate(
                size,
                generator=generator,
                n_steps=langevin_steps,
                decode=decode,
                temperature=temperature,
                top_k=top_k,
                **options,
            )
            out.extend(self.task.decode(tokens))
            if bar is not None:
                bar.update(size)
        if bar is not None:
            bar.close()
        return out

    def random_generator(self, seed: int | None) -> torch.Generator:
        """A generator on the model's device, seeded with ``seed`` (None: a fresh random seed)."""
        generator = torch.Generator(self.model.device)
        if seed is not None:
            generator.manual_seed(seed)
        else:
            generator.seed()
        return generator

    def trajectory(
        self,
        n: int,
        steps: Sequence[int],
        *,
        langevin_steps: int | None = None,
        seed: int | None = None,
        **decode_opts: Any,
    ) -> dict[str, Any]:
        """Sentences at ``steps`` of ``n`` prior chains of ``langevin_steps`` steps (default K0)
        and the energy along them: :func:`latentebm.generation.prior_trajectory`.

        Raises:
            TaskMismatchError: an image model (see
                :func:`latentebm.image_tools.long_run_prior_chain`).
            ValueError: see :func:`~latentebm.generation.prior_trajectory`.
        """
        from latentebm.generation import prior_trajectory

        self._require_sequences("trajectory", "latentebm.image_tools.long_run_prior_chain")
        langevin_steps = _steps("langevin_steps", langevin_steps)
        return prior_trajectory(
            self.model,
            self.task,
            n,
            steps,
            langevin_steps,
            generator=self.random_generator(seed),
            **decode_opts,
        )

    def interpolate(
        self,
        sentence_a: str,
        sentence_b: str,
        n_points: int = 8,
        *,
        path: str = "linear",
        posterior_steps: int | None = None,
        n_chains: int = 8,
        seed: int | None = None,
        **decode_opts: Any,
    ) -> list[tuple[float, str]]:
        """``[(t, sentence)]`` along a path between the posterior z of two sentences:
        :func:`latentebm.generation.interpolate`.

        Raises:
            TaskMismatchError: an image model (see :func:`latentebm.image_tools.interpolate`).
            ValueError: see :func:`~latentebm.generation.interpolate`.
        """
        from latentebm.generation import interpolate

        self._require_sequences("interpolate", "latentebm.image_tools.interpolate")
        return interpolate(
            self.model,
            self.task,
            sentence_a,
            sentence_b,
            n_points,
            path,  # type: ignore[arg-type]
            posterior_steps,
            n_chains=n_chains,
            generator=self.random_generator(seed),
            **decode_opts,
        )

    def encode(
        self,
        texts: Sequence[str],
        *,
        n_chains: int = 8,
        posterior_steps: int | None = None,
        seed: int | None = None,
        batch_size: int = 64,
    ) -> torch.Tensor:
        """Posterior ``z`` of each text (sentence or SMILES), ``(len(texts), d)`` on the CPU: the
        mean of ``n_chains`` short-run posterior chains of the training sampler (K1 steps, or
        ``posterior_steps``) from ``N(0, sigma^2 I)`` (Pang et al. 2020, eq. 11;
        :func:`latentebm.generation.posterior_mean`).

        Raises:
            TaskMismatchError: an image model.
            ValueError: ``n_chains`` or ``batch_size`` below 1.
        """
        from latentebm.generation import posterior_mean

        self._require_sequences("encode", "the image tools of latentebm.image_tools")
        batch_size = _count("batch_size", batch_size)
        generator = self.random_generator(seed)
        texts = list(texts)
        parts = [
            posterior_mean(
                self.model,
                self.task,
                texts[start : start + batch_size],
                n_chains=n_chains,
                posterior_steps=posterior_steps,
                generator=generator,
            ).cpu()
            for start in range(0, len(texts), batch_size)
        ]
        return torch.cat(parts) if parts else torch.zeros(0, self.model.z_dim)

    def reconstruct(
        self,
        texts: Sequence[str],
        *,
        n_chains: int = 8,
        posterior_steps: int | None = None,
        seed: int | None = None,
        batch_size: int = 64,
        **decode_opts: Any,
    ) -> list[str]:
        """Each text decoded from its posterior ``z`` (:meth:`encode`): greedily unless
        ``decode_opts`` say otherwise (``decode="sample"``, ``temperature``, ``beam_size`` ...,
        as :meth:`generate`)."""
        z = self.encode(
            texts,
            n_chains=n_chains,
            posterior_steps=posterior_steps,
            seed=seed,
            batch_size=batch_size,
        )
        generator = self.random_generator(seed)
        out: list[str] = []
        for start in range(0, z.shape[0], batch_size):
            rows = z[start : start + batch_size].to(self.model.device)
            with torch.no_grad():
                tokens = self.model.generator.sample(rows, generator=generator, **decode_opts)
            out.extend(self.task.decode(tokens))
        return out

    def log_prob(
        self,
        texts: Sequence[str],
        *,
        settings: Any = None,
        seed: int | None = 0,
        batch_size: int = 16,
    ) -> torch.Tensor:
        """``log p(x)`` of each text in nats, ``(len(texts),)`` float64: the marginal
        likelihood ``log int p_beta(x|z) p_alpha(z) dz`` by annealed importance sampling with
        ``log Z(alpha)`` by AIS too (:func:`latentebm.metrics.marginal.evaluate_marginal_nll`;
        ``settings``: an :class:`~latentebm.metrics.marginal.AISSettings`, default the tight
        defaults of ``latentebm evaluate --metrics marginal_nll``). An estimate: the
        difference of two AIS lower bounds (``log (Z p(x))`` and ``log Z``), so its error may
        have either sign (docs/metrics.md says how large); seeded by default, so repeatable.
        """
        from latentebm.metrics.marginal import ais_log_partition, evaluate_marginal_nll

        self._require_sequences("log_prob", "anomaly_score")
        batch_size = _count("batch_size", batch_size)
        texts = list(texts)
        if not texts:
            return torch.zeros(0, dtype=torch.float64)
        generator = self.random_generator(seed)
        log_z = None  # once for all batches (a model without z is scored exactly)
        if self.model.z_dim:
            log_z = ais_log_partition(self.model.prior, generator=generator)
        values: list[float] = []
        for start in range(0, len(texts), batch_size):
            x = self.task.encode(texts[start : start + batch_size])
            result = evaluate_marginal_nll(
                self.model,
                [x],
                self.task.num_target_tokens,
                settings,
                log_z=log_z,
                generator=generator,
            )
            values.extend(result.log_likelihoods)
        return torch.tensor(values, dtype=torch.float64)

    def sample_images(
        self,
        n: int,
        *,
        langevin_steps: int | None = None,
        seed: int | None = None,
        batch_size: int = 500,
        progress: bool = False,
    ) -> torch.Tensor:
        """``n`` images ``g_beta(z)`` (the generator's mean, in [-1, 1], ``(n, C, H, W)``) with
        ``z`` from the prior chain (K0 steps, or ``langevin_steps``): an image model's
        :meth:`generate`. ``progress``: a bar counting images (and images/s) on stderr.

        Raises:
            TaskMismatchError: a model of token sequences (use :meth:`generate`).
            ValueError: ``n`` or ``batch_size`` below 1, or ``langevin_steps`` below 0.
        """
        self._require_images("sample_images")
        n = _count("n", n)
        batch_size = _count("batch_size", batch_size)
        langevin_steps = _steps("langevin_steps", langevin_steps)
        generator = self.random_generator(seed)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n, desc="generate", unit="image", dynamic_ncols=True, leave=False)
        parts = []
        for start in range(0, n, batch_size):
            size = min(batch_size, n - start)
            parts.append(self.model.generate(size, generator=generator, n_steps=langevin_steps))
            if bar is not None:
                bar.update(size)
        if bar is not None:
            bar.close()
        return torch.cat(parts)

    def anomaly_score(
        self,
        images: torch.Tensor | np.ndarray,
        *,
        n_steps: int | None = None,
        n_chains: int = 1,
        seed: int | None = 0,
        batch_size: int = 500,
    ) -> torch.Tensor:
        """One anomaly score per image, higher = more anomalous (Section 3.4 of Pang, Han,
        Nijkamp, Zhu and Wu (2020), "Learning Latent Space Energy-Based Prior Model").

        The score is ``-[log p_beta(x | z) + f_alpha(z) + log N(z; 0, sigma^2 I)]``, the negative
        unnormalised log joint at the end of a posterior Langevin chain from noise (K1 steps, or
        ``n_steps``), averaged over ``n_chains`` independent chains
        (:func:`latentebm.metrics.anomaly.anomaly_scores`).

        Args:
            images: ``(B, C, H, W)`` or ``(B, H, W)`` (one channel), floats in [-1, 1] as the
                task feeds the model, or ``uint8`` in [0, 255] (converted as ``x / 127.5 - 1``).
            n_steps, n_chains: the posterior chains.
            seed: seeds the chains (None: a fresh random seed).
            batch_size: images per chain batch.

        Returns:
            a CPU float tensor ``(B,)`` (empty for no image).

        Raises:
            TaskMismatchError: a model of token sequences.
            ValueError: images of another shape, ``n_chains`` or ``batch_size`` below 1, or
                ``n_steps`` below 0.
        """
        from latentebm.metrics.anomaly import anomaly_scores

        self._require_images("anomaly_score")
        n_steps = _steps("n_steps", n_steps)
        n_chains = _count("n_chains", n_chains)
        batch_size = _count("batch_size", batch_size)
        x = torch.as_tensor(images)
        if x.dtype == torch.uint8:
            x = x.float() / 127.5 - 1.0
        x = x.float()
        if x.dim() == 3:
            x = x.unsqueeze(1)
        shape = tuple(self.model.generator.image_shape)
        if x.dim() != 4 or tuple(x.shape[1:]) != shape:
            raise ValueError(
                f"images must have shape (B, {', '.join(map(str, shape))}), got {tuple(x.shape)}"
            )
        if x.shape[0] == 0:
            return torch.zeros(0)
        generator = self.random_generator(seed)
        scores = [
            anomaly_scores(
                self.model,
                x[start : start + batch_size].to(self.model.device),
                n_steps=n_steps,
                n_chains=n_chains,
                generator=generator,
            ).cpu()
            for start in range(0, x.shape[0], batch_size)
        ]
        return torch.cat(scores)


def load(
    path: str | Path,
    device: str | torch.device = "cpu",
    *,
    trusted_modules: Sequence[str] = (),
) -> Pretrained:
    """Load a trained model: the newest checkpoint of a run directory, a checkpoint file, an
    exported folder (``latentebm export``), ``pretrained:NAME`` (a model shipped with the
    package) or ``hf:OWNER/REPO`` (an exported folder on the Hugging Face Hub)
    (:func:`latentebm.export.resolve_model`). The state of persistent chains is not loaded: it
    only serves training.

    The checkpoint's recipe names its task and generator classes; they are imported only from
    the toolkit's package (``latentebm``), the module prefixes in the environment
    variable ``LATENTEBM_TRUSTED_MODULES`` and ``trusted_modules`` (``docs/guarantees.md``), so
    loading a checkpoint from elsewhere runs no code from the working directory.

    Raises:
        CheckpointError: for a file that is not a readable checkpoint.
        RecipeError: naming the checkpoint and the key for a recipe that does not validate or
            names a component outside the trusted modules.
    """
    target = resolve_device(device) if isinstance(device, str) else device  # one line if absent
    checkpoint = resolve_model(path)
    # mapped, not read: the optimiser moments (2x the weights) are never loaded; the weights
    # are copied into the model below and moved to the device
    state = load_checkpoint(checkpoint, map_location="cpu", mmap=True)
    family = state.get("family", "latent")
    if family == "shortrun":
        raise DataSpaceCheckpoint(
            f"{checkpoint}: a shortrun checkpoint (the data-space short-run EBM); this loader "
            "reads latent EBM runs: use latentebm.load or latentebm.shortrun.load_shortrun",
            checkpoint,
        )
    if family != "latent":
        raise CheckpointError(f"{checkpoint}: unknown model family {family!r}")
    require_fields(
        state, checkpoint, {"recipe": dict, "task_state": (dict, type(None)), "step": int}
    )
    recipe = recipe_from_dict(
        state["recipe"], source=str(checkpoint), trusted_modules=trusted_modules
    )
    task = build_task_from_checkpoint(recipe, state["task_state"], checkpoint)
    model = build_model(recipe, task, for_training=False)
    weights = state["model"]
    if isinstance(weights, dict):  # persistent chains' state is for training only
        weights = {k: v for k, v in weights.items() if not k.startswith(TRAINING_ONLY_BUFFERS)}
    load_weights(model, weights, checkpoint)
    model.to(target).eval()
    return Pretrained(model, task, recipe, int(state["step"]), checkpoint)
