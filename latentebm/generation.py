"""Generation tools for trained models: prior-chain trajectories and latent interpolation.

* :func:`prior_trajectory` runs the prior chain (possibly far longer than the ``K0`` steps of
  training, as in Fig. 4 and Table 3 of Pang, Han, Nijkamp, Zhu and Wu (2020), "Learning Latent
  Space Energy-Based Prior Model"), decodes ``z`` at chosen steps and records the
  mean energy ``f_alpha(z)`` and mean log density ``f_alpha(z) - ||z||^2 / (2 sigma^2)`` at every
  step; :func:`plot_energy` draws them (PNG, matplotlib imported on first use).
* :func:`interpolate` decodes points on a linear or spherical path between the posterior
  ``z`` of two sentences; :func:`slerp` is the spherical path.

Decoding options (``decode``, ``temperature``, ``top_k``, ``top_p``, ``repetition_penalty``,
``beam_size``, ``length_penalty``, ``max_length``) are passed through to
``model.generator.sample``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

#: parallel (or anti-parallel) below this ``sin`` of the angle: :func:`slerp` falls back to lerp.
SLERP_EPS = 1e-6


def prior_trajectory(
    model: Any,
    task: Any,
    n: int,
    steps: Sequence[int],
    n_steps: int | None = None,
    *,
    generator: torch.Generator | None = None,
    **decode_opts: Any,
) -> dict[str, Any]:
    """Sentences along ``n`` prior chains, and the energy at every step of the chains.

    Runs ``model.sample_prior(n, n_steps=n_steps)`` (from ``N(0, sigma^2 I)``, the training
    sampler; ``n_steps`` defaults to the training ``K0``), decodes the states ``z_k`` at each
    step ``k`` of ``steps`` (0 = the initial state) and evaluates, under ``torch.no_grad``, the
    mean over the chains of ``f_alpha(z_k)`` and of the unnormalised log density at every step
    ``k = 0 .. n_steps``. The same ``generator`` drives the chains and the decoding.

    Returns:
        ``steps`` (sorted, unique), ``sentences`` (``{step: [n sentences]}``), ``energy`` and
        ``log_density`` (lists of length ``n_steps + 1``, index = step), ``n``, ``n_steps`` and
        ``training_steps`` (``K0``).

    Raises:
        ValueError: ``n < 1``, no step, or a step outside ``0 .. n_steps``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    chain_steps = int(model.prior_chain.n_steps if n_steps is None else n_steps)
    if chain_steps < 0:
        raise ValueError(f"n_steps must be >= 0, got {chain_steps}")
    wanted = sorted({int(s) for s in steps})
    if not wanted:
        raise ValueError("steps: give at least one step")
    if wanted[0] < 0 or wanted[-1] > chain_steps:
        raise ValueError(f"steps must lie in 0..{chain_steps} (the chain length), got {wanted}")
    result = model.sample_prior(
        n, generator=generator, n_steps=chain_steps, record_steps=tuple(range(chain_steps + 1))
    )
    energy: list[float] = []
    log_density: list[float] = []
    with torch.no_grad():
        for k in range(chain_steps + 1):
            z = result.trajectory[k]
            energy.append(float(model.prior.energy(z).mean()))
            log_density.append(float(model.prior.log_density(z).mean()))
        sentences = {
            k: task.decode(
                model.generator.sample(result.trajectory[k], generator=generator, **decode_opts)
            )
            for k in wanted
        }
    return {
        "steps": wanted,
        "sentences": sentences,
        "energy": energy,
        "log_density": log_density,
        "n": int(n),
        "n_steps": chain_steps,
        "training_steps": int(model.prior_chain.n_steps),
    }


def format_trajectory(trajectory: dict[str, Any]) -> str:
    """The sentences of :func:`prior_trajectory`, grouped under a ``# step k`` line per step."""
    lines: list[str] = []
    for k in trajectory["steps"]:
        lines.append(f"# step {k} (mean f(z) = {trajectory['energy'][k]:.4g})")
        lines.extend(trajectory["sentences"][k])
        lines.append("")
    return "\n".join(lines)


def plot_energy(trajectory: dict[str, Any], path: str | Path) -> Path:
    """Plot the mean energy and log density along the chain of :func:`prior_trajectory` (PNG).

    Dotted lines mark the decoded steps, a dashed line the training chain length ``K0``.

    Raises:
        latentebm.diagnostics.PlotDependencyError: matplotlib is missing.
    """
    from latentebm.plotting import pyplot

    plt = pyplot()
    out = Path(path)
    steps = list(range(len(trajectory["energy"])))
    fig, axes = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
    series = (("energy", "mean f(z)"), ("log_density", "mean log density"))
    for ax, (key, label) in zip(axes, series, strict=True):
        ax.plot(steps, trajectory[key], color="C0" if key == "energy" else "C1")
        ax.set_ylabel(label)
        for k in trajectory["steps"]:
            ax.axvline(k, color="grey", linestyle=":", linewidth=0.8)
        k0 = trajectory.get("training_steps")
        if k0 is not None and 0 < k0 <= steps[-1]:
            ax.axvline(k0, color="black", linestyle="--", linewidth=0.8, label=f"K0 = {k0}")
            ax.legend(loc="best")
    axes[-1].set_xlabel("Langevin step")
    axes[0].set_title(f"prior chain ({trajectory['n']} chains)")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def slerp(z0: Tensor, z1: Tensor, t: Tensor | float) -> Tensor:
    """Spherical interpolation ``sin((1-t) w) / sin(w) z0 + sin(t w) / sin(w) z1``.

    ``w`` is the angle between ``z0`` and ``z1`` (vectors of shape ``(d,)``); ``t`` a scalar
    or a 1-D tensor (result ``(len(t), d)``). The endpoints are exact at ``t = 0, 1``; for unit
    vectors the path stays on the unit sphere (the great-circle arc); for vectors of other norms
    the norm is interpolated along the arc. When ``sin(w)`` is (nearly) 0, i.e. parallel or
    anti-parallel vectors, it is the linear path ``(1-t) z0 + t z1``.
    """
    t_tensor = torch.as_tensor(t, dtype=z0.dtype, device=z0.device)
    scalar = t_tensor.dim() == 0
    tt = t_tensor.reshape(-1, 1)
    norm0, norm1 = z0.norm(), z1.norm()
    linear = (1 - tt) * z0 + tt * z1
    if float(norm0) == 0.0 or float(norm1) == 0.0:
        return linear[0] if scalar else linear
    cos = torch.clamp(torch.dot(z0, z1) / (norm0 * norm1), -1.0, 1.0)
    omega = torch.arccos(cos)
    sin = torch.sin(omega)
    if float(sin) < SLERP_EPS:
        return linear[0] if scalar else linear
    out = (torch.sin((1 - tt) * omega) * z0 + torch.sin(tt * omega) * z1) / sin
    # exact endpoints (no rounding of sin(w) / sin(w))
    out = torch.where(tt == 0, z0, torch.where(tt == 1, z1, out))
    return out[0] if scalar else out


def posterior_mean(
    model: Any,
    task: Any,
    sentences: Sequence[str],
    *,
    n_chains: int = 8,
    posterior_steps: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Posterior ``z`` of each sentence: the mean of ``n_chains`` short-run posterior chains.

    Each chain is the training posterior sampler (``K1`` steps, or ``posterior_steps``) from an
    independent ``N(0, sigma^2 I)`` start; averaging them reduces the Langevin noise of a single
    chain. Returns ``(len(sentences), d)``.

    Raises:
        ValueError: ``n_chains < 1`` or ``posterior_steps < 0``.
    """
    if n_chains < 1:
        raise ValueError(f"n_chains must be >= 1, got {n_chains}")
    if posterior_steps is not None and posterior_steps < 0:
        raise ValueError(f"posterior_steps must be >= 0, got {posterior_steps}")
    x = task.encode([s for s in sentences for _ in range(n_chains)]).to(model.device)
    z = model.sample_posterior(x, generator=generator, n_steps=posterior_steps).z
    return z.view(len(sentences), n_chains, -1).mean(dim=1)


def interpolate(
    model: Any,
    task: Any,
    sentence_a: str,
    sentence_b: str,
    n_points: int = 8,
    path: Literal["linear", "slerp"] = "linear",
    posterior_steps: int | None = None,
    *,
    n_chains: int = 8,
    generator: torch.Generator | None = None,
    **decode_opts: Any,
) -> list[tuple[float, str]]:
    """Decoded sentences along a path between the posterior ``z`` of two sentences.

    ``z_a`` and ``z_b`` come from :func:`posterior_mean` (``n_chains`` posterior chains each);
    the ``n_points`` points ``t = 0, 1/(n-1), ..., 1`` of the ``linear`` path
    ``(1-t) z_a + t z_b`` or the spherical one (:func:`slerp`) are decoded with
    ``model.generator.sample(..., **decode_opts)``.

    Returns:
        ``[(t, sentence), ...]``, ``n_points`` pairs from ``t = 0`` (``z_a``) to 1 (``z_b``).

    Raises:
        ValueError: ``n_points < 2``, an unknown ``path``, or see :func:`posterior_mean`.
    """
    if n_points < 2:
        raise ValueError(f"n_points must be >= 2, got {n_points}")
    if path not in ("linear", "slerp"):
        raise ValueError(f"path must be 'linear' or 'slerp', got {path!r}")
    z_ab = posterior_mean(
        model,
        task,
        [sentence_a, sentence_b],
        n_chains=n_chains,
        posterior_steps=posterior_steps,
        generator=generator,
    )
    t = torch.linspace(0.0, 1.0, n_points, device=z_ab.device, dtype=z_ab.dtype)
    if path == "slerp":
        z = slerp(z_ab[0], z_ab[1], t)
    else:
        z = (1 - t).unsqueeze(1) * z_ab[0] + t.unsqueeze(1) * z_ab[1]
    with torch.no_grad():
        tokens = model.generator.sample(z, generator=generator, **decode_opts)
    return list(zip((float(v) for v in t.tolist()), task.decode(tokens), strict=True))
