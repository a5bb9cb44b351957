"""``Trainer``: runs Algorithm 1 over a dataset with logging, validation and checkpoints.

A run lives in ``runs/<recipe>/<timestamp>/`` (or ``trainer.run_dir``) and holds
``config.yaml`` (the resolved recipe), ``metrics.jsonl`` (one JSON object per logged step),
TensorBoard event files, ``checkpoints/step_*.pt`` and ``samples/``. A run directory is never
overwritten: continuing one is asked for with ``trainer.resume=auto`` or a checkpoint path.

The trainer's parts live beside it: checkpoints and resuming (:mod:`latentebm.train_checkpoint`),
random streams (:mod:`~latentebm.train_rng`), the time budget (:mod:`~latentebm.train_budget`),
validation, samples and records (``train_validation``, ``train_samples``, ``train_log``) and the
progress bar (:mod:`latentebm.progress_bars`).
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

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
    checkpoint_path,
    load_checkpoint,
    prune_checkpoints,
    require_fields,
    save_atomic,
)
from latentebm.config import Recipe, recipe_to_yaml
from latentebm.console_log import ConsoleLog
from latentebm.distributed import (
    DistContext,
    average_gradients,
    barrier,
    broadcast_object,
    broadcast_parameters,
    gather_objects,
    init_distributed,
    max_over_ranks,
    reduce_values,
    shutdown,
)
from latentebm.errors import Interrupted
from latentebm.model import LatentEBM, NonFiniteError, Optimizers
from latentebm.progress_bars import ChainStepLabel, training_bar
from latentebm.runs import (
    TrainingError,
    claim_run_dir,
    open_resume,
    record_recipe,
    record_segment,
    release_run_dir,
    say,
)
from latentebm.task_contract import optional_member
from latentebm.train_budget import FinalPhaseReserve, TimedCheckpoints
from latentebm.train_checkpoint import (
    RESUME_FIELDS,
    TrainState,
    apply_resumed_settings,
    check_compatible,
    checkpoint_contents,
    parts_to_copy,
    reload_recipe,
    restore_random_streams,
    restore_weights,
    saved_state,
    tied_to_tokens,
)
from latentebm.train_log import MetricsLog
from latentebm.train_rng import rank_seed, rng_state, seed_everything
from latentebm.train_samples import write_samples
from latentebm.train_validation import has_split, valid_batch_count, valid_batches, validate
from latentebm.warm_start import copy_parts, freeze_parts, read_source

__all__ = [  # helpers moved to progress_bars and train_*; those listed still importable here
    "CONSOLE_LOG",
    "DIVERGED_WEIGHT",
    "MAX_CONSECUTIVE_SKIPS",
    "RESUME_FIELDS",
    "ChainStepLabel",
    "Interrupted",
    "TrainState",
    "Trainer",
    "TrainingError",
    "reload_recipe",
]

_T = TypeVar("_T")

CONSOLE_LOG = "console.log"
"""What the main process printed while it trained (:mod:`latentebm.console_log`)."""
MAX_CONSECUTIVE_SKIPS = 10
DIVERGED_WEIGHT = 1e6
"""A parameter larger than this in magnitude flags the run as diverging (a warning and a
``diverging`` event in ``metrics.jsonl``; training goes on). Trained weights of these models are
O(1)-O(10); a run whose weights grow without bound can stay finite while its samples and
validation NLL become meaningless."""


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
        self._signal_at = 0.0
        self._metrics: MetricsLog | None = None  # RUN/metrics.jsonl, on the main process
        self._diverging = False
        self._prior_chain_warned = False
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
            if self._metrics is not None:
                self._metrics.close()
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
            check_compatible(self.recipe, saved["recipe"], resume_from)

        source: tuple[Path, dict[str, Any]] | None = None
        if saved is None and cfg.init_from is not None:  # a new run from another's weights
            source = read_source(cfg.init_from)
        torch.manual_seed(self.recipe.seed)  # the same initial weights on every rank
        if saved is not None:
            assert resume_from is not None
            task = build_task_from_checkpoint(self.recipe, saved["task_state"], resume_from)
        elif source is not None and tied_to_tokens(cfg.init_parts):
            task = build_task_from_checkpoint(self.recipe, source[1]["task_state"], source[0])
        else:
            task = build_task(self.recipe, state=None)
        model = build_model(self.recipe, task)
        init_parts: list[str] = []
        source_path: Path | None = None
        if source is not None:
            source_path = source[0]
            init_parts = parts_to_copy(model, source[1]["model"], cfg.init_parts)
            copy_parts(model, source[1]["model"], init_parts, source_path)
            source = None  # the weights are copied: do not hold the file's tensors for the run
        freeze_parts(model, cfg.freeze)
        model = model.to(device)
        optimizers = build_optimizers(self.recipe, model)
        langevin_rng = torch.Generator(device)
        langevin_rng.manual_seed(rank_seed(self.recipe.seed, ctx.rank, salt=1))
        seed_everything(rank_seed(self.recipe.seed, ctx.rank, salt=2))
        optim_changes: list[str] = []
        if saved is not None:
            assert resume_from is not None
            self._restore(saved, resume_from, model, optimizers, langevin_rng)
            optim_changes = apply_resumed_settings(
                saved["recipe"], self.recipe, optimizers, resume_from
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
            self._metrics = MetricsLog(
                run_dir, tensorboard=cfg.tensorboard, step=self.state.step, log_every=cfg.log_every
            )
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
            write_samples(
                task,
                model,
                device,
                run_dir,
                self.state.step,
                cfg.samples_at_end,
                seed=self.recipe.seed,
                decode=cfg.sample_decode,
                temperature=cfg.sample_temperature,
                echo=True,
            )
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
        has_valid = has_split(task, "valid")
        # with a time budget the bar's end is unknown until the pace is (set at every step)
        total = None if cfg.max_minutes is not None else cfg.max_steps
        progress = training_bar(total, st.step, enabled=cfg.progress and ctx.is_main)
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
            valid_batch_count(task, cfg.batch_size, cfg.valid_batches, ctx)
            if has_valid and budget is not None
            else 0,
            math.ceil(cfg.samples_at_end / cfg.batch_size),  # main only, all wait
        )
        reserve_seconds, spent_after_first = 0.0, st.train_seconds
        out_of_time = False
        indexed = model.posterior_memory is not None  # persistent posterior chains
        # tokens_per_s, or what the task counts instead (images_per_s)
        rate_key = f"{optional_member(task, 'throughput_unit')}_per_s"
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
                    # every process skips this step; the one whose batch caused it says so too
                    if ctx.is_main or error.own_batch:
                        whose = (
                            f" (process {ctx.rank}'s batch)"
                            if ctx.enabled and error.own_batch
                            else ""
                        )
                        say(
                            f"step {st.step + 1}: {error.term} is {error.value}{whose}; "
                            "batch skipped"
                        )
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
                    self._check_prior_chain_step(model, row)
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
                # every rank stops at the same step (the checkpoint gathers from all of them),
                # even when the signal reached them on either side of this line
                stop = max_over_ranks(self._signal or 0, ctx)
                if stop:
                    where = self._save_checkpoint(task, model, optimizers, langevin_rng)
                    name = signal.Signals(stop).name
                    again = " with the same processes" if ctx.enabled else ""
                    raise Interrupted(
                        f"{name} at step {st.step}: checkpoint saved to {where}; "
                        f"continue with resume=auto{again}",
                        exit_code=128 + stop,
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

    def _check_prior_chain_step(self, model: LatentEBM, row: dict[str, float]) -> None:
        """Warn once (stderr and a ``prior_chain_too_wide`` event in ``metrics.jsonl``) when a
        row's ``prior_grad_norm`` says the prior chain samples at least twice the variance of a
        Gaussian with the curvature it meets (:mod:`latentebm.chain_step`): eq. (10) of Pang et
        al. (2020) then sharpens the energy until it runs away from its own chain, as on PTB
        under Table 5's a0 = 0.4 (docs/RESULTS.md 12c). Training goes on. Once per process: a
        resumed run that is still too wide warns (and records the event) again."""
        from latentebm.chain_step import rms_step_size, step_index, too_wide_advice

        norm = row.get("prior_grad_norm")
        chain = model.prior_chain
        if (
            self._prior_chain_warned
            or not self.ctx.is_main
            or norm is None
            or not math.isfinite(norm)
            or not chain.noise
            or chain.noise_factor <= 0
        ):
            return
        step_size = rms_step_size([chain.step_size_at(k) for k in range(max(chain.n_steps, 1))])
        index = step_index(step_size, norm, model.z_dim, chain.noise_factor)
        if index.too_wide:
            self._prior_chain_warned = True
            scheduled = chain.step_schedule is not None
            advice = too_wide_advice(index, step_size, scheduled=scheduled)
            say(f"warning: step {self.state.step}: {advice}; see latentebm diagnose")
            self._append_metrics(
                {
                    "event": "prior_chain_too_wide",
                    "rho": index.rho,
                    "variance_inflation": index.variance_inflation,
                }
            )

    # ------------------------------------------------------------------ validation
    def validate(
        self,
        task: Any,
        model: LatentEBM,
        device: torch.device,
        progress: Any = None,
        max_batches: int | None = None,
    ) -> dict[str, float]:
        """Reconstruction NLL of the valid split with posterior samples (K1 steps): see
        :func:`latentebm.train_validation.validate`. ``progress``: the training bar, labelled
        meanwhile. ``max_batches``: only the first this many batches (the last validation of a
        run whose time budget cannot fit them all)."""
        cfg = self.cfg
        # the same sentences for any number of processes
        batches = valid_batches(task, cfg.batch_size, cfg.valid_batches, self.ctx)
        if max_batches is not None and max_batches < len(batches):
            batches = batches[:max_batches]
        return validate(task, model, device, batches, self.ctx, progress)

    # ------------------------------------------------------------------ logging
    def _append_metrics(self, row: dict[str, Any]) -> None:
        """One JSON line in ``metrics.jsonl`` with the step, epoch and wall time."""
        assert self._metrics is not None
        self._metrics.append(row, self.state.step, self.state.epoch)

    def _log(self, row: dict[str, float], progress: Any, echo: bool = False) -> None:
        """Record a metrics row (:meth:`MetricsLog.log`), on the main process."""
        if self.ctx.is_main:
            assert self._metrics is not None
            self._metrics.log(row, self.state.step, self.state.epoch, progress, echo)

    # ------------------------------------------------------------------ checkpoints
    def _save_checkpoint(
        self,
        task: Any,
        model: LatentEBM,
        optimizers: Optimizers,
        langevin_rng: torch.Generator,
    ) -> Path:
        assert self.run_dir is not None
        rng_states = gather_objects(rng_state(langevin_rng), self.ctx)
        path = checkpoint_path(self.run_dir, self.state.step)
        if self.ctx.is_main:
            state = checkpoint_contents(
                self.state,
                world_size=self.ctx.world_size,
                run_dir=self.run_dir,
                recipe=self.recipe,
                task=task,
                model=model,
                optimizers=optimizers,
                rng_states=rng_states,
            )
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
        restore_weights(saved, source, model, optimizers)
        self.state = saved_state(saved)
        restore_random_streams(saved["rng"], source, langevin_rng, self.ctx)

    # ------------------------------------------------------------------ signals
    def _install_signal_handlers(self) -> None:
        self._previous: dict[int, Any] = {}

        def handler(signum: int, frame: FrameType | None) -> None:
            now = time.monotonic()
            if self._signal is not None:
                if signum == signal.SIGTERM == self._signal and now - self._signal_at < 2.0:
                    return  # the same request twice: a job manager signals every process
                raise KeyboardInterrupt  # a second signal: stop now
            self._signal, self._signal_at = signum, now
            if self.ctx.is_main:
                say(f"\n{signal.Signals(signum).name}: saving a checkpoint after this step ...")

        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread
                self._previous[signum] = signal.signal(signum, handler)

    def _restore_signal_handlers(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


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
