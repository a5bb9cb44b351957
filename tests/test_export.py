"""``latentebm export`` and the places a model loads from: exported folders, ``pretrained:``
names (the models shipped with the package) and ``hf:`` repositories."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import latentebm
from latentebm.checkpoint import CheckpointError
from latentebm.export import export_model, pretrained_names, resolve_model
from tests.conftest import cli_env, train_tiny_run


@pytest.fixture(scope="module")
def persistent_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run with persistent prior and posterior chains (a replay buffer and a
    per-example memory in its checkpoints)."""
    root = tmp_path_factory.mktemp("export")
    return train_tiny_run(
        root,
        "trainer.max_steps=3",
        f"trainer.run_dir={root / 'run'}",
        "model.prior_chain.init=persistent",
        "model.prior_chain.buffer_size=64",
        "model.posterior_chain.init=persistent",
    )


def test_export_keeps_what_a_model_needs_and_loads_like_the_run(
    persistent_run: Path, tmp_path: Path
) -> None:
    out = export_model(persistent_run, tmp_path / "model", card={"data": "tiny synthetic"})
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.yaml", "model.pt"]
    state = torch.load(out / "model.pt", weights_only=True)
    assert not any(k.startswith(("replay.", "posterior_memory.")) for k in state["model"])
    assert "optimizers" not in state and "rng" not in state
    checkpoint = sorted((persistent_run / "checkpoints").glob("*.pt"))[-1]
    assert (out / "model.pt").stat().st_size < checkpoint.stat().st_size
    assert "| data | tiny synthetic |" in (out / "README.md").read_text()
    exported, run = latentebm.load(out), latentebm.load(persistent_run)
    assert exported.step == run.step == 3
    assert exported.model.posterior_memory is None and exported.model.replay is None
    for name, value in run.model.state_dict().items():
        assert torch.equal(exported.model.state_dict()[name], value), name
    assert exported.generate(4, seed=1) == run.generate(4, seed=1)


def test_an_exported_model_loads_without_its_training_data(
    persistent_run: Path, tmp_path: Path
) -> None:
    out = export_model(persistent_run, tmp_path / "model")
    (persistent_run.parent / "tiny.txt").rename(tmp_path / "moved.txt")
    try:
        assert len(latentebm.load(out).generate(2, seed=0)) == 2
    finally:
        (tmp_path / "moved.txt").rename(persistent_run.parent / "tiny.txt")


def test_export_never_overwrites(persistent_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    out.mkdir()
    (out / "mine.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="exists and is not empty"):
        export_model(persistent_run, out)
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]


def test_unknown_pretrained_and_unreachable_hub_names_are_one_line(monkeypatch) -> None:
    with pytest.raises(CheckpointError, match=r"pretrained:nope: no such pretrained model"):
        resolve_model("pretrained:nope")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match=r"hf:someone/model: cannot fetch|needs huggingface"):
        resolve_model("hf:someone/model")


SHIPPED = ["quickstart", "qm9-selfies"]
"""The models the package ships (tasks/pretrained/): each must load, generate and have a card."""


def test_the_shipped_models_are_there() -> None:
    assert set(SHIPPED) <= set(pretrained_names())


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_models_load_and_generate(name: str) -> None:
    model = latentebm.load(f"pretrained:{name}")
    samples = model.generate(3, seed=0)
    assert len(samples) == 3 and all(isinstance(s, str) for s in samples)
    assert (resolve_model(f"pretrained:{name}").parent / "README.md").is_file()  # a model card


def test_export_and_generate_from_the_command_line(persistent_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "shared"
    command = [sys.executable, "-m", "latentebm"]
    done = subprocess.run(
        [*command, "export", str(persistent_run), str(out)],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"exported to {out}" in done.stdout
    done = subprocess.run(
        [*command, "generate", str(out), "-n", "2", "--device", "cpu"],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.strip().splitlines()) == 2


def test_an_export_travels_without_local_paths_and_a_bad_card_writes_nothing(
    persistent_run: Path, tmp_path: Path
) -> None:
    import json

    from latentebm.export import read_card_fields

    out = export_model(persistent_run, tmp_path / "model")
    recipe = torch.load(out / "model.pt", weights_only=True)["recipe"]
    assert recipe["trainer"]["run_dir"] is None  # the run folder of the training machine
    assert str(persistent_run) not in (out / "config.yaml").read_text()
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"metrics": [1, 2]}))
    with pytest.raises(ValueError, match="metrics must be an object"):
        read_card_fields(card)
    card.write_text(json.dumps({"licnce": "MIT"}))
    with pytest.raises(ValueError, match="unknown model card field 'licnce'"):
        read_card_fields(card)


def test_a_failed_export_leaves_no_folder_behind(
    persistent_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import latentebm.export as export_module

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export_module, "write_bytes_atomic", full_disk)
    with pytest.raises(OSError, match="No space left"):
        export_model(persistent_run, tmp_path / "model")
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its staging copy


def test_an_exported_folder_gets_ordinary_permissions(persistent_run: Path, tmp_path: Path) -> None:
    import os
    import stat

    umask = os.umask(0o022)
    try:
        out = export_model(persistent_run, tmp_path / "model")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755


def test_export_into_an_empty_linked_folder_keeps_the_link(
    persistent_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import latentebm.export as export_module

    disk = tmp_path / "big_disk"
    disk.mkdir()
    link = tmp_path / "model"
    link.symlink_to(disk, target_is_directory=True)
    export_model(persistent_run, link)
    assert link.is_symlink() and (disk / "model.pt").is_file()
    # a failure there removes what it wrote and leaves the folder
    empty = tmp_path / "empty"
    empty.mkdir()

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export_module, "write_bytes_atomic", full_disk)
    with pytest.raises(OSError):
        export_model(persistent_run, empty)
    assert empty.is_dir() and list(empty.iterdir()) == []


def test_a_hub_repository_loads_from_what_snapshot_download_returns(
    persistent_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``hf:OWNER/REPO@REV`` loads the folder ``huggingface_hub.snapshot_download`` gives
    (stood in for by an exported folder: the test is offline), passing the revision on."""
    huggingface_hub = pytest.importorskip("huggingface_hub")
    folder = export_model(persistent_run, tmp_path / "hub_copy")
    asked: list[tuple[str, str | None]] = []

    def snapshot_download(repo_id: str, revision: str | None = None, **_: object) -> str:
        asked.append((repo_id, revision))
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    loaded = latentebm.load("hf:someone/tiny-latentebm@v1")
    assert asked == [("someone/tiny-latentebm", "v1")]
    assert loaded.generate(3, seed=2) == latentebm.load(persistent_run).generate(3, seed=2)


def test_the_device_of_a_generator_with_buffers_but_no_parameters() -> None:
    """``LatentEBM.device`` reads buffers when the generator has no parameters (it used to
    fail with a bare StopIteration), and says CPU when it has neither."""
    from latentebm.langevin import LangevinSampler
    from latentebm.model import LatentEBM
    from latentebm.prior import GaussianPrior

    class BuffersOnly(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("scale", torch.ones(2, dtype=torch.float64))

    chains = (LangevinSampler(0, 0.1), LangevinSampler(0, 0.1))
    model = LatentEBM(GaussianPrior(2), BuffersOnly(), *chains)
    assert model.device == torch.device("cpu")
    model.generator.scale = model.generator.scale.to("meta")
    assert model.device == torch.device("meta")
    assert LatentEBM(GaussianPrior(2), torch.nn.Identity(), *chains).device == torch.device("cpu")
