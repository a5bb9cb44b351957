"""The task contract: what the trainer, the loader, the evaluators and the front ends may ask of
a task, written once and checked in one place.

A task is any class a recipe's ``task._component_`` names; it is built as
``Task(config, data_root, state=...)``. :class:`Task` lists what every latent-EBM task has;
the capability protocols list what only some tasks have, and code that needs one asks with
``isinstance(task, Capability)`` (never ``hasattr`` on a member name):

* :class:`DecodesSequences`: token sequences (text, SMILES, SELFIES): ``encode``, ``decode``,
  ``pad_id``, ``vocab_size``, ``sentences``;
* :class:`WritesSamples`: writes a batch of generated samples to a file itself (images: a PNG
  grid);
* :class:`IndexedBatches`: batches with the examples' indices (persistent posterior chains);
* :class:`AnomalySplit`: 0/1 anomaly labels of a split (Pang et al. 2020, Table 4);
* :class:`ImageTensors`: a split's images as one tensor (FID's reference statistics);
* :class:`MoleculeReference`: the training SMILES (MOSES novelty and FCD reference);
* :class:`DrawsSampleGrid`: draws samples as one picture (``generate --grid``).

Two members are optional, with defaults (:data:`OPTIONAL_MEMBERS`, read with
:func:`optional_member`): ``default_metrics`` and ``throughput_unit``.

The data-space short-run EBM needs less of its task (:class:`DataSpaceTask`: batches of
images and their shape). :func:`check_task` is called where a task is built
(:func:`latentebm.build.build_task`, the short-run trainer): a class that lacks a member is
one error naming the component and the members, before any data is read by the trainer.
``tests/test_task_contract.py`` checks every task of the toolkit and every test fake.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "AnomalySplit",
    "DataSpaceTask",
    "DecodesSequences",
    "DrawsSampleGrid",
    "ImageTensors",
    "IndexedBatches",
    "MoleculeReference",
    "OPTIONAL_MEMBERS",
    "Task",
    "TaskContractError",
    "WritesSamples",
    "check_task",
    "examples_in",
    "missing_members",
    "optional_member",
]


class TaskContractError(ValueError):
    """A task class lacks a member of the contract it is used under (one line; the command
    line prints it as ``latentebm: error: ...``)."""


@runtime_checkable
class DataSpaceTask(Protocol):
    """What the data-space short-run EBM's trainer needs: image batches and their shape."""

    def batches(
        self, split: str, batch_size: int, *, seed: int, epoch: int, shuffle: bool = True
    ) -> Sequence[Tensor]:
        """The batches that cover ``split`` once (shuffled by ``seed`` and ``epoch``)."""
        ...

    def generator_kwargs(self) -> dict[str, Any]:
        """Keyword arguments the model's networks are built with (``image_shape``, or
        ``vocab_size`` and the special token ids)."""
        ...


@runtime_checkable
class Task(DataSpaceTask, Protocol):
    """What every latent-EBM task gives the trainer, the loader and the evaluators."""

    @property
    def splits(self) -> list[str]:
        """The splits the task has (``train``, and ``valid`` / ``test`` where configured)."""
        ...

    def num_examples(self, split: str) -> int:
        """Examples in ``split`` (sentences, molecules, images)."""
        ...

    def num_target_tokens(self, batch: Tensor) -> int:
        """What a batch's NLL is divided by per unit: scored tokens (``<eos>`` included) of a
        token batch, images of an image batch."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint stores to rebuild the task without its data (a tokenizer)."""
        ...

    def describe(self) -> str:
        """One line for the training log (sizes of the splits, vocabulary, shape)."""
        ...


@runtime_checkable
class DecodesSequences(Protocol):
    """Token sequences: text, SMILES or SELFIES."""

    @property
    def pad_id(self) -> int: ...

    @property
    def vocab_size(self) -> int: ...

    def encode(self, examples: Sequence[str]) -> Tensor:
        """Strings to a padded batch of token ids with ``<bos>`` and ``<eos>``."""
        ...

    def decode(self, tokens: Tensor | Sequence[Sequence[int]]) -> list[str]:
        """Token ids (up to ``<eos>``) back to strings."""
        ...

    def sentences(self, split: str) -> list[str]:
        """The examples of ``split`` as strings, in file order."""
        ...


@runtime_checkable
class WritesSamples(Protocol):
    """Writes generated samples itself (images: a PNG grid)."""

    def save_samples(self, samples: Tensor, path: str | Path) -> Path: ...


@runtime_checkable
class IndexedBatches(Protocol):
    """Batches that carry each example's index into its split (persistent posterior chains
    keep one chain state per training example)."""

    def indexed_batches(
        self, split: str, batch_size: int, *, seed: int, epoch: int, shuffle: bool = True
    ) -> list[tuple[Tensor, Tensor]]: ...


@runtime_checkable
class AnomalySplit(Protocol):
    """0/1 anomaly labels (1 = anomalous) of a split, in the order of its batches."""

    def anomaly_labels(self, split: str) -> Any: ...


@runtime_checkable
class ImageTensors(Protocol):
    """All images of a split as one float tensor ``(N, C, H, W)`` in ``[-1, 1]``."""

    def tensor(self, split: str) -> Tensor: ...


@runtime_checkable
class MoleculeReference(Protocol):
    """The training molecules as SMILES (novelty, the MOSES reference sets)."""

    def train_smiles(self) -> list[str]: ...


@runtime_checkable
class DrawsSampleGrid(Protocol):
    """Draws generated samples as one picture (images: a PNG grid; molecules: RDKit's grid of
    structures), for ``latentebm generate --grid``."""

    def draw_grid(self, samples: Any, path: str | Path) -> Any: ...


OPTIONAL_MEMBERS: dict[str, Any] = {
    "default_metrics": ("marginal_nll",),
    "throughput_unit": "tokens",
}
"""Members a task may define, with the value used when it does not: ``default_metrics`` (what
``latentebm evaluate`` computes without ``--metrics``) and ``throughput_unit`` (the unit of the
training log's throughput, ``tokens_per_s`` or e.g. ``images_per_s``)."""


def optional_member(task: object, name: str) -> Any:
    """``task.<name>`` for a member of :data:`OPTIONAL_MEMBERS`, else its default."""
    return getattr(task, name, OPTIONAL_MEMBERS[name])


def missing_members(task: object, contract: type) -> list[str]:
    """The members of the protocol ``contract`` (its own and inherited ones) that ``task``
    lacks, in the order they are declared."""
    names: list[str] = []
    for klass in reversed(contract.__mro__):
        if klass is object or klass is Protocol or not getattr(klass, "_is_protocol", False):
            continue
        for name in vars(klass):
            if name.startswith("_") or name in names:
                continue
            names.append(name)
    return [name for name in names if not hasattr(task, name)]


def examples_in(task: Any, split: str) -> int:
    """``task.num_examples(split)``; for a task class written before the contract named it,
    its ``num_sentences(split)`` (the one older name :func:`check_task` accepts)."""
    if hasattr(task, "num_examples"):
        return int(task.num_examples(split))
    return int(task.num_sentences(split))


def check_task(task: object, component: str, contract: type = Task) -> None:
    """Raise :class:`TaskContractError` (one line naming ``component`` and what is missing)
    unless ``task`` has every member of ``contract`` (:class:`Task` by default). A task with
    ``num_sentences`` but no ``num_examples`` (written before the contract) is accepted: callers
    count examples with :func:`examples_in`."""
    missing = missing_members(task, contract)
    if "num_examples" in missing and hasattr(task, "num_sentences"):
        missing.remove("num_examples")
    if missing:
        raise TaskContractError(
            f"task {component}: {type(task).__name__} lacks {', '.join(missing)} of the "
            f"{contract.__name__} contract (latentebm.task_contract)"
        )
