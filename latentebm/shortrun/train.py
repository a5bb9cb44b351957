"""``ShortRunTrainer``: Algorithm 1 of Nijkamp, Hill, Zhu and Wu (2019), "Learning Non-Convergent
Non-Persistent Short-Run MCMC Toward Energy-Based Model", for a data-space ConvNet EBM.

Each learning step (Algorithm 1):

1. draw observed images ``x_i`` (a training batch, ``m = trainer.batch_size``);
2. draw initial negative examples ``x_i^- ~ p_0`` (uniform noise on [-1, 1]);
3. add data noise ``x_i <- x_i + sigma * eps_i`` (``convergent.data_noise``);
4. run K Langevin steps ``x <- x + (a^2/2) grad_x f(x) + a * eps`` from ``x_i^-``;
5. update theta with Adam on the loss ``mean F(x^-) - mean F(x)`` (minus eq. 6).

A run lives in ``<runs_root>/<name>/<timestamp>/`` (or ``trainer.run_dir``) and holds
``config.yaml``, ``metrics.jsonl`` (one line per ``log_every`` steps: ``step``, ``loss``,
``d_t``, ``r_t``, ``lr``, ``seconds``), ``checkpoints/step_*.pt`` (written atomically, read
with ``weights_only=True``) and, at the end, ``samples/final.png``, ``interpolation.png``,
``reconstruction.png`` (a resumed run that ends again writes them beside the first ones,
``final-1.png``, ...) and the reconstruction error into ``metrics.json``, in the format
``latentebm evaluate`` writes (an ``mse`` entry of the split; a second end adds to its
``history``). A run directory is never overwritten; continuing
one is asked for with ``trainer.resume=auto`` (or a checkpoint path) and continues exactly as an
uninterrupted run would (same batches, noise and parameters).

Diagnostics (Nijkamp, Hill, Han, Zhu and Wu (2020), "On the Anatomy of MCMC-Based Maximum
Likelihood Learning of Energy-Based Models", Section 3 and Appendix A):

* ``d_t = mean f(x) - mean f(x^-)``, on the scale of the chain's negative energy ``f = F / T``
  (``T = a^2 / 2`` with ``convergent.energy_scale``, else 1); ``loss = -T d_t``;
* ``r_t``: mean over the K steps and the chains of ``||grad_x F(x_k)||_2`` (per image), the
  length of one drift step under energy scaling (Nijkamp et al. 2020, eq. 2A; Nijkamp et al.
  2019, Table 2's "average magnitude of the gradient" without it).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from latentebm import __version__
from latentebm.build import resolve_device
from latentebm.checkpoint import (
    CheckpointError,
    checkpoint_path,
    load_checkpoint,
    load_weights,
    prune_checkpoints,
    require_fields,
    save_atomic,
)
from latentebm.config import current_component_paths, instantiate, recipe_to_yaml, to_plain
from latentebm.evaluate_output import run_metrics_path, write_metrics
from latentebm.runs import (
    TrainingError,
    claim_run_dir,
    first_difference,
    open_resume,
    record_recipe,
    record_segment,
    release_run_dir,
    run_id,
    say,
    unused_path,
)
from latentebm.shortrun.config import ShortRunRecipe
from latentebm.shortrun.tools import (
    SHORTRUN_FIELDS,
    ShortRunModel,
    interpolate,
    reconstruct,
    reconstruction_entry,
    save_image_grid,
)
from latentebm.task_contract import DataSpaceTask, WritesSamples, check_task
from latentebm.train_budget import TimedCheckpoints

__all__ = ["ShortRunState", "ShortRunTrainer", "learning_rate_at", "ml_loss"]

# Recipe sections that may change when a run is resumed (everything else must match).
_RESUMABLE_SECTIONS = ("trainer", "device", "data")
RESUME_FIELDS: dict[str, type | tuple[type, ...]] = {
    **SHORTRUN_FIELDS,
    "optimizer": dict,
    "rng": torch.Tensor,
    "state": dict,
}
"""Keys (and their types) a short-run checkpoint needs to continue a run."""


@dataclass
class ShortRunState:
    """Where training stands: ``step`` updates done, the next batch ``batch_in_epoch``."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    train_seconds: float = 0.0
    """Seconds spent in the training loop so far, summed over resumed segments."""


def ml_loss(model: ShortRunModel, x_data: Tensor, x_samples: Tensor) -> tuple[Tensor, Tensor]:
    """The loss minimised by the optimiser and ``d_t`` (Nijkamp et al. 2019 eq. 6, 2020 eq. 3A).

    ``loss = mean F(x^-) - mean F(x)`` with ``F`` the ConvNet; its negative gradient is eq. 6's
    ``Delta(theta)`` for ``f = F``. With energy scaling (``f = F / T``) it is ``T`` times the
    loss on ``f``, i.e. the learning rate ``gamma = T gamma_0`` of eq. 3A is folded into it.

    Returns:
        ``(loss, d_t)`` with ``d_t = mean f(x) - mean f(x^-)`` (detached).
    """
    f_data = model.energy(x_data).mean()
    f_samples = model.energy(x_samples).mean()
    loss = f_samples - f_data
    d_t = (f_data - f_samples).detach() / model.temperature
    return loss, d_t


def learning_rate_at(recipe: ShortRunRecipe, step: int) -> float:
    """The learning rate of update ``step + 1``: ``lr * gamma^(milestones passed)``."""
    anneal = recipe.convergent.lr_anneal
    passed = sum(1 for m in anneal.milestones if step >= m * recipe.trainer.max_steps)
    return recipe.optim.lr * anneal.gamma**passed


class ShortRunTrainer:
    """Train a data-space short-run EBM as a ``family: shortrun`` recipe says.

    Args:
        recipe: the validated recipe (:func:`latentebm.shortrun.config.load_shortrun_recipe`).
        task: an already built task (tests); default: built from ``recipe.task`` with
            ``instantiate(recipe.task, data_root=recipe.data.root, state=None)``.
    """

    def __init__(self, recipe: ShortRunRecipe, task: Any | None = None) -> None:
        self.recipe = recipe
        self.cfg = recipe.trainer
        self.state = ShortRunState()
        self.run_dir: Path | None = None
        self.model: ShortRunModel | None = None
        self._task = task
        self._buffer: Tensor | None = None
        self._last_index: Tensor | None = None  # buffer rows the current chains came from

    # ------------------------------------------------------------------ setup
    def _name(self) -> str:
        return self.recipe.name or "shortrun"

    def _claim_new_run_dir(self) -> Path:
        """Create and claim a fresh run directory (:func:`latentebm.runs.claim_run_dir`)."""
        cfg = self.cfg
        text = recipe_to_yaml(self.recipe)
        return claim_run_dir(cfg.run_dir, cfg.runs_root, self._name(), text, cfg.resume)

    def _build_task(self) -> Any:
        if self._task is None:
            task = instantiate(self.recipe.task, data_root=self.recipe.data.root, state=None)
            check_task(task, self.recipe.task.component, DataSpaceTask)
            self._task = task
        return self._task

    # ------------------------------------------------------------------ training
    def fit(self) -> Path:
        """Train until ``trainer.max_steps`` (or ``max_minutes``), write the figures, return the
        run directory."""
        recipe = self.recipe
        device = resolve_device(recipe.device)
        task = self._build_task()
        image_shape = tuple(int(v) for v in task.generator_kwargs()["image_shape"])
        if len(image_shape) != 3:
            raise TrainingError(f"task image_shape must be (C, H, W), got {image_shape}")
        shape = (image_shape[0], image_shape[1], image_shape[2])
        torch.manual_seed(recipe.seed)
        model = ShortRunModel.from_recipe(recipe, shape)
        model.energy.to(device)
        self.model = model
        optimizer = _build_optimizer(recipe, model)
        rng = torch.Generator(device)
        rng.manual_seed(recipe.seed * 1_000_003 + 1)

        cfg = self.cfg
        resume_from, saved, in_place = open_resume(
            cfg.resume,
            cfg.run_dir,
            cfg.runs_root,
            self._name(),
            lambda path: load_checkpoint(path, map_location="cpu"),
        )
        run_dir: Path | None = in_place  # locked by open_resume when continuing in place
        try:
            if resume_from is not None:
                assert saved is not None
                self._restore(saved, resume_from, model, optimizer, rng, device)
                run_dir = in_place if in_place is not None else self._claim_new_run_dir()
                if in_place is not None:  # a forked run wrote config.yaml when claimed
                    record_recipe(run_dir, self.state.step, recipe_to_yaml(self.recipe))
                step = self.state.step
                say(f"shortrun: resumed from {resume_from} at step {step}; run dir {run_dir}")
            else:
                run_dir = self._claim_new_run_dir()
                say(f"latentebm {__version__} shortrun: new run; run dir {run_dir}")
            self.run_dir = run_dir
            (run_dir / "samples").mkdir(parents=True, exist_ok=True)
            if resume_from is None:
                record_segment(run_dir, "started", 0)
            else:
                record_segment(run_dir, "resumed", self.state.step, checkpoint=str(resume_from))
            self._loop(task, model, optimizer, rng, device)
            self._write_outputs(task, model, device)
        finally:
            release_run_dir(run_dir)
        return run_dir

    def _negatives(self, model: ShortRunModel, n: int, rng: torch.Generator) -> Tensor:
        """Initial negative examples: fresh ``p_0`` draws, or persistent chain ends."""
        chain = self.recipe.chain
        if not chain.persistent:
            return model.initial(n, rng)
        if self._buffer is None:
            self._buffer = model.initial(chain.buffer_size, rng)
        index = torch.randint(chain.buffer_size, (n,), generator=rng, device=rng.device)
        x0 = self._buffer[index]
        fresh = torch.rand(n, generator=rng, device=rng.device) < chain.reinit_rate
        x0[fresh] = model.initial(n, rng)[fresh]
        self._last_index = index
        return x0

    def _loop(
        self,
        task: Any,
        model: ShortRunModel,
        optimizer: torch.optim.Optimizer,
        rng: torch.Generator,
        device: torch.device,
    ) -> None:
        cfg, st, recipe = self.cfg, self.state, self.recipe
        data_noise = recipe.convergent.data_noise
        budget = None if cfg.max_minutes is None else 60.0 * cfg.max_minutes
        clock = time.process_time if cfg.clock == "cpu" else time.perf_counter
        segment_start, seconds_before = clock(), st.train_seconds
        timed_checkpoints = TimedCheckpoints(cfg.checkpoint_every_minutes, st.train_seconds)
        sums: dict[str, float] = defaultdict(float)
        count = 0
        out_of_time = budget is not None and st.train_seconds >= budget
        model.energy.train()
        while st.step < cfg.max_steps and not out_of_time:
            batches = task.batches("train", cfg.batch_size, seed=recipe.seed, epoch=st.epoch)
            if not batches:
                raise TrainingError("the training split yields no batch: is it empty?")
            while st.batch_in_epoch < len(batches) and st.step < cfg.max_steps and not out_of_time:
                x_data = batches[st.batch_in_epoch].to(device)
                st.batch_in_epoch += 1
                if data_noise > 0:  # Algorithm 1 step 3 (Nijkamp et al. 2020 eq. 5A)
                    noise = torch.randn(x_data.shape, generator=rng, device=device)
                    x_data = x_data + data_noise * noise
                x_init = self._negatives(model, x_data.shape[0], rng)
                result = model.run_chain(x_init, generator=rng)
                x_samples = result.x
                if self._buffer is not None and self._last_index is not None:
                    self._buffer[self._last_index] = x_samples
                lr = learning_rate_at(recipe, st.step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss, d_t = ml_loss(model, x_data, x_samples)
                if not torch.isfinite(loss):
                    where = self._save_checkpoint(model, optimizer, rng)
                    raise TrainingError(
                        f"step {st.step + 1}: loss is {float(loss)} (not finite); stopped before "
                        f"updating, state saved to {where}. Lower optim.lr or chain.step_size, "
                        "or raise convergent.data_noise"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                st.step += 1
                st.train_seconds = seconds_before + clock() - segment_start
                out_of_time = budget is not None and st.train_seconds >= budget
                checkpoint_due = timed_checkpoints.due(st.train_seconds)
                last = st.step == cfg.max_steps or out_of_time
                sums["loss"] += float(loss.detach())
                sums["d_t"] += float(d_t)
                sums["r_t"] += result.mean_grad_norm * model.temperature
                count += 1
                if st.step % cfg.log_every == 0 or last:
                    row: dict[str, Any] = {"step": st.step}
                    row.update({k: v / count for k, v in sums.items()})
                    row["lr"] = lr
                    row["seconds"] = st.train_seconds
                    self._append_metrics(row)
                    sums.clear()
                    count = 0
                if st.step % cfg.checkpoint_every == 0 or last or checkpoint_due:
                    self._save_checkpoint(model, optimizer, rng)
            if st.batch_in_epoch >= len(batches):
                st.epoch += 1
                st.batch_in_epoch = 0
        if out_of_time:
            say(
                f"trainer.max_minutes={cfg.max_minutes} reached at step {st.step} "
                f"({st.train_seconds:.0f} s of training); checkpoint saved"
            )

    # ------------------------------------------------------------------ files
    def _append_metrics(self, row: dict[str, Any]) -> None:
        assert self.run_dir is not None
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")

    def _save_checkpoint(
        self, model: ShortRunModel, optimizer: torch.optim.Optimizer, rng: torch.Generator
    ) -> Path:
        assert self.run_dir is not None
        path = checkpoint_path(self.run_dir, self.state.step)
        state: dict[str, Any] = {
            "family": "shortrun",
            "version": __version__,
            "run_id": run_id(self.run_dir),
            "recipe": to_plain(self.recipe),
            "image_shape": list(model.image_shape),
            "model": model.energy.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": rng.get_state(),
            "state": asdict(self.state),
            "buffer": self._buffer,
        }
        save_atomic(state, path)
        prune_checkpoints(self.run_dir, self.cfg.keep_checkpoints)
        return path

    def _restore(
        self,
        saved: dict[str, Any],
        source: Path,
        model: ShortRunModel,
        optimizer: torch.optim.Optimizer,
        rng: torch.Generator,
        device: torch.device,
    ) -> None:
        if saved.get("family") != "shortrun":
            raise TrainingError(f"{source}: not a shortrun checkpoint")
        require_fields(saved, source, RESUME_FIELDS)
        current = to_plain(self.recipe)
        saved = {**saved, "recipe": current_component_paths(saved["recipe"])}
        for key in sorted(set(saved["recipe"]) | set(current)):
            if key in _RESUMABLE_SECTIONS or key == "name":
                continue
            diff = first_difference(saved["recipe"].get(key), current.get(key), key)
            if diff is not None:
                raise TrainingError(f"{source}: cannot resume: {diff}")
        if tuple(saved["image_shape"]) != model.image_shape:
            raise TrainingError(
                f"{source}: cannot resume: images are {tuple(saved['image_shape'])} in the "
                f"checkpoint but {model.image_shape} here"
            )
        load_weights(model.energy, saved["model"], source)
        load_weights(optimizer, saved["optimizer"], source, "optimizer")
        try:
            rng.set_state(saved["rng"].cpu())  # generator states are CPU byte tensors
            self.state = ShortRunState(**saved["state"])
        except (RuntimeError, TypeError) as error:
            raise CheckpointError(f"{source}: damaged checkpoint: rng, state ({error})") from error
        buffer = saved.get("buffer")
        if buffer is not None and not isinstance(buffer, Tensor):
            raise CheckpointError(f"{source}: damaged checkpoint: buffer is not a tensor")
        self._buffer = None if buffer is None else buffer.to(device)

    def _write_outputs(self, task: Any, model: ShortRunModel, device: torch.device) -> None:
        """Write ``samples/final.png``, ``interpolation.png``, ``reconstruction.png`` and the
        reconstruction MSE per pixel into ``metrics.json``
        (:func:`~latentebm.evaluate_output.run_metrics_path`)."""
        cfg, run_dir = self.cfg, self.run_dir
        assert run_dir is not None
        model.energy.eval()
        rng = torch.Generator(device)
        rng.manual_seed(self.recipe.seed)
        if cfg.samples_at_end > 0:
            images = model.sample(cfg.samples_at_end, generator=rng)
            final = unused_path(run_dir / "samples" / "final.png")
            if isinstance(task, WritesSamples):  # the task's own grid writer
                task.save_samples(images, final)
            else:
                save_image_grid(images, final)
        if cfg.interpolation_pairs > 0:
            grid = interpolate(model, cfg.interpolation_pairs, cfg.interpolation_points, rng)
            path = unused_path(run_dir / "interpolation.png")
            save_image_grid(grid, path, n_cols=cfg.interpolation_points)
        if cfg.reconstruction_images > 0:
            targets, split = _held_out_images(task, cfg.reconstruction_images, self.recipe.seed)
            recon, mse = reconstruct(
                model, targets, cfg.reconstruction_iters, cfg.reconstruction_lr, generator=rng
            )
            # Row pairs: observed images above their reconstructions.
            n_cols = min(8, targets.shape[0])
            rows = []
            for start in range(0, targets.shape[0], n_cols):
                rows += [targets[start : start + n_cols].cpu(), recon[start : start + n_cols].cpu()]
            path = unused_path(run_dir / "reconstruction.png")
            save_image_grid(torch.cat(rows), path, n_cols=n_cols)
            entry = reconstruction_entry(
                mse,
                n=targets.shape[0],
                split=split,
                iters=cfg.reconstruction_iters,
                lr=cfg.reconstruction_lr,
                chain_steps=model.chain.n_steps,
            )
            stamp = {
                "seed": self.recipe.seed,
                "checkpoint": str(checkpoint_path(run_dir, self.state.step)),
                "step": self.state.step,
                "stage": "end of training",
                "train_seconds": self.state.train_seconds,
                "device": str(device),
                "torch_threads": torch.get_num_threads(),
                "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            # metrics.json in evaluate's format (one written by an older trainer is kept)
            write_metrics(run_metrics_path(run_dir), split, {"mse": {**entry, **stamp}})


def _build_optimizer(recipe: ShortRunRecipe, model: ShortRunModel) -> torch.optim.Optimizer:
    o = recipe.optim
    params = list(model.energy.parameters())
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, weight_decay=o.weight_decay)
    return torch.optim.Adam(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)


def _held_out_images(task: Any, n: int, seed: int) -> tuple[Tensor, str]:
    """The first ``n`` images of the test split (else valid, else train), unshuffled."""
    for split in ("test", "valid", "train"):
        try:
            batches = task.batches(split, n, seed=seed, epoch=0, shuffle=False)
        except (KeyError, ValueError, FileNotFoundError):
            continue
        if batches:
            return batches[0][:n], split
    raise TrainingError("the task has no images to reconstruct (no test, valid or train split)")
