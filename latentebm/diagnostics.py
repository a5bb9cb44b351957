"""Learning diagnostics of a run (Nijkamp, Hill, Han, Zhu and Wu (2020), "On the Anatomy of
MCMC-Based Maximum Likelihood Learning of Energy-Based Models"): ``latentebm diagnose RUN_DIR``.

Nijkamp et al. (2020) read MCMC-based ML learning through two quantities, both logged by the
trainer in ``metrics.jsonl``:

* ``d_t`` (``energy_diff``): the difference of the mean energy on positive samples (posterior
  chain, ``z^+``) and on negative samples (prior chain, ``z^-``). It should oscillate around 0.
  *Strong oscillation* (Nijkamp et al. 2020, appendix D): the sign of ``d_t`` tends to flip from one
  update to the next (a strongly negative short-lag autocorrelation; expansion follows
  contraction), typical of non-convergent learning with a high learning rate or Adam.
  *Weak oscillation*: the sign of ``d_t`` does not depend on recent updates.
* ``r_t`` (``prior_grad_norm`` / ``posterior_grad_norm``): the mean gradient magnitude along
  each chain, which should settle at a value balanced with the Langevin noise.

Nijkamp et al. (2020) also check what the short-run chain is *not*: running the prior chain far
past its training length ``K0`` shows whether ``p_alpha`` has a meaningful steady state (energy
and log density along a long chain, as there and in Fig. 4 of Pang, Han, Nijkamp, Zhu and Wu
(2020), "Learning Latent Space Energy-Based Prior Model"). :func:`long_prior_chain` does this.

Note that a ``metrics.jsonl`` row holds the *mean* of each term over the ``log_every`` steps
before it, so with ``log_every > 1`` the step-to-step oscillation of ``d_t`` is smoothed out;
log every step (``trainer.log_every=1``) for a faithful oscillation diagnosis.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentebm.chain_records import chain_record_steps, chain_summary, long_prior_chain
from latentebm.plotting import PLOT_EXTRA_HINT, PlotDependencyError, fresh_dir, optional_pyplot
from latentebm.progress import logged_within
from latentebm.run_metrics import read_metrics

logger = logging.getLogger(__name__)

__all__ = [  # the chain records and plot helpers moved out; still importable from here
    "PlotDependencyError",
    "autocorrelation",
    "chain_record_steps",
    "chain_summary",
    "diagnose",
    "fresh_dir",
    "long_prior_chain",
    "nijkamp_scale",
    "oscillation_summary",
    "prior_chain_step",
    "read_metrics",
    "rolling_mean",
]

#: lag-1 autocorrelation at or below which (with frequent sign changes) oscillation is "strong".
STRONG_LAG1 = -0.3
#: fraction of sign changes of consecutive ``d_t`` at or above which oscillation may be "strong".
STRONG_SIGN_CHANGES = 0.5
#: the PNG files :func:`diagnose` writes (``long_chain.png`` only when the long chain runs).
PLOT_FILES = ("d_t.png", "r_t.png", "autocorrelation.png", "long_chain.png")


# --------------------------------------------------------------------------------- metrics
# ------------------------------------------------------------------------ oscillation of d_t
def autocorrelation(values: Sequence[float], max_lag: int) -> np.ndarray:
    """Normalised sample autocorrelation ``rho(0..max_lag)`` of a series (Nijkamp et al. 2020,
    appendix D).

    The standard (biased) estimator, with ``m`` the mean and ``n`` the length::

        rho(k) = sum_{t=0}^{n-1-k} (x_t - m)(x_{t+k} - m) / sum_{t=0}^{n-1} (x_t - m)^2

    so ``rho(0) = 1`` and, e.g., the alternating series ``+1, -1, ...`` of even length ``n``
    gives ``rho(1) = -(n-1)/n`` and ``rho(2) = (n-2)/n``. Lags ``>= n`` are 0. A constant series
    has no variance: ``rho(0) = 1`` and every other lag is 0.

    Returns:
        an array of ``max_lag + 1`` floats.

    Raises:
        ValueError: ``values`` is empty or ``max_lag < 0``.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError("autocorrelation needs a non-empty 1-D series")
    if max_lag < 0:
        raise ValueError(f"max_lag must be >= 0, got {max_lag}")
    out = np.zeros(max_lag + 1)
    out[0] = 1.0
    centred = x - x.mean()
    denom = float(np.dot(centred, centred))
    if denom <= 0.0 or not math.isfinite(denom):
        return out
    n = x.size
    for k in range(1, min(max_lag, n - 1) + 1):
        out[k] = float(np.dot(centred[: n - k], centred[k:])) / denom
    return out


def oscillation_summary(d_t: Sequence[float]) -> dict[str, Any]:
    """Summary statistics of ``d_t`` and a one-word oscillation label (Nijkamp et al. 2020, app. D).

    Keys: ``n``, ``mean``, ``std`` (population), ``sign_change_fraction`` (the fraction of
    consecutive pairs whose signs differ, zeros counting as no sign), ``lag1_autocorrelation``
    (:func:`autocorrelation` at lag 1) and ``label``:

    * ``"strong"``: lag-1 autocorrelation ``<= -0.3`` *and* sign-change fraction ``>= 0.5``,
      i.e. the sign of ``d_t`` tends to flip after each update (strong oscillation: expansion
      follows contraction). For i.i.d. noise around 0 the lag-1 autocorrelation is about 0
      (standard error ``1/sqrt(n)``) and the sign-change fraction about 0.5;
    * ``"weak"``: otherwise (the sign of ``d_t`` does not depend on the previous update, or
      ``d_t`` drifts smoothly);
    * ``"insufficient"``: fewer than 4 values.

    Raises:
        ValueError: ``d_t`` is empty.
    """
    x = np.asarray(d_t, dtype=np.float64)
    if x.size == 0:
        raise ValueError("oscillation_summary needs at least one d_t value")
    signs = np.sign(x)
    if x.size > 1:
        changes = (signs[1:] * signs[:-1]) < 0
        sign_change_fraction = float(changes.mean())
    else:
        sign_change_fraction = 0.0
    lag1 = float(autocorrelation(x, 1)[1])
    if x.size < 4:
        label = "insufficient"
    elif lag1 <= STRONG_LAG1 and sign_change_fraction >= STRONG_SIGN_CHANGES:
        label = "strong"
    else:
        label = "weak"
    return {
        "n": int(x.size),
        "mean": float(x.mean()),
        "std": float(x.std()),
        "sign_change_fraction": sign_change_fraction,
        "lag1_autocorrelation": lag1,
        "label": label,
    }


def rolling_mean(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing mean over up to ``window`` values (shorter at the start), same length as input."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return x
    window = max(1, int(window))
    cumsum = np.concatenate([[0.0], np.cumsum(x)])
    idx = np.arange(1, x.size + 1)
    start = np.maximum(idx - window, 0)
    return (cumsum[idx] - cumsum[start]) / (idx - start)


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pairs = [(int(r["step"]), float(r[key])) for r in rows if key in r]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _latent_usage(
    run_dir: Path, n_examples: int, seed: int, device: str | torch.device = "cpu"
) -> dict[str, Any] | None:
    """Active units, I(x; z) and the reconstruction gain on ``n_examples`` examples spread over
    the length-sorted valid split (train without one); None without a checkpoint or a latent
    variable."""
    from latentebm.checkpoint import CheckpointError
    from latentebm.evaluate import length_sorted_batches
    from latentebm.metrics.likelihood_eval import (
        LikelihoodEvalSettings,
        evaluate_likelihood_metrics,
        spread_examples,
    )
    from latentebm.pretrained import load

    try:
        pretrained = load(run_dir, device=device)
    except (CheckpointError, FileNotFoundError):
        return None
    model, task = pretrained.model, pretrained.task
    if model.z_dim == 0:
        return None
    split = "valid" if "valid" in task.splits else "train"
    batches = spread_examples(length_sorted_batches(task, split, 64), n_examples)
    generator = torch.Generator(model.device).manual_seed(seed)
    settings = LikelihoodEvalSettings(usage_examples=max(n_examples, 2))
    entry = evaluate_likelihood_metrics(
        model, batches, task.num_target_tokens, ["latent_usage"], settings, generator=generator
    )["latent_usage"]
    return {**entry, "split": split, "checkpoint_step": pretrained.step}


def _model_config(run_dir: Path) -> dict[str, Any] | None:
    """The ``model`` section of the run's ``config.yaml``, or None when the file does not say
    (or cannot be read: the diagnosis goes on without what needs it)."""
    from latentebm.config import RecipeError, read_yaml

    config = run_dir / "config.yaml"
    if not config.is_file():
        return None
    try:
        model = read_yaml(config, str(config))["model"]
    except (RecipeError, OSError, KeyError, TypeError):
        return None
    return model if isinstance(model, dict) else None


def _step_sizes(chain: dict[str, Any]) -> list[float]:
    """The step size ``a_k`` of each of a chain's steps (its ``step_schedule``, last value
    repeated, or its ``step_size``)."""
    n = max(int(chain.get("n_steps", 1)), 1)
    schedule = chain.get("step_schedule") or [chain["step_size"]]
    return [float(schedule[min(k, len(schedule) - 1)]) for k in range(n)]


def _chain_drifts(model: dict[str, Any] | None) -> tuple[float, float] | None:
    """Mean ``a_k^2 / 2`` of the prior and the posterior chain of a run's model config (the
    drift per unit of ``grad log pi``), or None when it does not say."""
    try:
        chains = [model["prior_chain"], model["posterior_chain"]]  # type: ignore[index]
        drifts = [float(np.mean([0.5 * a * a for a in _step_sizes(c)])) for c in chains]
    except (KeyError, TypeError, ValueError, AttributeError):  # e.g. prior_chain: null
        return None
    return drifts[0], drifts[1]


def prior_chain_step(
    prior_r: Sequence[float], model: dict[str, Any] | None
) -> dict[str, Any] | None:
    """Is the prior chain's step small enough for the energy it meets?
    (:mod:`latentebm.chain_step`). From the logged ``prior_grad_norm`` of each row (non-finite
    rows left out) and the model config's ``z_dim`` and ``prior_chain`` (a schedule counts as
    its root mean square step), the step index ``rho`` of the first and the last tenth of the
    rows and its largest row, and for the last tenth ``a^2`` as a share of the stability bound
    and the variance inflation; ``advice`` says what to change when the chain samples too
    wide. None without logged gradient norms, a readable config, or a chain with noise."""
    from latentebm.chain_step import rms_step_size, step_index, too_wide_advice

    norms = [float(g) for g in prior_r if math.isfinite(g)]
    chain = model.get("prior_chain") if isinstance(model, dict) else None
    if not norms or not isinstance(chain, dict) or chain.get("noise", True) is False:
        return None
    try:
        sizes = _step_sizes(chain)
        step_size = rms_step_size(sizes)
        noise_factor = float(chain.get("noise_factor", 1.0))
        z_dim = int(model["z_dim"])  # type: ignore[index]
        rows = [step_index(step_size, g, z_dim, noise_factor) for g in norms]
    except (KeyError, TypeError, ValueError):
        return None
    window = max(1, len(rows) // 10)
    first = float(np.mean([r.rho for r in rows[:window]]))
    last = step_index(step_size, float(np.mean(norms[-window:])), z_dim, noise_factor)
    scheduled = bool(chain.get("step_schedule"))
    return {
        "step_size": step_size,
        "noise_factor": noise_factor,
        "z_dim": z_dim,
        "rows_per_window": window,
        "rho_first": first,
        "rho_last": last.rho,
        "rho_max": max(r.rho for r in rows),
        "bound_fraction_last": last.bound_fraction,
        "variance_inflation_last": last.variance_inflation,
        "too_wide": last.too_wide,
        "advice": too_wide_advice(last, step_size, scheduled=scheduled) if last.too_wide else None,
    }


def nijkamp_scale(
    d_t: Sequence[float],
    prior_r: Sequence[float],
    posterior_r: Sequence[float],
    *,
    shortrun: bool,
    drifts: tuple[float, float] | None,
) -> dict[str, Any]:
    """``d_t`` and ``r_t`` in the sign and scale of Nijkamp et al. (2020, "On the anatomy of
    MCMC-based maximum likelihood learning of energy-based models", appendix A): ``d_t =
    E_data[U] - E_samples[U]`` for the energy ``U`` (density ``exp(-U)``), and ``r_t`` the mean
    length of one drift step ``||(eps^2/2) grad U||``.

    The latent trainer logs ``energy_diff = mean f(z+) - mean f(z-)`` for the tilt ``f = -U``
    of the learned prior (the fixed reference is not learned, so it is left out): their ``d_t``
    is ``-energy_diff``; it logs ``mean ||grad log pi||``, so their ``r_t`` is that times the
    chain's ``a^2 / 2`` (the mean over the steps for a ``step_schedule``). The short-run trainer
    logs ``d_t = mean f(x) - mean f(x^-)`` (their ``d_t`` is its negative) and already logs
    ``r_t`` as a drift length.
    """
    prior_scale, posterior_scale = (1.0, 1.0) if shortrun or drifts is None else drifts
    d = [-v for v in d_t]
    return {
        "d_t_mean": _mean(d),
        "d_t_std": float(np.std(d)) if d else None,
        "r_t_prior": None if not prior_r else prior_scale * float(np.mean(prior_r)),
        "r_t_posterior": None if not posterior_r else posterior_scale * float(np.mean(posterior_r)),
        "scaled": shortrun or drifts is not None,
        "mapping": "d_t = -(logged d_t / energy_diff); r_t = logged grad norm x a^2/2"
        + (" (short-run: as logged)" if shortrun else ""),
    }


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def diagnose(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    n_chains: int = 64,
    n_steps: int = 2000,
    seed: int = 0,
    record_every: int | None = None,
    usage_examples: int = 100,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Diagnose a run (Nijkamp et al. 2020): oscillation of ``d_t``, ``r_t``, a long prior chain,
    and whether the decoder uses z (latent usage on the first ``usage_examples`` examples of the
    valid split, or of train without one; 0: skipped). The model runs on ``device`` (``auto``:
    a GPU when there is one).

    Writes into ``out_dir`` (default ``RUN_DIR/diagnostics``; if it already holds files, the
    first free ``...-2``, ``...-3`` sibling, see :func:`fresh_dir`):

    * ``d_t.png``: ``d_t`` over the training steps with a rolling mean;
    * ``r_t.png``: ``r_t`` of the prior and the posterior chain;
    * ``autocorrelation.png``: the autocorrelation of ``d_t``;
    * ``long_chain.png``: mean energy and log density along a long prior chain of ``n_steps``
      steps (needs a checkpoint; skipped when ``n_steps == 0``);
    * ``diagnostics.json``: what this function returns.

    Args:
        run_dir: a run directory with ``metrics.jsonl`` (and checkpoints for the long chain).
        out_dir: where to write; see above.
        n_chains: chains of the long prior run.
        n_steps: length of the long prior chain (0: no long chain).
        seed: seed of the long chain's initial states and noise.
        record_every: evaluate the long chain every this many steps (default ``n_steps/200``).
        usage_examples: examples for :mod:`latentebm.metrics.latent_usage` (0: none).

    Returns:
        a dict with ``run_dir``, ``out_dir``, ``files``, ``n_train_rows``, ``n_valid_rows``,
        ``log_every``, ``oscillation`` (:func:`oscillation_summary` of ``d_t``, or ``None``
        for a model without an energy prior), ``autocorrelation``, ``r_t`` (means of
        ``prior``/``posterior``, as logged), ``nijkamp`` (``d_t`` and ``r_t`` in Nijkamp et al.'s
        sign and scale, :func:`nijkamp_scale`), ``prior_chain_step`` (is the prior chain's
        step small enough for its energy? :func:`prior_chain_step`, or ``None``),
        ``valid_recon_nll`` (last) and ``long_chain``
        (:func:`long_prior_chain` plus ``checkpoint`` and ``checkpoint_step``, or ``None``)
        and ``plots_skipped``.

    Raises:
        ValueError: no usable ``metrics.jsonl``, or no training row.

    Without matplotlib the numbers and ``diagnostics.json`` are still written, without the
    PNGs; ``plots_skipped`` in the result then says why (else ``None``).
    """
    run_dir = Path(run_dir)
    train, valid = read_metrics(run_dir)
    if not train:
        raise ValueError(f"{run_dir / 'metrics.jsonl'}: no training rows")
    plt = optional_pyplot()  # None: the numbers without the plots

    from latentebm.runs import run_family

    shortrun = run_family(run_dir) == "shortrun"  # data-space EBM: d_t, r_t of its one chain
    d_steps, d_t = _series(train, "d_t" if shortrun else "energy_diff")
    prior_steps, prior_r = _series(train, "r_t" if shortrun else "prior_grad_norm")
    post_steps, post_r = _series(train, "posterior_grad_norm")
    oscillation = oscillation_summary(d_t) if d_t else None
    max_lag = max(1, min(50, len(d_t) - 1)) if d_t else 1
    acf = autocorrelation(d_t, max_lag) if d_t else np.zeros(0)
    log_every = int(np.median(np.diff(d_steps))) if len(d_steps) > 1 else None

    long_chain: dict[str, Any] | None = None
    if n_steps > 0 and shortrun:
        from latentebm.shortrun import load_shortrun
        from latentebm.shortrun.tools import long_chain as long_data_chain

        model = load_shortrun(run_dir)
        with logged_within(logger, f"long chain ({n_chains} chains)"):
            long_chain = long_data_chain(
                model,
                n_chains=n_chains,
                n_steps=n_steps,
                record_every=record_every if record_every is not None else max(1, n_steps // 200),
                generator=torch.Generator(model.device).manual_seed(seed),
            )
    elif n_steps > 0:
        from latentebm.pretrained import load

        pretrained = load(run_dir, device=device)
        generator = torch.Generator(pretrained.model.device).manual_seed(seed)
        every = record_every if record_every is not None else max(1, n_steps // 200)
        with logged_within(logger, f"long prior chain ({n_chains} chains)"):
            long_chain = long_prior_chain(
                pretrained.model,
                n_chains=n_chains,
                n_steps=n_steps,
                record_every=every,
                generator=generator,
            )
        long_chain["checkpoint"] = str(pretrained.checkpoint)
        long_chain["checkpoint_step"] = pretrained.step
    usage = None
    if usage_examples > 0 and not shortrun:
        with logged_within(logger, "latent usage (chains and mode searches)"):
            usage = _latent_usage(run_dir, usage_examples, seed, device)

    out = fresh_dir(out_dir if out_dir is not None else run_dir / "diagnostics")
    files: list[str] = []
    plots_skipped = None
    if plt is None:
        plots_skipped = f"matplotlib is missing: {PLOT_EXTRA_HINT}"
    else:
        files = _draw_plots(
            plt,
            out,
            shortrun=shortrun,
            d_steps=d_steps,
            d_t=d_t,
            oscillation=oscillation,
            prior_steps=prior_steps,
            prior_r=prior_r,
            post_steps=post_steps,
            post_r=post_r,
            acf=acf,
            long_chain=long_chain,
        )

    model_config = None if shortrun else _model_config(run_dir)
    summary: dict[str, Any] = {
        "run_dir": str(run_dir),
        "out_dir": str(out),
        "files": files + ["diagnostics.json"],
        "n_train_rows": len(train),
        "n_valid_rows": len(valid),
        "log_every": log_every,
        "oscillation": oscillation,
        "autocorrelation": [float(v) for v in acf],
        "r_t": {"prior": _mean(prior_r), "posterior": _mean(post_r)},
        "nijkamp": nijkamp_scale(
            d_t,
            prior_r,
            post_r,
            shortrun=shortrun,
            drifts=None if shortrun else _chain_drifts(model_config),
        ),
        "prior_chain_step": None if shortrun else prior_chain_step(prior_r, model_config),
        "valid_recon_nll": float(valid[-1]["valid_recon_nll"]) if valid else None,
        "long_chain": long_chain,
        "latent_usage": usage,
        "plots_skipped": plots_skipped,
    }
    with open(out / "diagnostics.json", "x", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2)
        handle.write("\n")
    return summary


def _draw_plots(
    plt: Any,
    out: Path,
    *,
    shortrun: bool,
    d_steps: list[int],
    d_t: list[float],
    oscillation: dict[str, Any] | None,
    prior_steps: list[int],
    prior_r: list[float],
    post_steps: list[int],
    post_r: list[float],
    acf: np.ndarray,
    long_chain: dict[str, Any] | None,
) -> list[str]:
    """The PNGs of :func:`diagnose` in ``out``; returns their names."""
    files: list[str] = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=90)
        plt.close(fig)
        files.append(name)

    # d_t with a rolling mean
    fig, ax = plt.subplots(figsize=(7, 3.6))
    if d_t:
        window = max(1, min(50, len(d_t) // 10))
        ax.plot(d_steps, d_t, lw=0.8, alpha=0.6, label="d_t")
        ax.plot(d_steps, rolling_mean(d_t, window), lw=1.8, label=f"rolling mean ({window})")
        ax.legend()
        assert oscillation is not None
        ax.set_title(
            f"d_t = mean f(z+) - mean f(z-): {oscillation['label']} oscillation "
            f"(lag-1 acf {oscillation['lag1_autocorrelation']:.2f})"
        )
    else:
        ax.set_title("d_t: not logged (no energy prior)")
    ax.axhline(0.0, color="grey", lw=0.5)
    ax.set_xlabel("training step")
    save(fig, "d_t.png")

    # r_t of both chains
    fig, ax = plt.subplots(figsize=(7, 3.6))
    if prior_r:
        ax.plot(
            prior_steps, prior_r, label="synthesis chain (x-)" if shortrun else "prior chain (z-)"
        )
    if post_r:
        ax.plot(post_steps, post_r, label="posterior chain (z+)")
    ax.set(title="r_t: mean |grad log pi| along the chain", xlabel="training step")
    if prior_r or post_r:
        ax.legend()
    save(fig, "r_t.png")

    # autocorrelation of d_t
    fig, ax = plt.subplots(figsize=(7, 3.6))
    if acf.size:
        lags = np.arange(acf.size)
        ax.vlines(lags, 0.0, acf, lw=2)
        ax.plot(lags, acf, "o", ms=3)
        band = 2.0 / math.sqrt(len(d_t))
        ax.axhspan(-band, band, color="grey", alpha=0.2, label="±2/sqrt(n)")
        ax.legend()
    ax.axhline(0.0, color="black", lw=0.5)
    ax.set(title="autocorrelation of d_t", xlabel="lag (logged rows)", ylim=(-1.05, 1.05))
    save(fig, "autocorrelation.png")

    # long prior chain
    if long_chain is not None:
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
        for ax, key, title in (
            (axes[0], "energy", "mean f(z) along a long prior chain"),
            (axes[1], "log_density", "mean f(z) - |z|^2 / (2 sigma^2)"),
        ):
            ax.plot(long_chain["steps"], long_chain[key])
            ax.axvline(long_chain["training_steps"], color="red", lw=0.8, ls="--", label="K0")
            ax.set(title=title, xlabel="Langevin step")
            ax.legend()
        save(fig, "long_chain.png")

    return files
