"""The samples a training run draws from its model (``trainer.samples_at_end``), written into
``RUN/samples/`` as ``step_N.png`` (images: a grid) or ``step_N.txt`` (text: one sentence a
line) beside earlier ones, never replacing them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from latentebm.model import LatentEBM
from latentebm.runs import say, unused_path
from latentebm.task_contract import WritesSamples


def write_samples(
    task: Any,
    model: LatentEBM,
    device: torch.device,
    run_dir: Path,
    step: int,
    n: int,
    *,
    seed: int,
    decode: str,
    temperature: float,
    echo: bool,
) -> list[str]:
    """Draw ``n`` samples (prior chain, then the generator decoding by ``decode`` at
    ``temperature``; seeded with ``seed``) and write them as the samples of ``step``; return
    the sentences of a text task (none for images). ``echo``: say so on stderr and print the
    sentences."""
    rng = torch.Generator(device)
    rng.manual_seed(seed)
    model.eval()
    if echo:
        say(f"drawing {n} samples (prior chain K0={model.prior_chain.n_steps}) ...")
    tokens = model.generate(n, generator=rng, decode=decode, temperature=temperature)
    suffix = ".png" if isinstance(task, WritesSamples) else ".txt"
    name = f"step_{step:08d}{suffix}"
    stem = unused_path(run_dir / "samples" / name).stem  # never replaces samples
    if isinstance(task, WritesSamples):  # images: a PNG grid
        picture = task.save_samples(tokens, run_dir / "samples" / stem)
        if echo:
            say(f"{n} samples (prior chain K0={model.prior_chain.n_steps}) -> {picture}")
        return []
    sentences = task.decode(tokens)
    out = run_dir / "samples" / f"{stem}.txt"
    with open(out, "x", encoding="utf-8") as handle:  # never replaces earlier samples
        handle.write("\n".join(sentences) + "\n")
    if echo:
        how = decode if decode == "greedy" else f"sampled at temperature {temperature}"
        say(f"{n} samples (prior chain K0={model.prior_chain.n_steps}, {how}) -> {out}")
        for sentence in sentences:
            print(sentence, flush=True)
    return sentences
