"""Peak memory of the marginal-NLL estimator's phases at Yahoo sizes, in one process.

    python benchmarks/eval_memory_phases.py RUN_DIR     # a run of recipes/yahoo.yaml
    python benchmarks/eval_memory_phases.py --make DIR  # first train one (one update) into DIR/run

Loads the run (``latentebm.load``), then on 16 token sequences of 202 tokens (random ids: only
the shapes matter for memory) fits the Laplace proposal (:func:`fit_laplace`, 8 mode searches
of 2 Adam steps, the Hessian) and runs AIS (2 temperatures), printing the process's peak
resident memory (``ru_maxrss``) after each phase: where ``latentebm evaluate``'s peak comes
from (``benchmarks/eval_memory.py`` measures the command as a whole). Every step of a phase
repeats the same chunk shapes, so 2 steps and 2 temperatures reach the peak of 50 and 25.
glibc's malloc is set up as the CLI sets it (:mod:`latentebm.malloc_tuning`).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

if (_here := str(Path(__file__).resolve().parent)) not in sys.path:
    sys.path.insert(0, _here)
from _machine import write_record  # noqa: E402
from eval_memory import write_corpus  # noqa: E402


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def make_run(folder: Path) -> Path:
    """``recipes/yahoo.yaml`` after one update on a synthetic corpus (eval_memory.py's)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_corpus(folder, 20000, (20, 200), 16, seed=0)
    run = folder / "run"
    subprocess.run(
        [sys.executable, "-m", "latentebm", "train", "yahoo", f"task.train={folder / 'train.txt'}",
         f"task.valid={folder / 'valid.txt'}", f"task.test={folder / 'test.txt'}",
         "trainer.max_steps=1", "trainer.samples_at_end=0", "trainer.progress=false",
         f"trainer.run_dir={run}"],
        check=True,
    )  # fmt: skip
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", nargs="?", type=Path, help="a run of recipes/yahoo.yaml")
    parser.add_argument("--make", type=Path, default=None, help="train one into DIR/run first")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    run = make_run(args.make) if args.make is not None else args.run
    if run is None:
        parser.error("give RUN_DIR or --make DIR")
    from latentebm.malloc_tuning import keep_freed_memory

    keep_freed_memory()
    import latentebm
    from latentebm.metrics.marginal import AISSettings, ais_log_joint_normaliser, fit_laplace

    phases: dict[str, dict[str, float]] = {}
    started = time.perf_counter()
    model = latentebm.load(run).model
    phases["loaded"] = {"peak_gib": peak_gib(), "seconds": time.perf_counter() - started}
    x = torch.randint(4, 19000, (16, 202))
    x[:, 0] = 1
    settings = AISSettings(n_temperatures=2, laplace_steps=2)
    started = time.perf_counter()
    fit = fit_laplace(model, x, settings)
    phases["laplace"] = {"peak_gib": peak_gib(), "seconds": time.perf_counter() - started}
    started = time.perf_counter()
    ais_log_joint_normaliser(model, x, settings, proposal=fit)
    phases["ais"] = {"peak_gib": peak_gib(), "seconds": time.perf_counter() - started}
    for name, values in phases.items():
        print(f"{name}: peak {values['peak_gib']:.3f} GiB ({values['seconds']:.0f} s)")
    if args.json is not None:
        threads = torch.get_num_threads()
        write_record(args.json, "benchmarks/eval_memory_phases.py", argv, threads, phases=phases)
    else:
        print(json.dumps(phases))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
