"""``Trainer``: runs Algorithm 1 over a dataset with logging, validation and checkpoints.

A run lives in ``runs/<recipe>/<timestamp>/`` (or ``trainer.run_dir``) and holds
``config.yaml`` (the resolved recipe), ``metrics.jsonl`` (one JSON object per logged step),
TensorBoard event files, ``checkpoints/step_*.pt`` and ``samples/``. A run directory is never
overwritten: continuing one is asked for with ``trainer.resume=auto`` or a checkpoint path.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import signal
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import numpy as np
import torch

from latentebm import __version__
from latentebm.build import (
    build_model,
    build_optimizers,
    build_task,
    build_task_from_checkpoint,
    resolve_device,
)
from latentebm.checkpoint import (
    CheckpointError,
    checkpoint_path,
    load_checkpoint,
    load_weights,
    prune_checkpoints,
    require_fields,
    save_atomic,
)
from latentebm.config import (
    Recipe,
    current_component_paths,
    recipe_from_dict,
    recipe_to_dict,
    recipe_to_yaml,
    with_current_defaults,
)
from latentebm.console_log import ConsoleLog
from latentebm.distributed import (
    DistContext,
    average_gradients,
    barrier,
    broadcast_object,
    broadcast_parameters,
    gather_objects,
    init_distributed,
    reduce_values,
    shutdown,
)
from latentebm.errors import Interrupted
from latentebm.model import LatentEBM, NonFiniteError, Optimizers
from latentebm.progress import reporting_within
from latentebm.runs import (
    FinalPhaseReserve,
    TimedCheckpoints,
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
from latentebm.warm_start import MODEL_PARTS, copy_parts, freeze_parts, read_source

_T = TypeVar("_T")

_MAY_CHANGE_ON_RESUME = {"model": ("compile",), "task": ("cache_dir",)}
"""Keys of the task and model sections that a resumed run may change: how the chains execute,
where caches live (another machine)."""
_GENERATOR_EXECUTION_KEYS = ("fused_output", "fast_chain", "chain_matmul_dtype", "fast_path")
"""Keys of ``model.generator`` that only choose how the generator is computed (a resumed run may
change them, and checkpoints from before they existed lack them)."""

CONSOLE_LOG = "console.log"
"""What the main process printed while it trained (:mod:`latentebm.console_log`)."""
MAX_CONSECUTIVE_SKIPS = 10
RESUME_FIELDS: dict[str, type | tuple[type, ...]] = {
    "recipe": dict,
    "model": dict,
    "task_state": (dict, type(None)),
    "step": int,
    "epoch": int,
    "batch_in_epoch": int,
    "optim_generator": dict,
    "rng": list,
}
"""Keys (and their types) a checkpoint needs to continue a run."""
DIVERGED_WEIGHT = 1e6
"""A parameter larger than this in magnitude flags the run as diverging (a warning and a
``diverging`` event in ``metrics.jsonl``; training goes on). Trained weights of these models are
O(1)-O(10); a run whose weights grow without bound can stay finite while its samples and
validation NLL become meaningless."""


@dataclass
class TrainState:
    """Where training stands: ``step`` updates done, the next batch ``batch_in_epoch``."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    skipped: int = 0
    train_seconds: float = 0.0
    """Wall seconds spent in the training loop so far, over all resumed segments."""
    best_valid: float = math.inf
    history: list[dict[str, float]] = field(default_factory=list)


class Trainer:
    """Train a :class:`LatentEBM` as a recipe says.

    Args:
        recipe: the validated recipe (:func:`latentebm.config.load_recipe`).
    """

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe
        self.cfg = recipe.trainer
        self.ctx: DistContext = DistContext()
        self.state = TrainState()
        self._signal: int | None = None
        self._writer: Any = None
        self._diverging = False
        self._held: Path | None = None  # the run directory this process has locked
        self._console: ConsoleLog | None = None  # RUN/console.log, on the main process
        self.run_dir: Path | None = None

    # ------------------------------------------------------------------ setup
    def _name(self) -> str:
        return self.recipe.name or "run"

    def _main_only(self, work: Callable[[], _T]) -> _T | None:
        """``work()`` on the main process (None elsewhere); when it raises, every process
        raises (the main one its own error, the others a :class:`TrainingError` with its
        message), so no process waits forever in a collective the main one never reaches."""
        result: _T | None = None
        failure: BaseException | None = None
        if self.ctx.is_main:
            try:
                result = work()
            except Exception as error:  # noqa: BLE001 - re-raised below, on every process
                failure = error
        message = broadcast_object(None if failure is None else str(failure), self.ctx)
        if failure is not None:
            raise failure
        if message is not None:
            raise TrainingError(f"on the main process: {message}")
        return result

    def _claim_new_run_dir(self) -> Path:
        """Create and claim a fresh run directory (:func:`latentebm.runs.claim_run_dir`)."""
        cfg = self.cfg
        text = recipe_to_yaml(self.recipe)
        return claim_run_dir(cfg.run_dir, cfg.runs_root, self._name(), text, cfg.resume)

    def _check_compatible(self, saved: dict[str, Any], source: Path) -> None:
        """The model and task of a resumed run must be those of the checkpoint (how the chains
        execute, ``model.compile``, may change)."""
        current = recipe_to_dict(self.recipe)
        saved = current_component_paths(saved)  # a checkpoint from before the tasks' rename
        saved = with_current_defaults(saved, self.recipe)  # keys added since it was saved
        for section in ("task", "model"):
            before, now = saved.get(section), current.get(section)
            if isinstance(before, dict) and isinstance(now, dict):
                before, now = dict(before), dict(now)
                for key in _MAY_CHANGE_ON_RESUME[section]:
                    before.pop(key, None)
                    now.pop(key, None)
                if section == "model":
                    for side in (before, now):
                        if isinstance(side.get("generator"), dict):
                            side["generator"] = {
                                k: v
                                for k, v in side["generator"].items()
                                if k not in _GENERATOR_EXECUTION_KEYS
                            }
            diff = first_difference(before, now, section)
            if diff is not None:
                raise TrainingError(
                    f"resume from {source}: {diff}; a resumed run keeps its task and model "
                    "(start a new run to change them)"
                )

    # ------------------------------------------------------------------ main
    def fit(self) -> Path:
        """Train until ``trainer.max_steps``; return the run directory."""
        use_cuda = self.recipe.device.startswith("cuda") or (
            self.recipe.device == "auto" and torch.cuda.is_available()
        )
        self.ctx = init_distributed(use_cuda)
        try:
            return self._fit()
        except BaseException as error:
            if self._console is not None:  # the reason is printed only after the log closes
                self._console.note(f"stopped: {type(error).__name__}: {error}")
            raise
        finally:
            if self._console is not None:
                self._console.stop()
            if self._writer is not None:
                self._writer.close()
            release_run_dir(self._held)
            shutdown(self.ctx)

    def _fit(self) -> Path:
        ctx, cfg = self.ctx, self.cfg
        device = resolve_device(self.recipe.device, ctx.local_rank)
        saved: dict[str, Any] | None = None

        in_place: Path | None = None

        def find_checkpoint() -> Path | None:  # the main process: reads, locks, decides
            nonlocal saved, in_place
            found, saved, in_place = open_resume(
                cfg.resume,
                cfg.run_dir,
                cfg.runs_root,
                self._name(),
                lambda p: load_checkpoint(p, "cpu"),
            )
            self._held = in_place
            return found

        resume_from = broadcast_object(self._main_only(find_checkpoint), ctx)
        if resume_from is not None:
            if saved is None:
                saved = load_checkpoint(resume_from, map_location="cpu")
            require_fields(saved, resume_from, RESUME_FIELDS)
            self._check_compatible(saved["recipe"], resume_from)

        source: tuple[Path, dict[str, Any]] | None = None
        if saved is None and cfg.init_from is not None:  # a new run from another's weights
            source = read_source(cfg.init_from)
        torch.manual_seed(self.recipe.seed)  # the same initial weights on every rank
        if saved is not None:
            assert resume_from is not None
            task = build_task_from_checkpoint(self.recipe, saved["task_state"], resume_from)
        elif source is not None and _tied_to_tokens(cfg.init_parts):
            task = build_task_from_checkpoint(self.recipe, source[1]["task_state"], source[0])
        else:
            task = build_task(self.recipe, state=None)
        model = build_model(self.recipe, task)
        init_parts: list[str] = []
        source_path: Path | None = None
        if source is not None:
            source_path = source[0]
            init_parts = _parts_to_copy(model, source[1]["model"], cfg.init_parts)
            copy_parts(model, source[1]["model"], init_parts, source_path)
            source = None  # the weights are copied: do not hold the file's tensors for the run
        freeze_parts(model, cfg.freeze)
        model = model.to(device)
        optimizers = build_optimizers(self.recipe, model)
        langevin_rng = torch.Generator(device)
        langevin_rng.manual_seed(_rank_seed(self.recipe.seed, ctx.rank, salt=1))
        _seed_everything(_rank_seed(self.recipe.seed, ctx.rank, salt=2))
        optim_changes: list[str] = []
        if saved is not None:
            assert resume_from is not None
            self._restore(saved, resume_from, model, optimizers, langevin_rng)
            optim_changes = _apply_optim_settings(
                saved["recipe"], self.recipe, optimizers, resume_from
            )
            frozen_before = (saved["recipe"].get("trainer") or {}).get("freeze") or []
            if list(frozen_before) != list(cfg.freeze):
                optim_changes.append(
                    f"trainer.freeze was {list(frozen_before)} in the checkpoint, now "
                    f"{list(cfg.freeze)}: what is frozen from here on follows the recipe"
                )
        broadcast_parameters(model, ctx)

        def choose_run_dir() -> tuple[Path, str]:
            # every split's data file is read before a run directory is claimed, so a missing
            # or unreadable file (the test split, say) leaves no half-started run behind
            description = task.describe()
            if in_place is not None:
                return in_place, description
            # a new run, or a resumed one forked into a new run directory
            self._held = self._claim_new_run_dir()
            return self._held, description

        run_dir, description = self._main_only(choose_run_dir) or (Path(), "")
        run_dir = broadcast_object(run_dir, ctx)
        self.run_dir = run_dir
        if ctx.is_main:
            self._console = ConsoleLog(run_dir / CONSOLE_LOG)
            self._console.start()
            (run_dir / "samples").mkdir(parents=True, exist_ok=True)
            if in_place is not None:  # a fresh or forked run wrote config.yaml when claimed
                record_recipe(run_dir, self.state.step, recipe_to_yaml(self.recipe))
            self._open_writer(run_dir)
            action = (
                f"resuming from {resume_from} at step {self.state.step}" if saved else "new run"
            )
            say(f"latentebm {__version__}: {action}; run dir {run_dir}")
            if saved is not None:
                self._append_metrics({"event": "resumed", "checkpoint": str(resume_from)})
                record_segment(run_dir, "resumed", self.state.step, checkpoint=str(resume_from))
            else:
                record_segment(run_dir, "started", 0)
            if source_path is not None:
                say(f"initialised {', '.join(init_parts)} from {source_path}")
            if cfg.freeze:
                say(f"frozen (not updated): {', '.join(cfg.freeze)}")
            for change in optim_changes:
                say(f"resume: {change}")
            if optim_changes:
                self._append_metrics({"event": "optimiser changed", "changes": optim_changes})
            say(f"task: {description}")
            n_params = sum(p.numel() for p in model.parameters())
            say(
                f"model: {n_params:,} parameters on {device}; {model.prior_chain!r} (prior), "
                f"{model.posterior_chain!r} (posterior); {ctx.world_size} process(es)"
            )
        barrier(ctx)

        self._install_signal_handlers()
        try:
            self._loop(task, model, optimizers, langevin_rng, device)
        finally:
            self._restore_signal_handlers()
        if ctx.is_main and cfg.samples_at_end > 0:
            self._write_samples(task, model, device, cfg.samples_at_end, echo=True)
        barrier(ctx)  # no process leaves while another still uses the process group
        return run_dir

    def _loop(
        self,
        task: Any,
        model: LatentEBM,
        optimizers: Optimizers,
        langevin_rng: torch.Generator,
        device: torch.device,
    ) -> None:
        ctx, cfg, st = self.ctx, self.cfg, self.state
        has_valid = _has_split(task, "valid")
        # with a time budget the bar's end is unknown until the pace is (set at every step)
        total = None if cfg.max_minutes is not None else cfg.max_steps
        progress = _progress(total, st.step, enabled=cfg.progress and ctx.is_main)
        sums: dict[str, float] = defaultdict(float)
        count, tokens, interval_start = 0, 0, time.perf_counter()
        consecutive_skips = 0
        model.train()

        def grad_hook(modules: list[torch.nn.Module]) -> None:
            average_gradients(modules, ctx)

        budget = None if cfg.max_minutes is None else 60.0 * cfg.max_minutes
        clock = time.process_time if cfg.clock == "cpu" else time.perf_counter
        segment_start, seconds_before, steps_before = clock(), st.train_seconds, st.step
        timed_checkpoints = TimedCheckpoints(cfg.checkpoint_every_minutes, st.train_seconds)
        reserve = FinalPhaseReserve(
            self._valid_batch_count(task) if has_valid and budget is not None else 0,
            math.ceil(cfg.samples_at_end / cfg.batch_size),  # main only, all wait
        )
        reserve_seconds, spent_after_first = 0.0, st.train_seconds
        out_of_time = False
        indexed = model.posterior_memory is not None  # persistent posterior chains
        # tokens_per_s, or what the task counts instead (images_per_s)
        rate_key = f"{getattr(task, 'throughput_unit', 'tokens')}_per_s"
        within_step = ChainStepLabel(progress)
        while st.step < cfg.max_steps and not out_of_time:
            options = {
                "seed": self.recipe.seed,
                "epoch": st.epoch,
                "rank": ctx.rank,
                "world_size": ctx.world_size,
            }
            if indexed:
                batches = task.indexed_batches("train", cfg.batch_size, **options)
            else:
                batches = [(x, None) for x in task.batches("train", cfg.batch_size, **options)]
            if not batches:
                raise TrainingError("the training split yields no batch: is it empty?")
            while st.batch_in_epoch < len(batches) and st.step < cfg.max_steps and not out_of_time:
                x, indices = batches[st.batch_in_epoch]
                x = x.to(device, non_blocking=True)
                st.batch_in_epoch += 1
                try:
                    with within_step.listening():
                        terms = model.learning_step(
                            x,
                            optimizers,
                            generator=langevin_rng,
                            grad_hook=grad_hook,
                            indices=indices,
                        )
                except NonFiniteError as error:
                    consecutive_skips += 1
                    if cfg.nonfinite == "stop" or consecutive_skips > MAX_CONSECUTIVE_SKIPS:
                        where = self._save_checkpoint(task, model, optimizers, langevin_rng)
                        reason = (
                            f"{error.term} is {error.value} (not finite)"
                            if cfg.nonfinite == "stop"
                            else f"{consecutive_skips} batches in a row were not finite, the last "
                            f"with {error.term} = {error.value}"
                        )
                        raise TrainingError(
                            f"step {st.step + 1}: {reason}; stopped before updating, state "
                            f"saved to {where}. Lower the learning rates or step sizes"
                            + (", or set trainer.nonfinite=skip" if cfg.nonfinite == "stop" else "")
                        ) from error
                    st.skipped += 1
                    if ctx.is_main:
                        say(f"step {st.step + 1}: {error.term} is {error.value}; batch skipped")
                    continue
                consecutive_skips = 0
                st.step += 1
                st.train_seconds = seconds_before + clock() - segment_start
                checkpoint_due = False
                if budget is not None or timed_checkpoints.enabled:  # the same on every rank
                    spent = reduce_values({"seconds": st.train_seconds}, ctx)["seconds"]
                    if budget is not None:  # stop early enough for the final phase to fit
                        done_here = max(st.step - steps_before, 1)
                        if done_here == 1:
                            spent_after_first = spent
                        per_step = (spent - seconds_before) / done_here
                        if done_here >= 2:  # priced without the first step (start-up, compiling)
                            per_step = (spent - spent_after_first) / (done_here - 1)
                        reserve_seconds = min(reserve.seconds(per_step), 0.5 * budget)
                        out_of_time = spent + reserve_seconds >= budget
                    checkpoint_due = timed_checkpoints.due(spent)
                last = st.step == cfg.max_steps or out_of_time
                count += 1
                tokens += int(task.num_target_tokens(x))
                for key, value in terms.items():
                    sums[key] += value
                by_steps = st.step % cfg.log_every == 0 or last
                by_time = not by_steps and self._row_is_due(interval_start)
                if by_steps or by_time:
                    self._check_divergence(model)
                    row = {k: v / count for k, v in sums.items()}
                    elapsed = time.perf_counter() - interval_start
                    row[rate_key] = tokens * ctx.world_size / max(elapsed, 1e-9)
                    row["steps_per_s"] = count / max(elapsed, 1e-9)
                    row = reduce_values(row, ctx)
                    self._log(row, progress, echo=by_time)
                    sums.clear()
                    count, tokens, interval_start = 0, 0, time.perf_counter()
                elif progress is not None:  # the count moves every step; tqdm redraws at most
                    progress.update(st.step - progress.n)  # every 0.1 s
                if budget is not None and progress is not None:
                    # the bar's end is the step the time budget will reach at the present pace
                    # (its ETA is then the budget's), never past max_steps
                    pace = st.step - steps_before
                    left = max(budget - reserve_seconds - st.train_seconds, 0.0)
                    spent_here = max(st.train_seconds - seconds_before, 1e-9)
                    progress.total = min(cfg.max_steps, st.step + round(left * pace / spent_here))
                if has_valid and (st.step % cfg.valid_every == 0 or last):
                    valid_start, limit = clock(), None
                    if out_of_time and budget is not None:  # a budget's last: what fits
                        limit = reserve.batches_that_fit(budget - spent, per_step)
                        if limit < reserve.valid_batches and ctx.is_main:
                            say(
                                f"final validation on {limit} of {reserve.valid_batches} "
                                f"batches, to fit trainer.max_minutes={cfg.max_minutes}"
                            )
                    row = self.validate(task, model, device, progress, max_batches=limit)
                    if limit is not None and limit < reserve.valid_batches:
                        row["valid_partial_batches"] = float(limit)  # not comparable: say so
                    self._log(row, progress)
                    if budget is not None:  # the same on every rank
                        took = reduce_values({"seconds": clock() - valid_start}, ctx)["seconds"]
                        reserve.record_validation(took, limit or reserve.valid_batches)
                    interval_start = time.perf_counter()
                if st.step % cfg.checkpoint_every == 0 or last or checkpoint_due:
                    self._save_checkpoint(task, model, optimizers, langevin_rng)
                if self._signal is not None:
                    where = self._save_checkpoint(task, model, optimizers, langevin_rng)
                    name = signal.Signals(self._signal).name
                    raise Interrupted(
                        f"{name} at step {st.step}: checkpoint saved to {where}; "
                        "continue with resume=auto",
                        exit_code=128 + self._signal,
                    )
            if st.batch_in_epoch >= len(batches):
                st.epoch += 1
                st.batch_in_epoch = 0
                _decay_lr(optimizers, self.recipe)
        if progress is not None:
            progress.close()
        if out_of_time and ctx.is_main:
            say(
                f"trainer.max_minutes={cfg.max_minutes} reached at step {st.step} "
                f"({st.train_seconds:.0f} s of training, {reserve_seconds:.0f} s kept for the "
                "final validation and samples); checkpoint saved"
            )

    def _row_is_due(self, interval_start: float) -> bool:
        """``trainer.log_every_minutes`` have passed since the last metrics row (decided on
        the main process and shared, so every process logs at the same step)."""
        minutes = self.cfg.log_every_minutes
        if minutes is None:
            return False
        due = time.perf_counter() - interval_start >= 60.0 * minutes
        return bool(broadcast_object(due, self.ctx))

    def _check_divergence(self, model: LatentEBM) -> None:
        """Warn once (stderr and a ``diverging`` event in ``metrics.jsonl``) when a parameter
        exceeds :data:`DIVERGED_WEIGHT` in magnitude: the run diverges while staying finite."""
        if self._diverging or not self.ctx.is_main:
            return
        with torch.no_grad():
            sizes = [p.detach().abs().max() for p in model.parameters() if p.numel()]
            largest = float(torch.stack(sizes).max()) if sizes else 0.0
        if largest > DIVERGED_WEIGHT:
            self._diverging = True
            say(
                f"warning: step {self.state.step}: a parameter has reached {largest:.3g} "
                f"(> {DIVERGED_WEIGHT:g}): training is diverging; lower optim.*.lr or the "
                "chains' step sizes"
            )
            self._append_metrics({"event": "diverging", "max_abs_parameter": largest})

    # ------------------------------------------------------------------ validation
    def _valid_batches(self, task: Any) -> list[Any]:
        """The validation batches of this process (the same sentences at every validation)."""
        cfg = self.cfg
        batches = task.batches("valid", cfg.batch_size, seed=0, epoch=0, shuffle=False)
        if cfg.valid_batches is not None:
            batches = batches[: cfg.valid_batches]
        return batches[self.ctx.rank :: self.ctx.world_size]

    def _valid_batch_count(self, task: Any) -> int:
        """The most validation batches any process runs (the main process has the most)."""
        cfg = self.cfg
        total = len(task.batches("valid", cfg.batch_size, seed=0, epoch=0, shuffle=False))
        if cfg.valid_batches is not None:
            total = min(total, cfg.valid_batches)
        return math.ceil(total / self.ctx.world_size)

    def validate(
        self,
        task: Any,
        model: LatentEBM,
        device: torch.device,
        progress: Any = None,
        max_batches: int | None = None,
    ) -> dict[str, float]:
        """Reconstruction NLL of the valid split with posterior samples (K1 steps).

        ``progress``: the training bar, whose label counts the validation batches meanwhile
        (``valid 3/20``), so that a long validation is never a silent bar at 100 %.
        ``max_batches``: only the first this many batches (the last validation of a run whose
        time budget cannot fit them all).

        ``valid_recon_nll`` is ``-log p_beta(x | z^+)`` per sentence in nats (summed over
        tokens incl. ``<eos>``), ``valid_recon_ppl`` is ``exp(total NLL / total tokens)``.
        It is not a likelihood bound of ``log p(x)``; it measures how well the posterior
        chain finds a z that explains x. The chains use a fixed seed, so values are
        comparable across steps, and the training RNG is not disturbed.
        """
        batches = self._valid_batches(task)  # the same sentences for any number of processes
        if max_batches is not None and max_batches < len(batches):
            batches = batches[:max_batches]
        rng = torch.Generator(device)
        rng.manual_seed(12345 + self.ctx.rank)
        was_training = model.training
        model.eval()
        total_nll, total_tokens, total_sentences = 0.0, 0.0, 0.0
        for done, batch in enumerate(batches):
            if progress is not None:
                progress.set_description_str(f"valid {done}/{len(batches)}", refresh=True)
            x = batch.to(device)
            z = model.sample_posterior(x, generator=rng).z
            with torch.no_grad():
                total_nll -= float(model.generator.log_likelihood(x, z).sum())
            total_tokens += int(task.num_target_tokens(x))
            total_sentences += x.shape[0]
        model.train(was_training)
        if progress is not None:
            progress.set_description_str("train", refresh=False)
        sums = reduce_values(
            {"nll": total_nll, "tokens": total_tokens, "sentences": total_sentences},
            self.ctx,
            average=False,
        )
        sentences = max(sums["sentences"], 1.0)
        row = {"valid_recon_nll": sums["nll"] / sentences}
        if hasattr(task, "pad_id"):  # token sequences: a perplexity too
            row["valid_recon_ppl"] = math.exp(min(sums["nll"] / max(sums["tokens"], 1.0), 700.0))
        return row

    # ------------------------------------------------------------------ logging
    def _open_writer(self, run_dir: Path) -> None:
        if not self.cfg.tensorboard:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is a dependency, but keep training without it
            say("tensorboard is not installed: TensorBoard logging is off")
            return
        self._writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=self.state.step)

    def _append_metrics(self, row: dict[str, Any]) -> None:
        """One JSON line in ``metrics.jsonl`` with the step, epoch and wall time."""
        st = self.state
        record = {"step": st.step, "epoch": st.epoch, "time": time.time(), **row}
        assert self.run_dir is not None
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def _log(self, row: dict[str, float], progress: Any, echo: bool = False) -> None:
        """Append a metrics row; show it on the bar, or without one print it every tenth
        row, at validations and when it was logged by time (``echo``)."""
        if not self.ctx.is_main:
            return
        st = self.state
        self._append_metrics(row)
        if self._writer is not None:
            for key, value in row.items():
                self._writer.add_scalar(key, value, st.step)
        if progress is not None:
            progress.n = st.step
            shown = {k: row[k] for k in _BAR_KEYS if k in row}
            progress.set_postfix({k: f"{v:.3g}" for k, v in shown.items()}, refresh=False)
            progress.refresh()
        elif echo or "valid_recon_nll" in row or st.step % (self.cfg.log_every * 10) == 0:
            text = " ".join(f"{k}={v:.4g}" for k, v in row.items())
            say(f"step {st.step}: {text}")

    # ------------------------------------------------------------------ checkpoints
    def _save_checkpoint(
        self,
        task: Any,
        model: LatentEBM,
        optimizers: Optimizers,
        langevin_rng: torch.Generator,
    ) -> Path:
        assert self.run_dir is not None
        rng_states = gather_objects(_rng_state(langevin_rng), self.ctx)
        path = checkpoint_path(self.run_dir, self.state.step)
        if self.ctx.is_main:
            st = self.state
            state = {
                "format": 1,
                "library_version": __version__,
                "step": st.step,
                "epoch": st.epoch,
                "batch_in_epoch": st.batch_in_epoch,
                "train_seconds": st.train_seconds,
                "skipped": st.skipped,
                "world_size": self.ctx.world_size,
                "run_dir": str(self.run_dir),
                "run_id": run_id(self.run_dir),
                "recipe": recipe_to_dict(self.recipe),
                "task_state": task.state_dict(),
                "model": model.state_dict(),
                "optim_generator": optimizers.generator.state_dict(),
                "optim_prior": None if optimizers.prior is None else optimizers.prior.state_dict(),
                "optim_inference": (
                    None if optimizers.inference is None else optimizers.inference.state_dict()
                ),
                "rng": rng_states,
            }
            save_atomic(state, path)
            prune_checkpoints(self.run_dir, self.cfg.keep_checkpoints)
        barrier(self.ctx)
        return path

    def _restore(
        self,
        saved: dict[str, Any],
        source: Path,
        model: LatentEBM,
        optimizers: Optimizers,
        langevin_rng: torch.Generator,
    ) -> None:
        load_weights(model, saved["model"], source)
        load_weights(optimizers.generator, saved["optim_generator"], source, "optim_generator")
        if optimizers.prior is not None and saved.get("optim_prior") is not None:
            load_weights(optimizers.prior, saved["optim_prior"], source, "optim_prior")
        if optimizers.inference is not None and saved.get("optim_inference") is not None:
            load_weights(optimizers.inference, saved["optim_inference"], source, "optim_inference")
        self.state = TrainState(
            step=int(saved["step"]),
            epoch=int(saved["epoch"]),
            batch_in_epoch=int(saved["batch_in_epoch"]),
            skipped=int(saved.get("skipped", 0)),
            train_seconds=float(saved.get("train_seconds", 0.0)),
        )
        rng = saved["rng"]
        if len(rng) == self.ctx.world_size:
            try:
                _set_rng_state(rng[self.ctx.rank], langevin_rng)
            except (KeyError, TypeError, ValueError, RuntimeError) as error:
                raise CheckpointError(f"{source}: damaged checkpoint: rng ({error!r})") from error
        elif self.ctx.is_main:
            say(
                f"checkpoint was written by {len(rng)} process(es), this run has "
                f"{self.ctx.world_size}: random streams restart from the seed"
            )

    def _write_samples(
        self, task: Any, model: LatentEBM, device: torch.device, n: int, echo: bool
    ) -> list[str]:
        rng = torch.Generator(device)
        rng.manual_seed(self.recipe.seed)
        model.eval()
        if echo:
            say(f"drawing {n} samples (prior chain K0={model.prior_chain.n_steps}) ...")
        decode, temperature = self.cfg.sample_decode, self.cfg.sample_temperature
        tokens = model.generate(n, generator=rng, decode=decode, temperature=temperature)
        assert self.run_dir is not None
        suffix = ".png" if hasattr(task, "save_samples") else ".txt"
        name = f"step_{self.state.step:08d}{suffix}"
        stem = unused_path(self.run_dir / "samples" / name).stem  # never replaces samples
        if hasattr(task, "save_samples"):  # images: a PNG grid
            picture = task.save_samples(tokens, self.run_dir / "samples" / stem)
            if echo:
                say(f"{n} samples (prior chain K0={model.prior_chain.n_steps}) -> {picture}")
            return []
        sentences = task.decode(tokens)
        out = self.run_dir / "samples" / f"{stem}.txt"
        with open(out, "x", encoding="utf-8") as handle:  # never replaces earlier samples
            handle.write("\n".join(sentences) + "\n")
        if echo:
            how = decode if decode == "greedy" else f"sampled at temperature {temperature}"
            say(f"{n} samples (prior chain K0={model.prior_chain.n_steps}, {how}) -> {out}")
            for sentence in sentences:
                print(sentence, flush=True)
        return sentences

    # ------------------------------------------------------------------ signals
    def _install_signal_handlers(self) -> None:
        self._previous: dict[int, Any] = {}

        def handler(signum: int, frame: FrameType | None) -> None:
            if self._signal is not None:  # a second signal: stop now
                raise KeyboardInterrupt
            self._signal = signum
            if self.ctx.is_main:
                say(f"\n{signal.Signals(signum).name}: saving a checkpoint after this step ...")

        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread
                self._previous[signum] = signal.signal(signum, handler)

    def _restore_signal_handlers(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


_BAR_KEYS = ("recon_nll", "energy_diff", "valid_recon_nll", "tokens_per_s", "images_per_s")


def _apply_optim_settings(
    saved_recipe: dict[str, Any], recipe: Recipe, optimizers: Optimizers, source: Path
) -> list[str]:
    """Make a restored optimiser follow the recipe it resumes under; return what changed
    (:func:`_optim_changes`; a checkpoint whose stored ``optim`` settings are damaged is one
    :class:`CheckpointError` naming ``source``)."""
    try:
        return _optim_changes(saved_recipe, recipe, optimizers)
    except (KeyError, TypeError, ValueError, AttributeError, ZeroDivisionError) as error:
        raise CheckpointError(f"{source}: damaged checkpoint: recipe.optim ({error!r})") from error


def _optim_changes(
    saved_recipe: dict[str, Any], recipe: Recipe, optimizers: Optimizers
) -> list[str]:
    """Make a restored optimiser follow the recipe it resumes under; return what changed.

    Adam's moment estimates come from the checkpoint, but ``optim.*.lr``, ``betas`` and
    ``weight_decay`` are the recipe's: a new ``lr`` replaces the old one with the per-epoch
    decay already applied kept (``lr_new * current / lr_old``). Unchanged settings leave the
    restored state bit for bit, so a resumed run equals an uninterrupted one.
    """
    saved_optim = saved_recipe.get("optim") or {}
    pairs = [("generator", optimizers.generator), ("prior", optimizers.prior)]
    pairs.append(("inference", optimizers.inference))
    changes = []
    for name, optimizer in pairs:
        old = saved_optim.get(name)
        if optimizer is None or not isinstance(old, dict):
            continue
        new = getattr(recipe.optim, name)
        if float(old.get("lr", new.lr)) != new.lr:
            for group in optimizer.param_groups:
                group["lr"] = new.lr * group["lr"] / float(old["lr"])
            changes.append(f"optim.{name}.lr {old['lr']} -> {new.lr} applied")
        if tuple(old.get("betas", new.betas)) != tuple(new.betas):
            for group in optimizer.param_groups:
                group["betas"] = tuple(new.betas)
            changes.append(f"optim.{name}.betas {list(old['betas'])} -> {list(new.betas)} applied")
        if float(old.get("weight_decay", new.weight_decay)) != new.weight_decay:
            for group in optimizer.param_groups:
                group["weight_decay"] = new.weight_decay
            changes.append(
                f"optim.{name}.weight_decay {old['weight_decay']} -> {new.weight_decay} applied"
            )
    return changes


def _tied_to_tokens(parts: list[str] | None) -> bool:
    """Whether copying ``parts`` (None: all) ties the new run to the source's tokenizer."""
    return parts is None or "generator" in parts or "inference" in parts


def _parts_to_copy(model: LatentEBM, weights: dict[str, Any], parts: list[str] | None) -> list[str]:
    """``trainer.init_parts``, or (None) every part ``model`` has that ``weights`` cover."""
    if parts is not None:
        return list(parts)
    return [
        part
        for part in MODEL_PARTS
        if getattr(model, part, None) is not None
        and len(getattr(model, part).state_dict()) > 0  # a Gaussian prior has nothing to copy
        and any(k.startswith(f"{part}.") for k in weights)
    ]


class ChainStepLabel:
    """Labels the training bar with the Langevin step inside a training step once that step
    has run for ``after_seconds`` (a first PTB step can take half a minute on a loaded CPU:
    the bar would sit still), at most once a second; the label is reset after the step."""

    def __init__(self, progress: Any, after_seconds: float = 2.0) -> None:
        self.progress, self.after = progress, after_seconds
        self.started = self.shown = 0.0
        self.labelled = False

    @contextlib.contextmanager
    def listening(self) -> Any:
        if self.progress is None:
            yield
            return
        self.started, self.labelled = time.perf_counter(), False
        with reporting_within(self.report):
            yield
        if self.labelled:
            self.progress.set_description_str("train", refresh=False)

    def report(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if now - self.started >= self.after and now - self.shown >= 1.0:
            self.progress.set_description_str(f"train (chain {done}/{total})", refresh=True)
            self.shown, self.labelled = now, True


def _progress(total: int | None, initial: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="it", dynamic_ncols=True)


def _has_split(task: Any, split: str) -> bool:
    try:
        return task.num_sentences(split) > 0
    except ValueError:
        return False


def _decay_lr(optimizers: Optimizers, recipe: Recipe) -> None:
    """Per-epoch learning-rate decay (``optim.*.lr_decay``)."""
    pairs = [(optimizers.generator, recipe.optim.generator.lr_decay)]
    if optimizers.prior is not None:
        pairs.append((optimizers.prior, recipe.optim.prior.lr_decay))
    if optimizers.inference is not None:
        pairs.append((optimizers.inference, recipe.optim.inference.lr_decay))
    for optimizer, decay in pairs:
        if decay != 1.0:
            for group in optimizer.param_groups:
                group["lr"] *= decay


def _rank_seed(seed: int, rank: int, salt: int) -> int:
    return (seed * 1_000_003 + rank * 7919 + salt) % (2**63)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _rng_state(langevin_rng: torch.Generator) -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": [
            np_state[0],
            np_state[1].tolist(),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "langevin": langevin_rng.get_state(),
    }


def _set_rng_state(state: dict[str, Any], langevin_rng: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(_to_tuple(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    langevin_rng.set_state(state["langevin"])


def _to_tuple(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_to_tuple(v) for v in value)
    return value


def reload_recipe(saved: dict[str, Any], source: Path) -> Recipe:
    """The recipe stored in a checkpoint."""
    try:
        return recipe_from_dict(saved["recipe"], source=str(source))
    except KeyError as error:
        raise CheckpointError(f"{source}: checkpoint has no recipe") from error
