"""How long the command line takes to start: ``latentebm --help``, ``ls``, ``--version``, ``cat``.

    python benchmarks/cli_startup.py                     # 10 rounds, median and range
    python benchmarks/cli_startup.py --rounds 20 --json docs/bench/cli_startup.json

Each round runs every command once, in turn (interleaved), as a fresh process with the
interpreter's ``latentebm`` console script; wall-clock seconds from start to exit. The target
(issue 14): ``--help`` well under 0.5 s on the project's 2-core CPU, which means that these
commands import no torch (``tests/test_cli.py`` checks that part without timing it).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

if (_here := str(Path(__file__).resolve().parent)) not in sys.path:
    sys.path.insert(0, _here)
from _machine import load_average, write_record  # noqa: E402

COMMANDS: dict[str, list[str]] = {
    "--help": ["--help"],
    "ls": ["ls"],
    "--version": ["--version"],
    "cat quickstart": ["cat", "quickstart"],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    script = Path(sys.executable).with_name("latentebm")
    base = [str(script)] if script.is_file() else [sys.executable, "-m", "latentebm"]
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    load_start = load_average()
    for _ in range(args.rounds):
        for name, command in COMMANDS.items():
            started = time.perf_counter()
            subprocess.run([*base, *command], check=True, capture_output=True)
            times[name].append(time.perf_counter() - started)
    rows = {
        name: {"median_s": statistics.median(v), "min_s": min(v), "max_s": max(v)}
        for name, v in times.items()
    }
    print(f"| command | median s | range s | ({args.rounds} rounds, interleaved) |")
    print("|---|---:|---:|---|")
    for name, row in rows.items():
        print(
            f"| latentebm {name} | {row['median_s']:.2f} "
            f"| {row['min_s']:.2f}-{row['max_s']:.2f} | |"
        )
    if args.json is not None:
        write_record(
            args.json,
            "benchmarks/cli_startup.py",
            argv,
            threads=1,
            rounds=args.rounds,
            load_average_start=load_start,
            load_average_end=load_average(),
            commands=rows,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
