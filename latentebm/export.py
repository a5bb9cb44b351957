"""Exported models: a trained model as a small folder that anyone can load, and where such
folders are found (``latentebm export RUN DIR``, ``latentebm.load("pretrained:NAME")``).

An exported folder holds

* ``model.pt``: the checkpoint of the run's step without what only training needs (optimiser
  state, random generator states, the replay buffer and the per-example posterior memory of
  persistent chains): the recipe, the task's state (tokenizer, vocabulary), the model's weights
  and the step. It is read like any checkpoint (``torch.load(weights_only=True)``), and its
  recipe may import only the toolkit's modules and those the user trusts
  (``docs/guarantees.md``);
* ``config.yaml``: the same recipe, to read;
* ``README.md``: a model card (what was trained on which data, for how long, and its measured
  numbers when given).

:func:`resolve_model` turns what a user names into such a file: a run directory or checkpoint
(as before), an exported folder, ``pretrained:NAME`` for the models shipped with the package
(``tasks/pretrained/NAME/``, installed as ``latentebm.tasks``), or ``hf:OWNER/REPO`` for a
folder on the Hugging Face Hub (``hf:OWNER/REPO@REVISION`` pins a branch, tag or commit;
downloaded with ``huggingface_hub`` when it is installed and
the Hub is reachable; a local folder needs no network).
"""

from __future__ import annotations

import importlib.resources
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

import torch
import yaml

from latentebm.atomic import atomic_write, write_bytes_atomic
from latentebm.checkpoint import load_checkpoint, require_fields, resolve_checkpoint
from latentebm.config import current_component_paths
from latentebm.errors import CheckpointError

MODEL_FILE = "model.pt"
EXPORT_FORMAT = "latentebm-export-1"
PRETRAINED_PREFIX = "pretrained:"
HUB_PREFIX = "hf:"
TRAINING_ONLY_BUFFERS = ("replay.", "posterior_memory.")
"""Model state entries that only training uses (persistent chains): not exported."""


def _pretrained_root() -> Path:
    return Path(str(importlib.resources.files("latentebm.tasks") / "pretrained"))


def pretrained_names() -> list[str]:
    """The models shipped with the package (``pretrained:NAME``)."""
    root = _pretrained_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / MODEL_FILE).is_file())


def resolve_model(name: str | os.PathLike[str]) -> Path:
    """The checkpoint file that ``name`` means (module docstring).

    Raises:
        CheckpointError: one line: an unknown pretrained name (listing the known ones), a Hub
            repository that cannot be fetched (why), or no checkpoint at the path.
    """
    text = os.fspath(name)
    if text.startswith(PRETRAINED_PREFIX):
        model = text[len(PRETRAINED_PREFIX) :]
        known = pretrained_names()
        if model not in known:
            raise CheckpointError(
                f"{text}: no such pretrained model (shipped: {', '.join(known) or 'none'})"
            )
        return _pretrained_root() / model / MODEL_FILE
    if text.startswith(HUB_PREFIX):
        return _from_hub(text[len(HUB_PREFIX) :]) / MODEL_FILE
    path = Path(text).expanduser()
    if path.is_dir() and (path / MODEL_FILE).is_file() and not (path / "checkpoints").exists():
        return path / MODEL_FILE
    return resolve_checkpoint(path)


def _from_hub(name: str) -> Path:
    """A local copy of the Hub repository ``OWNER/REPO`` or ``OWNER/REPO@REVISION`` (a branch,
    tag or commit: pin one to load the same model every time) via
    ``huggingface_hub.snapshot_download``."""
    repo_id, _, revision = name.partition("@")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as error:
        raise CheckpointError(
            f"hf:{repo_id}: loading from the Hugging Face Hub needs huggingface_hub "
            "(pip install huggingface_hub); or download the folder and give its path"
        ) from error
    try:
        folder = Path(
            snapshot_download(
                repo_id, revision=revision or None, allow_patterns=["*.pt", "*.yaml", "*.md"]
            )
        )
    except Exception as error:  # noqa: BLE001 - offline, unknown repository, no access
        raise CheckpointError(
            f"hf:{repo_id}: cannot fetch from the Hugging Face Hub ({type(error).__name__}: "
            f"{' '.join(str(error).split())[:200]})"
        ) from error
    if not (folder / MODEL_FILE).is_file():
        raise CheckpointError(f"hf:{repo_id}: the repository has no {MODEL_FILE}")
    return folder


def export_model(
    run: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    card: dict[str, Any] | None = None,
) -> Path:
    """Write the exported folder ``out`` for the newest checkpoint of ``run`` (or a checkpoint
    file); returns ``out``. ``card``: fields for the model card (``title``, ``description``,
    ``data``, ``licence``, ``budget``, ``metrics`` as a mapping, any of them).

    Raises:
        FileExistsError: ``out`` exists and is not empty (never overwritten).
        CheckpointError: the checkpoint cannot be read or lacks the fields a model needs.
    """
    checkpoint = resolve_checkpoint(run)
    target = Path(out)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(f"{target}: exists and is not empty; not overwritten")
    state = load_checkpoint(checkpoint, map_location="cpu")
    family = state.get("family", "latent")
    if family == "shortrun":
        exported = _shortrun_export(state, checkpoint)
    elif family == "latent":
        exported = _latent_export(state, checkpoint)
    else:
        raise CheckpointError(f"{checkpoint}: unknown model family {family!r}; not exported")
    recipe, weights, step = exported["recipe"], exported["model"], exported["step"]
    n_params = sum(v.numel() for v in weights.values() if v.is_floating_point())
    card_text = model_card(recipe, step, n_params, {"family": family, **(card or {})})
    # a new folder is written as a hidden sibling and renamed into place when complete, an
    # existing empty one (a link, a mount point) file by file: an export that fails (disk full)
    # leaves nothing behind that a retry would refuse
    target.parent.mkdir(parents=True, exist_ok=True)
    into_existing = target.exists()
    folder = target if into_existing else target.parent / f".{target.name}.{secrets.token_hex(4)}"
    if not into_existing:
        folder.mkdir()  # the ordinary mode under the umask
    written: list[Path] = []
    try:
        with atomic_write(folder / MODEL_FILE) as handle:
            torch.save(exported, handle)
        written.append(folder / MODEL_FILE)
        config_text = yaml.safe_dump(recipe, sort_keys=False).encode()
        written.append(write_bytes_atomic(folder / "config.yaml", config_text))
        written.append(write_bytes_atomic(folder / "README.md", card_text.encode()))
        if not into_existing:
            os.replace(folder, target)
    except BaseException:
        if into_existing:
            for path in written:
                path.unlink(missing_ok=True)
        else:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return target


def _latent_export(state: dict[str, Any], checkpoint: Path) -> dict[str, Any]:
    """What a latent EBM export holds: the weights without training-only buffers (persistent
    chain state), the recipe without machine paths, the task state and the step."""
    require_fields(
        state, checkpoint, {"recipe": dict, "task_state": (dict, type(None)), "step": int}
    )
    weights = {
        key: value
        for key, value in state["model"].items()
        if not key.startswith(TRAINING_ONLY_BUFFERS)
    }
    return {
        "format": EXPORT_FORMAT,
        "family": "latent",
        "recipe": without_machine_paths(current_component_paths(state["recipe"])),
        "task_state": state["task_state"],
        "model": weights,
        "step": int(state["step"]),
    }


def _shortrun_export(state: dict[str, Any], checkpoint: Path) -> dict[str, Any]:
    """What a data-space short-run EBM export holds: the energy's weights, the image shape,
    the recipe without machine paths and the step; not the optimiser, the random state or the
    replay buffer of persistent chains (:func:`latentebm.shortrun.tools.load_shortrun` reads
    it)."""
    require_fields(state, checkpoint, {"recipe": dict, "image_shape": (list, tuple), "model": dict})
    progress = state.get("state")
    step = progress.get("step") if isinstance(progress, dict) else None
    if not isinstance(step, int):
        raise CheckpointError(f"{checkpoint}: damaged checkpoint: no step count in its state")
    return {
        "format": EXPORT_FORMAT,
        "family": "shortrun",
        "recipe": without_machine_paths(current_component_paths(state["recipe"])),
        "image_shape": list(state["image_shape"]),
        "model": dict(state["model"]),
        "step": step,
    }


MACHINE_PATHS: dict[str, tuple[str, ...]] = {
    "trainer": ("run_dir", "resume"),
    "data": ("root",),
    "task": ("cache_dir",),
}
"""Recipe keys that name folders of the machine a model was trained on (run folders, data root,
caches): cleared in an export, which is meant to travel."""


def without_machine_paths(recipe: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``recipe`` with :data:`MACHINE_PATHS` set to null (and an absolute
    ``trainer.runs_root`` back to ``runs``)."""
    out = {
        key: (dict(value) if isinstance(value, dict) else value) for key, value in recipe.items()
    }
    for section, keys in MACHINE_PATHS.items():
        part = out.get(section)
        if isinstance(part, dict):
            for key in keys:
                if key in part:
                    part[key] = None
    trainer = out.get("trainer")
    if isinstance(trainer, dict) and os.path.isabs(str(trainer.get("runs_root", ""))):
        trainer["runs_root"] = "runs"
    return out


def model_card(recipe: dict[str, Any], step: int, n_params: int, card: dict[str, Any]) -> str:
    """The README of an exported model: what it is, how it was trained, what it scores."""
    name = recipe.get("name", "model")
    title = card.get("title", f"latentebm: {name}")
    task = recipe.get("task", {})
    lines = [f"# {title}", ""]
    if card.get("description"):
        lines += [str(card["description"]), ""]
    if card.get("family") == "shortrun":
        what = (
            'A data-space short-run energy-based model (Nijkamp et al. 2019, "Learning '
            'Non-Convergent Non-Persistent Short-Run MCMC Toward Energy-Based Model") trained '
            "with latentebm."
        )
        use = "images = model.sample(16)  # (16, C, H, W) in [-1, 1]"
    else:
        what = (
            'A latent-space energy-based prior model (Pang et al. 2020, "Learning Latent Space '
            'Energy-Based Prior Model") trained with latentebm.'
        )
        use = "print(model.generate(5))"
    lines += [
        what,
        "",
        "```python",
        "import latentebm",
        "",
        f'model = latentebm.load("{card.get("load_as", "THIS_FOLDER")}")',
        use,
        "```",
        "",
        "| | |",
        "|---|---|",
        f"| recipe | `{name}` (the full recipe is config.yaml) |",
        f"| task | `{task.get('_component_', '?')}` |",
        f"| parameters | {n_params:,} |",
        f"| updates | {step:,} |",
    ]
    for key in ("data", "licence", "budget", "commit", "machine"):
        if card.get(key):
            lines.append(f"| {key} | {card[key]} |")
    lines.append("")
    metrics = card.get("metrics")
    if metrics:
        lines += ["## Measured", ""]
        if card.get("metrics_command"):
            lines += ["```bash", str(card["metrics_command"]), "```", ""]
        lines += ["| metric | value |", "|---|---:|"]
        for key, value in metrics.items():
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            lines.append(f"| {key} | {shown} |")
        lines.append("")
    return "\n".join(lines)


CARD_TEXT_FIELDS = (
    "title",
    "description",
    "data",
    "licence",
    "budget",
    "commit",
    "machine",
    "metrics_command",
    "load_as",
)


def read_card_fields(path: str | os.PathLike[str] | None) -> dict[str, Any]:
    """Model card fields from a JSON file (``latentebm export --card FILE``); {} for None.

    Raises:
        ValueError: one line naming the file and the field: not JSON, not an object, an
            unknown field, a text field that is not a string, ``metrics`` not an object of
            numbers and strings.
    """
    if path is None:
        return {}
    try:
        fields = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(
            f"{path}: not a readable JSON file of model card fields ({error})"
        ) from error
    if not isinstance(fields, dict):
        raise ValueError(f"{path}: expected a JSON object of model card fields")
    for key, value in fields.items():
        if key == "metrics":
            if not isinstance(value, dict) or not all(
                isinstance(v, int | float | str) and not isinstance(v, bool) for v in value.values()
            ):
                raise ValueError(f"{path}: metrics must be an object of numbers or strings")
        elif key not in CARD_TEXT_FIELDS:
            known = ", ".join([*CARD_TEXT_FIELDS, "metrics"])
            raise ValueError(f"{path}: unknown model card field {key!r} (known: {known})")
        elif not isinstance(value, str):
            raise ValueError(f"{path}: {key} must be a string")
    return fields
