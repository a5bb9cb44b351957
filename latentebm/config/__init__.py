"""Typed recipes: YAML files plus dotted command-line overrides, validated into dataclasses.

A recipe is a YAML file such as ``recipes/ptb.yaml``; the command line may override any key with
``section.sub.key=value`` items (``latentebm train recipes/ptb.yaml trainer.max_steps=100``) and
delete a key or section of the file with ``~section.sub.key`` items (Hydra's syntax; all
deletions are applied before any ``key=value`` item, see :func:`apply_overrides`). The
merged mapping is validated against the :class:`Recipe` dataclass schema
(:mod:`~latentebm.config.schema`). Every problem is reported as one :class:`RecipeError` whose
message is a single line naming where the bad key came from (the file, or ``command line`` plus
the override item) and its dotted key path, e.g.::

    recipes/ptb.yaml: trainer.max_stpes: unknown key (known: batch_size, ...); did you mean ...
    command line: trainer.max_steps=abc: expected int, got str 'abc'

Component sections (the task, the generator) name a class with ``_component_: pkg.mod.Class``;
the remaining keys of the section are validated against ``Class.Config`` (a dataclass) and the
object is later built with :func:`instantiate` as ``Class(config, **extra)``.

A section whose field has a dataclass default (``model.prior_chain``, ``optim.generator``, ...)
may be given partially: the keys not given keep the values of that default, so
``optim.generator.lr=1e-4`` keeps ``grad_clip: 5.0``.

Which modules a ``_component_`` may import depends on where the recipe came from
(``docs/guarantees.md``): a recipe file the user runs (:func:`load_recipe`, :func:`load_config`)
is trusted like a script, so its components may come from any importable module; a recipe read
from anywhere else (a checkpoint: :func:`recipe_from_dict`, :func:`validate`) may only import
from the toolkit's own packages (:data:`TOOLKIT_PACKAGES`) and from the module prefixes listed in
the environment variable ``LATENTEBM_TRUSTED_MODULES``. That check looks at the dotted name only,
before anything is imported.

The package, one job per module (each imports only the ones before it):

* :mod:`~latentebm.config.errors`: :class:`RecipeError` and the one-line messages naming a key's
  source;
* :mod:`~latentebm.config.components`: ``_component_`` sections, :func:`instantiate` and the
  trusted-module check;
* :mod:`~latentebm.config.checks`: the value checks of fields (:func:`checked_field`);
* :mod:`~latentebm.config.typed`: YAML data into dataclasses (:func:`validate`) and back
  (:func:`to_plain`);
* :mod:`~latentebm.config.schema`: the recipe dataclasses (:class:`Recipe`, ...);
* :mod:`~latentebm.config.yaml_io`: the safe YAML loader with its limits, recipes as YAML;
* :mod:`~latentebm.config.overrides`: ``key=value`` and ``~key`` command-line items;
* :mod:`~latentebm.config.recipe`: loading, checking, converting and saving recipes;
* :mod:`~latentebm.config.keys`: the keys listing of ``latentebm keys``.

Every public name is importable from ``latentebm.config`` itself. The package imports no torch
(``latentebm keys``, ``ls`` and ``--help`` start without it).
"""

from __future__ import annotations

from latentebm.config.checks import (
    SEED_LIMIT,
    Check,
    check_fields,
    checked_field,
    device_name,
    digit_label,
    each_positive,
    each_rate,
    non_negative,
    open_unit,
    positive,
    probability,
    rate,
    seed_value,
)
from latentebm.config.components import (
    COMPONENT_KEY,
    LEGACY_COMPONENTS,
    TOOLKIT_PACKAGES,
    TRUSTED_MODULES_ENV,
    ComponentConfig,
    current_component_path,
    current_component_paths,
    import_component,
    instantiate,
    trusted_module_prefixes,
)
from latentebm.config.errors import (
    COMMAND_LINE,
    ErrorContext,
    RecipeError,
    describe_value,
    did_you_mean,
    format_key_path,
    short_repr,
)
from latentebm.config.keys import describe_keys, recipe_components
from latentebm.config.overrides import DELETE_PREFIX, apply_overrides, apply_overrides_with_origins
from latentebm.config.recipe import (
    load_config,
    load_recipe,
    recipe_from_dict,
    recipe_to_dict,
    save_recipe,
    with_current_defaults,
)
from latentebm.config.schema import (
    AdamConfig,
    AnomalyConfig,
    ChainConfig,
    DataConfig,
    ModelConfig,
    OptimConfig,
    PriorConfig,
    Recipe,
    TimeBudgetConfig,
    TrainerConfig,
)
from latentebm.config.typed import cached_type_hints, convert, to_plain, type_name, validate
from latentebm.config.yaml_io import (
    MAX_YAML_DEPTH,
    MAX_YAML_VALUES,
    load_yaml,
    read_yaml,
    recipe_to_yaml,
)

__all__ = [
    # the recipe schema (schema.py) and component sections (components.py)
    "AdamConfig",
    "AnomalyConfig",
    "ChainConfig",
    "ComponentConfig",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "PriorConfig",
    "Recipe",
    "TimeBudgetConfig",
    "TrainerConfig",
    "COMPONENT_KEY",
    "LEGACY_COMPONENTS",
    "TOOLKIT_PACKAGES",
    "TRUSTED_MODULES_ENV",
    "current_component_path",
    "current_component_paths",
    "import_component",
    "instantiate",
    "trusted_module_prefixes",
    # errors (errors.py)
    "COMMAND_LINE",
    "ErrorContext",
    "RecipeError",
    "describe_value",
    "did_you_mean",
    "format_key_path",
    "short_repr",
    # value checks of fields (checks.py)
    "SEED_LIMIT",
    "Check",
    "check_fields",
    "checked_field",
    "device_name",
    "digit_label",
    "each_positive",
    "each_rate",
    "non_negative",
    "open_unit",
    "positive",
    "probability",
    "rate",
    "seed_value",
    # typed conversion (typed.py)
    "cached_type_hints",
    "convert",
    "to_plain",
    "type_name",
    "validate",
    # overrides (overrides.py) and YAML (yaml_io.py)
    "DELETE_PREFIX",
    "apply_overrides",
    "apply_overrides_with_origins",
    "MAX_YAML_DEPTH",
    "MAX_YAML_VALUES",
    "load_yaml",
    "read_yaml",
    "recipe_to_yaml",
    # loading and saving recipes (recipe.py), the keys listing (keys.py)
    "load_config",
    "load_recipe",
    "recipe_from_dict",
    "recipe_to_dict",
    "save_recipe",
    "with_current_defaults",
    "describe_keys",
    "recipe_components",
]
