"""Peak memory of ``latentebm evaluate`` on long documents over a Yahoo-size vocabulary.

    python benchmarks/eval_memory.py                                  # recipes/yahoo.yaml sizes
    python benchmarks/eval_memory.py --metrics marginal_nll,recon_nll --json out.json

The model is ``recipes/yahoo.yaml`` (embedding 512, LSTM 1024, z 32, a 20,000-word vocabulary)
trained for one update on a synthetic corpus written to a temporary folder: documents of
uniformly drawn lengths (default 20-200 words, mean 110; Yahoo's average is 78) over
``--vocab`` random words, so that no data file is needed; the 16 test documents all have the
longest length (default 200 words: the worst case). Then ``latentebm evaluate`` of the
test split with ``--batch-size 16 --max-batches 1`` (the metrics of ``--metrics``), in a fresh
process whose peak resident memory (``ru_maxrss``) is reported. The target (issue 15): under
2 GB. The weights alone take ``4 * parameters`` bytes (about 150 MB here).

The peak is that of one chunk of (document, chain) pairs, which every step of the mode search
and of the annealing path repeats with the same shapes, so ``--evaluate-args '--temperatures 2
--laplace-steps 2'`` reaches it in minutes; the defaults take hours on one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if (_here := str(Path(__file__).resolve().parent)) not in sys.path:
    sys.path.insert(0, _here)
from _machine import load_average, write_record  # noqa: E402

MEASURE = (
    "import resource, sys\n"
    "from latentebm.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"  # KiB on Linux
    "print(f'PEAK_KIB {peak}', file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def torch_threads() -> int:
    """The thread count the evaluation ran with (``OMP_NUM_THREADS``, else the CPU count)."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() else os.cpu_count() or 1


def write_corpus(
    folder: Path, vocab: int, lengths: tuple[int, int], n_test: int, seed: int
) -> None:
    """train/valid/test text files of random words, one document per line."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(vocab)]
    sizes = {"train": 2000, "valid": 32, "test": n_test}
    for split, n in sizes.items():
        # train and valid: lengths drawn from the range; test: every document at its longest,
        # so the scored batch is the worst case (evaluate batches by length)
        low, high = (lengths[1], lengths[1]) if split == "test" else lengths
        lines = [
            " ".join(rng.choice(words) for _ in range(rng.randint(low, high))) for _ in range(n)
        ]
        (folder / f"{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", type=int, default=20000, help="distinct words")
    parser.add_argument("--min-words", type=int, default=20)
    parser.add_argument("--max-words", type=int, default=200)
    parser.add_argument("--metrics", default="marginal_nll")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--evaluate-args",
        default="",
        help="more `latentebm evaluate` options, e.g. '--temperatures 2 --laplace-steps 2': "
        "the same chunks at fewer steps, so the same peak in minutes instead of hours",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    load_start = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        n_test = max(16, args.batch_size)
        write_corpus(folder, args.vocab, (args.min_words, args.max_words), n_test, seed=0)
        run = folder / "run"
        task = [
            f"task.train={folder / 'train.txt'}",
            f"task.valid={folder / 'valid.txt'}",
            f"task.test={folder / 'test.txt'}",
        ]
        subprocess.run(
            [sys.executable, "-m", "latentebm", "train", "yahoo", *task, "trainer.max_steps=1",
             "trainer.samples_at_end=0", "trainer.progress=false", f"trainer.run_dir={run}"],
            check=True, capture_output=True,
        )  # fmt: skip
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", MEASURE, "evaluate", str(run), "--split", "test",
             "--metrics", args.metrics, "--batch-size", str(args.batch_size), "--max-batches",
             "1", "--no-progress", "-o", str(folder / "metrics.json"),
             *shlex.split(args.evaluate_args)],
            capture_output=True, text=True,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            sys.stderr.write(done.stderr)
            return done.returncode
        peak_kib = int(done.stderr.rsplit("PEAK_KIB", 1)[1].split()[0])
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    peak_gib = peak_kib / 2**20
    print(
        f"evaluate --metrics {args.metrics}, {args.batch_size} documents of "
        f"{args.max_words} words, vocabulary {args.vocab}: peak "
        f"{peak_gib:.2f} GiB ({seconds:.0f} s wall)"
    )
    if args.json is not None:
        write_record(
            args.json,
            "benchmarks/eval_memory.py",
            argv,
            threads=torch_threads(),
            vocab=args.vocab,
            words_per_scored_document=args.max_words,
            words_per_training_document=[args.min_words, args.max_words],
            batch_size=args.batch_size,
            metrics=args.metrics,
            evaluate_args=args.evaluate_args,
            peak_rss_gib=round(peak_gib, 3),
            wall_seconds=round(seconds, 1),
            load_average_start=load_start,
            evaluation=metrics,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
