"""The ``latentebm`` command: ``train``, ``generate``, ``interpolate``, ``evaluate``,
``diagnose``, ``plot``, ``export``, ``score-molecules``, ``mnist-features``, ``ls``, ``cat``,
``keys``, ``cp``.

Contract: :func:`main` runs one command and returns its exit status; a bad option value is
refused while the command line is parsed (argparse's usage line and exit status 2, before any
model is loaded), and every user error is one line on stderr (``latentebm: error: ...``, exit
status 2; ``LATENTEBM_DEBUG=1``: the traceback). ``latentebm --help``, ``--version`` and ``ls``
import no torch: the package's modules import only the standard library and each other at
module level, everything heavier inside the command that needs it (``cat`` and ``keys`` of a
recipe import its task and generator classes, and with them torch).

The package, one job per module (each imports only the ones before it):

* :mod:`~latentebm.cli.options`: the argparse value types, the decoding options;
* :mod:`~latentebm.cli.recipes`: recipes by file or built-in name, and ``ls``, ``cp``, ``cat``,
  ``keys``, ``train``;
* :mod:`~latentebm.cli.generate`: ``generate`` and ``interpolate``;
* :mod:`~latentebm.cli.evaluate`: ``evaluate``, ``score-molecules``, ``mnist-features``;
* :mod:`~latentebm.cli.run_tools`: ``diagnose``, ``plot``, ``export``;
* :mod:`~latentebm.cli.parser`: the argparse parser (:func:`build_parser`);
* :mod:`~latentebm.cli.entry`: :func:`main`, errors as one line, the toolkit's logs on stderr.

Every public name is importable from ``latentebm.cli`` itself; ``python -m latentebm.cli`` runs
:func:`main` (``torchrun ... -m latentebm.cli train ptb``).
"""

from __future__ import annotations

from latentebm.cli.entry import main, one_line
from latentebm.cli.evaluate import (
    cmd_evaluate,
    cmd_mnist_features,
    cmd_score_molecules,
    likelihood_settings,
)
from latentebm.cli.generate import cmd_generate, cmd_interpolate
from latentebm.cli.options import (
    SEED_RANGE,
    add_decode_args,
    add_generate_decode_args,
    chain_steps,
    decode_options,
    int_at_least,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    seed_int,
    share_below_one,
    unit_interval_float,
)
from latentebm.cli.parser import EXAMPLES, OVERRIDES_HELP, build_parser
from latentebm.cli.recipes import (
    BUILTIN_COMPONENTS,
    FAMILIES,
    builtin_recipes,
    cmd_cat,
    cmd_cp,
    cmd_keys,
    cmd_ls,
    cmd_train,
    recipe_family,
    resolve_recipe,
)
from latentebm.cli.run_tools import cmd_diagnose, cmd_export, cmd_plot

__all__ = [
    "BUILTIN_COMPONENTS",
    "EXAMPLES",
    "FAMILIES",
    "OVERRIDES_HELP",
    "SEED_RANGE",
    "add_decode_args",
    "add_generate_decode_args",
    "build_parser",
    "builtin_recipes",
    "chain_steps",
    "cmd_cat",
    "cmd_cp",
    "cmd_diagnose",
    "cmd_evaluate",
    "cmd_export",
    "cmd_generate",
    "cmd_interpolate",
    "cmd_keys",
    "cmd_ls",
    "cmd_mnist_features",
    "cmd_plot",
    "cmd_score_molecules",
    "cmd_train",
    "decode_options",
    "int_at_least",
    "likelihood_settings",
    "main",
    "non_negative_float",
    "non_negative_int",
    "one_line",
    "positive_float",
    "positive_int",
    "recipe_family",
    "resolve_recipe",
    "seed_int",
    "share_below_one",
    "unit_interval_float",
]
