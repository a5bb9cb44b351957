"""The checks of command-line values shared by the commands: the argparse ``type`` functions
(:func:`positive_int`, :func:`seed_int`, ...), the decoding options of ``generate``,
``interpolate`` and ``evaluate`` (:func:`add_decode_args`, :func:`decode_options`).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable

# ------------------------------------------------------------------ argparse types of options
# A bad value is refused while the command line is parsed: argparse prints the usage and
# "latentebm COMMAND: error: argument -n: must be >= 1, got -1" and exits 2, before any model
# is loaded.


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer ``>= minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = f"int_at_least_{minimum}"
    return parse


positive_int = int_at_least(1)
"""A count that needs at least one (samples, chains, batch size, top-k, beam size ...)."""

non_negative_int = int_at_least(0)
"""A count where 0 means none (chain steps: 0 = no Langevin step; 0 = skip)."""

SEED_RANGE = (-(2**63), 2**64 - 1)
"""The integers ``torch.Generator.manual_seed`` accepts."""


def seed_int(text: str) -> int:
    """An argparse ``type``: a random seed ``torch.Generator.manual_seed`` accepts."""
    value = int_at_least(SEED_RANGE[0])(text)
    if value > SEED_RANGE[1]:
        raise argparse.ArgumentTypeError(f"must be <= {SEED_RANGE[1]}, got {value}")
    return value


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text}")
    return value


def positive_float(text: str) -> float:
    """An argparse ``type``: a finite number ``> 0`` (a temperature)."""
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def unit_interval_float(text: str) -> float:
    """An argparse ``type``: a number in ``(0, 1]`` (a nucleus probability, ``--top-p``)."""
    value = _float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def share_below_one(text: str) -> float:
    """An argparse ``type``: a number in [0, 1)."""
    value = _float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def non_negative_float(text: str) -> float:
    """An argparse ``type``: a finite number ``>= 0`` (a length penalty)."""
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def chain_steps(text: str) -> list[int]:
    """An argparse ``type``: comma-separated chain steps ``>= 0`` (``0,40,100``), sorted and
    without repeats; at least one."""
    try:
        steps = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        steps = [-1]
    if not steps or steps[0] < 0:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated steps >= 0, e.g. 0,40,100, got {text!r}"
        )
    return steps


_DECODE_OPTION_MODE = {
    "temperature": "sample",
    "top_k": "sample",
    "top_p": "sample",
    "beam_size": "beam",
    "length_penalty": "beam",
}
"""The decoding mode each decoding option belongs to. ``--repetition-penalty`` (greedy and
sample) is not here: with ``--decode beam`` it is an error, not a warning."""


def decode_options(args: argparse.Namespace) -> dict[str, object]:
    """The decoding options of ``generate`` / ``interpolate`` for the generator's ``sample``
    (:meth:`~latentebm.generators.decoding.StepwiseDecoder.sample`); an option given for
    another mode than ``--decode`` (``--temperature`` or ``--top-p`` with the default greedy
    decoding, say) is named in a warning line, not silently ignored. ``--max-new-tokens`` is
    passed as ``max_length`` (the same bound: tokens generated, excluding ``<bos>``)."""
    decode = args.decode or "greedy"
    for name, mode in _DECODE_OPTION_MODE.items():
        if getattr(args, name, None) is not None and args.decode is not None and decode != mode:
            flag = "--" + name.replace("_", "-")
            print(
                f"latentebm: warning: {flag} applies to --decode {mode}; ignored with "
                f"--decode {decode}",
                file=sys.stderr,
            )
    names = ("temperature", "top_k", "top_p", "repetition_penalty")
    if decode == "beam":
        names += ("beam_size", "length_penalty")
    given = {name: getattr(args, name, None) for name in names}
    if getattr(args, "max_new_tokens", None) is not None:
        given["max_length"] = args.max_new_tokens
    given = {name: value for name, value in given.items() if value is not None}
    return {"decode": args.decode, **given}  # what is not given keeps the callee's default


def add_decode_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--decode",
        choices=("greedy", "sample", "beam"),
        default="greedy",
        help="decoding of each z (default greedy; generate and evaluate sample molecules)",
    )
    parser.add_argument(
        "--temperature", type=positive_float, default=None, help="for --decode sample (> 0; 1)"
    )
    parser.add_argument(
        "--top-k", type=positive_int, default=None, help="for --decode sample (>= 1)"
    )
    parser.add_argument(
        "--beam-size",
        type=positive_int,
        default=None,
        metavar="K",
        help="for --decode beam (default 5)",
    )
    parser.add_argument(
        "--length-penalty",
        type=non_negative_float,
        default=None,
        metavar="A",
        help="for --decode beam: rank by log p / length**A (default 0: plain log p)",
    )


def add_generate_decode_args(parser: argparse.ArgumentParser) -> None:
    """The decoding options of ``generate`` beyond :func:`add_decode_args`, named as in
    Hugging Face ``generate``."""
    parser.add_argument(
        "--top-p",
        type=unit_interval_float,
        default=None,
        metavar="P",
        help="for --decode sample: nucleus sampling (Holtzman et al. 2020), draw from the "
        "smallest set of most likely tokens holding probability >= P, in (0, 1] (after "
        "--temperature and --top-k)",
    )
    parser.add_argument(
        "--repetition-penalty",
        type=positive_float,
        default=None,
        metavar="R",
        help="for --decode greedy and sample (not beam): CTRL's penalty (Keskar et al. 2019) "
        "on tokens already generated, positive logits / R, negative ones * R (> 0; 1: off)",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=positive_int,
        default=None,
        metavar="N",
        help="most tokens per sample, excluding <bos> (default: the model's max_decode_length)",
    )
