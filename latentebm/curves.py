"""Training curves of a run as one PNG (``latentebm plot RUN``).

Contract: :func:`plot_training_curves` draws one panel per group of keys of ``metrics.jsonl``
against the training step: by default the reconstruction NLL (training ``recon_nll`` and
validation ``valid_recon_nll``), the energies of posterior and prior samples (``energy_pos``,
``energy_neg``) and their difference ``d_t`` (``energy_diff``; Pang et al. 2020, eq. 10's two
terms; Nijkamp et al. 2020), and the throughput; for a data-space short-run EBM run its
``loss``, ``d_t`` and ``r_t`` (Nijkamp et al. 2020's diagnostics); keys a run did not log are
left out. It never overwrites a file, and says which keys it drew.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from latentebm.plotting import pyplot
from latentebm.run_metrics import read_metrics

DEFAULT_PANELS: tuple[tuple[str, ...], ...] = (
    ("recon_nll", "valid_recon_nll"),
    ("energy_pos", "energy_neg"),
    ("energy_diff",),
    ("tokens_per_s", "images_per_s"),
    ("loss",),  # the data-space short-run EBM's (latentebm.shortrun.train)
    ("d_t",),
    ("r_t",),
)
"""The panels drawn without ``keys``: one tuple of metrics per panel (those a run logged)."""


def plot_training_curves(
    run_dir: str | Path, out: str | Path, keys: Sequence[str] | None = None
) -> list[str]:
    """Draw the curves of ``run_dir`` into the PNG ``out`` (module docstring); ``keys``: one
    panel per key instead of the default panels. Returns the keys drawn.

    Raises:
        FileExistsError: ``out`` exists.
        ValueError: no metrics file, or none of the keys was logged (naming those that were).
    """
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out}: exists; not overwritten")
    train, valid = read_metrics(run_dir)
    rows = train + valid
    logged = sorted({k for row in rows for k in row if k not in ("step", "time", "epoch")})
    panels = [(key,) for key in keys] if keys else DEFAULT_PANELS
    present = [tuple(k for k in panel if any(k in row for row in rows)) for panel in panels]
    present = [panel for panel in present if panel]
    if not present:
        wanted = ", ".join(k for panel in panels for k in panel)
        raise ValueError(f"{run_dir}: none of {wanted} was logged (logged: {', '.join(logged)})")
    plt = pyplot()
    fig, axes = plt.subplots(len(present), 1, figsize=(7, 2.4 * len(present)), squeeze=False)
    for axis, panel in zip(axes[:, 0], present, strict=True):
        for key in panel:
            points = [(int(row["step"]), float(row[key])) for row in rows if key in row]
            points.sort()
            steps, values = zip(*points, strict=True)
            style = "o-" if key.startswith("valid_") else "-"
            axis.plot(steps, values, style, markersize=3, linewidth=1, label=key)
        axis.legend(fontsize=8)
        axis.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("training step")
    fig.suptitle(f"{Path(run_dir).name}", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return [k for panel in present for k in panel]
