"""The validation of a training run: the reconstruction NLL of the valid split with posterior
samples, on the same batches at every validation, shared out over the processes."""

from __future__ import annotations

import math
from typing import Any

import torch

from latentebm.distributed import DistContext, reduce_values
from latentebm.model import LatentEBM
from latentebm.progress_bars import ChainStepLabel
from latentebm.task_contract import DecodesSequences, examples_in


def has_split(task: Any, split: str) -> bool:
    """Whether ``task`` has examples in ``split`` (a task without the split says so by
    ``ValueError``)."""
    try:
        return examples_in(task, split) > 0
    except ValueError:
        return False


def valid_batches(task: Any, batch_size: int, limit: int | None, ctx: DistContext) -> list[Any]:
    """The validation batches of this process (the same sentences at every validation): the
    first ``limit`` (``trainer.valid_batches``; None: all) of the split, dealt out by rank."""
    batches = task.batches("valid", batch_size, seed=0, epoch=0, shuffle=False)
    if limit is not None:
        batches = batches[:limit]
    return batches[ctx.rank :: ctx.world_size]


def valid_batch_count(task: Any, batch_size: int, limit: int | None, ctx: DistContext) -> int:
    """The most validation batches any process runs (the main process has the most)."""
    total = len(task.batches("valid", batch_size, seed=0, epoch=0, shuffle=False))
    if limit is not None:
        total = min(total, limit)
    return math.ceil(total / ctx.world_size)


def validate(
    task: Any,
    model: LatentEBM,
    device: torch.device,
    batches: list[Any],
    ctx: DistContext,
    progress: Any = None,
) -> dict[str, float]:
    """Reconstruction NLL of the validation ``batches`` with posterior samples (K1 steps),
    summed over the processes.

    ``progress``: the training bar, whose label counts the validation batches meanwhile
    (``valid 3/20``), so that a long validation is never a silent bar at 100 %.

    ``valid_recon_nll`` is ``-log p_beta(x | z^+)`` per sentence in nats (summed over
    tokens incl. ``<eos>``), ``valid_recon_ppl`` is ``exp(total NLL / total tokens)``.
    It is not a likelihood bound of ``log p(x)``; it measures how well the posterior
    chain finds a z that explains x. The chains use a fixed seed, so values are
    comparable across steps, and the training RNG is not disturbed.
    """
    rng = torch.Generator(device)
    rng.manual_seed(12345 + ctx.rank)
    was_training = model.training
    model.eval()
    total_nll, total_tokens, total_sentences = 0.0, 0.0, 0.0
    chain_label = ChainStepLabel(progress)  # a batch of long documents: its chain's step
    for done, batch in enumerate(batches):
        label = f"valid {done}/{len(batches)}"
        if progress is not None:
            progress.set_description_str(label, refresh=True)
        x = batch.to(device)
        with chain_label.listening(label):
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
        ctx,
        average=False,
    )
    sentences = max(sums["sentences"], 1.0)
    row = {"valid_recon_nll": sums["nll"] / sentences}
    if isinstance(task, DecodesSequences):  # token sequences: a perplexity too
        row["valid_recon_ppl"] = math.exp(min(sums["nll"] / max(sums["tokens"], 1.0), 700.0))
    return row
