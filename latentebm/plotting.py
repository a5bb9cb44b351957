"""Plot output: ``matplotlib.pyplot`` imported on first use (an optional dependency), and
output folders that never replace earlier ones.

A low-level helper of the commands that draw (``diagnose``, ``generate`` of image chains,
:mod:`latentebm.generation`); it imports nothing of the toolkit but its error types.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from latentebm.errors import MissingDependencyError


class PlotDependencyError(MissingDependencyError):
    """matplotlib, needed for the diagnostic plots, is not installed."""


def fresh_dir(path: str | Path) -> Path:
    """``path`` if it is absent or empty, else the first absent-or-empty ``path-2``, ``path-3``...

    Existing diagnostics are never overwritten: a second ``diagnose`` of a run writes into
    ``diagnostics-2/``. The directory is created.
    """
    base = Path(path)
    candidate, n = base, 1
    while candidate.exists() and (not candidate.is_dir() or any(candidate.iterdir())):
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    candidate.mkdir(parents=True, exist_ok=True)
    return candidate


PLOT_EXTRA_HINT = "pip install 'latentebm[plot]'"
"""How to install what the plots need."""


def pyplot() -> Any:
    """``matplotlib.pyplot`` with the Agg backend, imported on first use."""
    try:
        import matplotlib
    except ImportError as error:
        raise PlotDependencyError(
            f"the diagnostic plots need matplotlib: {PLOT_EXTRA_HINT}"
        ) from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def optional_pyplot() -> Any | None:
    """:func:`pyplot`, or ``None`` where matplotlib is not installed."""
    try:
        return pyplot()
    except PlotDependencyError:
        return None
