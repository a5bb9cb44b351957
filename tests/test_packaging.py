"""The installed package layout: the tasks and recipes install as ``latentebm.tasks`` and
``latentebm.recipes`` (from the repository's ``tasks/`` and ``recipes/``), old ``tasks.*``
component paths in checkpoints resolve to them, a user's own ``tasks`` package is never
touched, and the core never imports a task."""

from __future__ import annotations

import ast
import importlib.resources
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import latentebm
from latentebm.config import LEGACY_COMPONENTS, current_component_path, recipe_from_dict
from tests.conftest import cli_env, tiny_recipe_dict, tiny_sentences, train_tiny_run

REPO = Path(__file__).resolve().parents[1]

USER_TASKS_INIT = """\
from pathlib import Path
Path(__file__).with_name("imported").write_text("the user's tasks package ran")
raise ImportError("the user's own tasks package")
"""


def user_tasks_package(folder: Path) -> Path:
    """A package called ``tasks`` of the user's own in ``folder`` that marks and fails any
    import of it; returns the marker's path."""
    package = folder / "tasks"
    package.mkdir()
    (package / "__init__.py").write_text(USER_TASKS_INIT, encoding="utf-8")
    (package / "text.py").write_text("raise ImportError('user tasks.text')\n", encoding="utf-8")
    return package / "imported"


def python_module(cwd: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """``python -m latentebm ARGS`` in ``cwd`` (Python puts ``cwd`` first on ``sys.path``)."""
    return subprocess.run(
        [sys.executable, "-m", "latentebm", *map(str, args)],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def old_format_checkpoint(run: Path, out: Path) -> Path:
    """The newest checkpoint of ``run`` as a checkpoint written before the rename stores it:
    every component path of the toolkit's tasks under its old name ``tasks.*``."""
    checkpoint = sorted((run / "checkpoints").glob("step_*.pt"))[-1]
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    text = yaml.safe_dump(state["recipe"])
    assert "latentebm.tasks.text.TextTask" in text
    state["recipe"] = yaml.safe_load(text.replace("latentebm.tasks.", "tasks."))
    out.mkdir(parents=True)
    path = out / checkpoint.name
    torch.save(state, path)
    return path


def test_tasks_and_recipes_are_installed_under_latentebm() -> None:
    import latentebm.tasks.text

    assert Path(latentebm.tasks.text.__file__).resolve() == REPO / "tasks" / "text.py"
    names = {p.name for p in importlib.resources.files("latentebm.recipes").iterdir()}
    assert {"ptb.yaml", "quickstart.yaml", "mnist.yaml"} <= names
    data = importlib.resources.files("latentebm.tasks") / "data" / "wordnet30_examples.txt.gz"
    assert data.is_file()


def test_every_package_folder_is_in_the_wheel() -> None:
    """pyproject.toml lists the packages by hand (tasks/ and recipes/ are mapped under
    latentebm), so a new subpackage left out of the list would be missing from a built wheel
    while an editable install still finds it."""
    tomllib = pytest.importorskip("tomllib", reason="tomllib: Python 3.11+")
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    folders = {
        ".".join(init.parent.relative_to(REPO).parts)
        for init in (REPO / "latentebm").rglob("__init__.py")
    }
    assert folders - listed == set()


def test_legacy_component_paths_map_to_the_installed_tasks() -> None:
    assert current_component_path("tasks.text.TextTask") == "latentebm.tasks.text.TextTask"
    assert current_component_path("tasks.images.ImageTask") == "latentebm.tasks.images.ImageTask"
    old = {"tasks.text.TextTask", "tasks.images.ImageTask", "tasks.molecules.MoleculeTask"}
    assert set(LEGACY_COMPONENTS) == old
    # a user's own classes, even in a module called tasks.text, are left alone
    assert current_component_path("tasks.mine.MyTask") == "tasks.mine.MyTask"
    assert current_component_path("tasks.text.MyTask") == "tasks.text.MyTask"
    assert current_component_path("mytasks.text.TextTask") == "mytasks.text.TextTask"
    recipe = tiny_recipe_dict("tiny.txt")
    recipe["task"]["_component_"] = "tasks.text.TextTask"
    # trusted like a checkpoint's recipe (toolkit modules only): the old name is the toolkit's
    assert recipe_from_dict(recipe).task.component == "latentebm.tasks.text.TextTask"


def test_reading_old_names_never_imports_a_top_level_tasks(tmp_path: Path) -> None:
    marker = user_tasks_package(tmp_path)
    code = (
        "import sys\n"
        "from latentebm.config import recipe_from_dict\n"
        "from tests.conftest import tiny_recipe_dict\n"
        "r = tiny_recipe_dict('tiny.txt'); r['task']['_component_'] = 'tasks.text.TextTask'\n"
        "print(recipe_from_dict(r).task.component)\n"
        "assert 'tasks' not in sys.modules\n"
    )
    env = cli_env()
    env["PYTHONPATH"] = str(REPO)  # for tests.conftest; the user's folder still comes first
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "latentebm.tasks.text.TextTask"
    assert not marker.exists()


@pytest.mark.slow
def test_a_user_tasks_package_breaks_neither_training_nor_loading(tmp_path: Path) -> None:
    """Train, generate and load in a folder that holds the user's own ``tasks`` package, with
    a new checkpoint and with one written before the rename (old ``tasks.*`` names)."""
    marker = user_tasks_package(tmp_path)
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("\n".join(tiny_sentences()) + "\n", encoding="utf-8")
    recipe = tmp_path / "tiny.yaml"
    data = tiny_recipe_dict(corpus, trainer={"max_steps": 2, "run_dir": str(tmp_path / "run")})
    recipe.write_text(yaml.safe_dump(data), encoding="utf-8")
    done = python_module(tmp_path, "train", recipe)
    assert done.returncode == 0, done.stderr
    old = old_format_checkpoint(tmp_path / "run", tmp_path / "old")
    for checkpoint in (tmp_path / "run", old):
        done = python_module(tmp_path, "generate", checkpoint, "-n", "2", "--device", "cpu")
        assert done.returncode == 0, done.stderr
        assert len(done.stdout.strip().splitlines()) == 2
    assert not marker.exists()


def test_a_run_written_before_the_rename_resumes(tmp_path: Path) -> None:
    """``trainer.resume`` from a checkpoint that names ``tasks.text.TextTask`` continues it: the
    old name is the same task, not a changed one."""
    from latentebm.checkpoint import checkpoint_path

    (tmp_path / "new").mkdir()
    run = train_tiny_run(tmp_path / "new", trainer={"max_steps": 2, "checkpoint_every": 2})
    old = old_format_checkpoint(run, tmp_path / "old")
    resumed = train_tiny_run(
        tmp_path / "new",
        f"trainer.resume={old}",
        f"trainer.run_dir={tmp_path / 'continued'}",
        trainer={"max_steps": 3},
    )
    assert torch.load(checkpoint_path(resumed, 3), weights_only=True)["step"] == 3


def test_a_checkpoint_written_before_the_rename_loads(tmp_path: Path) -> None:
    (tmp_path / "new").mkdir()
    run = train_tiny_run(tmp_path / "new", trainer={"max_steps": 2})
    old = old_format_checkpoint(run, tmp_path / "old")
    loaded, fresh = latentebm.load(old), latentebm.load(run)
    assert loaded.recipe.task.component == "latentebm.tasks.text.TextTask"
    assert type(loaded.task) is type(fresh.task)
    for name, value in fresh.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], value), name


def _module_name(path: Path) -> str:
    """The installed module name of a source file (``tasks/`` installs as ``latentebm.tasks``)."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[0] == "tasks":
        parts = ["latentebm", *parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(path: Path, modules: frozenset[str] = frozenset()) -> set[str]:
    """Every module that ``path`` imports at run time, wherever in the file (absolute names;
    relative imports resolved). ``from package import name`` counts as ``package.name`` when
    that is one of ``modules``, else as ``package``. Imports under ``if TYPE_CHECKING:`` are not
    run and not counted."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    pending: list[ast.AST] = [ast.parse(path.read_text(encoding="utf-8"))]
    while pending:
        node = pending.pop()
        if _is_type_checking(node):
            pending.extend(getattr(node, "orelse", []))
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                found.add(sub if sub in modules else module)
        pending.extend(ast.iter_child_nodes(node))
    return found


def _toolkit_sources() -> dict[str, Path]:
    files = [*(REPO / "latentebm").rglob("*.py"), *(REPO / "tasks").rglob("*.py")]
    return {_module_name(path): path for path in sorted(files)}


def test_no_import_cycle_in_the_toolkit() -> None:
    """No module of latentebm (tasks included) imports, directly or through others, a module
    that imports it: every import counts, also those inside functions."""
    sources = _toolkit_sources()
    known = frozenset(sources)
    graph = {
        name: sorted(m for m in _imports(path, known) if m in sources and m != name)
        for name, path in sources.items()
    }
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


# The command-line front end builds an MNIST task for `latentebm mnist-features` (a command about
# that one dataset); no other module of the core may import a task.
FRONT_END_TASK_IMPORTS = {"latentebm/cli/evaluate.py": {"latentebm.tasks.images"}}


def test_the_core_never_imports_a_task() -> None:
    offenders = []
    for path in sorted((REPO / "latentebm").rglob("*.py")):
        name = path.relative_to(REPO).as_posix()
        allowed = FRONT_END_TASK_IMPORTS.get(name, set())
        for module in _imports(path, frozenset(_toolkit_sources())):
            is_task = module == "latentebm.tasks" or module.startswith("latentebm.tasks.")
            if (is_task or module == "tasks" or module.startswith("tasks.")) and (
                module not in allowed
            ):
                offenders.append(f"{name} imports {module}")
    assert offenders == []
    assert _imports(REPO / "latentebm" / "cli" / "evaluate.py") & {"latentebm.tasks.images"}, (
        "the allowance above is stale: remove it"
    )
