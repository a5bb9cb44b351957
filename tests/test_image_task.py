"""Tests for latentebm.tasks.images.ImageTask and latentebm.image_io (tiny synthetic data; real
MNIST when LATENTEBM_DATA holds it)."""

from __future__ import annotations

import gzip
import io
import math
import os
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from latentebm.image_io import make_grid, read_idx, save_grid, to_uint8
from latentebm.tasks.images import ImageTask, to_float

# --------------------------------------------------------------------------------------------
# Writers of the real formats (shared with test_image_data_scripts.py)
# --------------------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array (type 0x08)."""
    assert array.dtype == np.uint8
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_mnist(
    folder: Path, n_train: int = 60, n_test: int = 20, seed: int = 0, compress: bool = True
) -> dict[str, np.ndarray]:
    """Tiny MNIST-format files: random 28x28 images, labels cycling 0-9."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": ((np.arange(n_test) + 3) % 10).astype(np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        data = idx_bytes(array)
        if compress:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return arrays


def cifar_records(n: int, seed: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    """``n`` CIFAR-10 binary records, their images (n, 3, 32, 32) and labels."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    raw = b"".join(bytes([labels[i]]) + images[i].tobytes() for i in range(n))
    return raw, images, labels


def write_cifar_tar(path: Path, n: int = 3) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A ``cifar-10-binary.tar.gz`` with ``n`` records per batch file."""
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    out = {}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for k, name in enumerate(names):
            raw, images, labels = cifar_records(n, seed=k)
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
            out[name] = (images, labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return out


def write_svhn(folder: Path, n: int = 4, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Tiny ``train_32x32.mat`` / ``test_32x32.mat``: X (32, 32, 3, n), y (n, 1) in 1-10."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split in ("train", "test"):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).reshape(n, 1).astype(np.uint8)
        savemat(folder / f"{split}_32x32.mat", {"X": x, "y": y})
        out[split] = (x, y)
    return out


def write_jpegs(folder: Path, names: list[str], size: tuple[int, int] = (178, 218)) -> None:
    """Solid-colour JPEGs (each a different colour) named ``names``."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        colour = (40 * i + 20, 200 - 50 * i, 90)
        Image.new("RGB", size, colour).save(folder / name, quality=95)


def real_mnist_root() -> Path:
    root = os.environ.get("LATENTEBM_DATA")
    if not root:
        pytest.skip("LATENTEBM_DATA is not set; real MNIST unavailable")
    if not (Path(root) / "mnist" / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST IDX files not found in {root}/mnist")
    return Path(root)


@pytest.fixture
def tiny_mnist(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    arrays = write_mnist(tmp_path / "data" / "mnist")
    return tmp_path / "data", arrays


# --------------------------------------------------------------------------------------------
# image_io
# --------------------------------------------------------------------------------------------


def test_read_idx_round_trip_and_errors(tmp_path: Path) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a.idx").write_bytes(idx_bytes(array))
    (tmp_path / "a.idx.gz").write_bytes(gzip.compress(idx_bytes(array)))
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx"), array)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx.gz"), array)
    (tmp_path / "bad_magic").write_bytes(b"\x01\x00" + idx_bytes(array)[2:])
    with pytest.raises(ValueError, match="bad_magic.*not an IDX"):
        read_idx(tmp_path / "bad_magic")
    (tmp_path / "short").write_bytes(idx_bytes(array)[:-1])
    with pytest.raises(ValueError, match=r"short: IDX dimensions \(2, 3, 4\) need 24"):
        read_idx(tmp_path / "short")
    big_endian = np.array([1, 256, 65535], dtype=">i4")
    header = bytes([0, 0, 0x0C, 1]) + struct.pack(">I", 3)
    (tmp_path / "ints").write_bytes(header + big_endian.tobytes())
    assert read_idx(tmp_path / "ints").tolist() == [1, 256, 65535]


def test_to_uint8_inverts_scaling() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (5, 3, 4, 6), dtype=np.uint8)
    x = to_float(pixels)
    assert x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
    np.testing.assert_array_equal(to_uint8(x), pixels.transpose(0, 2, 3, 1))
    assert to_uint8(torch.tensor([[[[-3.0, 3.0]]]])).tolist() == [[[[0], [255]]]]


def test_make_grid_layout_and_png(tmp_path: Path) -> None:
    pixels = np.random.default_rng(1).integers(0, 256, (5, 3, 4, 6), dtype=np.uint8)
    grid = make_grid(to_float(pixels), nrow=3, padding=2)
    assert grid.shape == (2 * (4 + 2) + 2, 3 * (6 + 2) + 2, 3)
    # image 4: row 1, column 1 -> top 2 + 6, left 2 + 8
    np.testing.assert_array_equal(grid[8:12, 10:16], pixels[4].transpose(1, 2, 0))
    assert (grid[:2] == 0).all() and (grid[-6:, -8:] == 0).all()  # padding, empty cell
    from PIL import Image

    path = save_grid(to_float(pixels[:, :1]), tmp_path / "sub" / "grid.png")
    with Image.open(path) as im:
        assert im.mode == "L" and im.size == (3 * 8 + 2, 2 * 6 + 2)
        np.testing.assert_array_equal(np.asarray(im)[2:6, 2:8], pixels[0, 0])
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"]  # no temp file left


# --------------------------------------------------------------------------------------------
# ImageTask on tiny synthetic data
# --------------------------------------------------------------------------------------------


def test_default_splits_and_scaling(tiny_mnist: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, arrays = tiny_mnist
    task = ImageTask(dataset="mnist", data_root=root, valid_fraction=0.25)
    assert task.splits == ["train", "valid", "test"]
    assert (task.num_sentences("train"), task.num_examples("valid")) == (45, 15)
    assert task.num_sentences("test") == 20
    assert task.generator_kwargs() == {"image_shape": (1, 28, 28)}
    train_images = arrays["train-images-idx3-ubyte"]
    train_idx, valid_idx = task.source_index("train"), task.source_index("valid")
    assert not set(train_idx) & set(valid_idx) and len(set(train_idx) | set(valid_idx)) == 60
    np.testing.assert_array_equal(task.images("train")[:, 0], train_images[train_idx])
    np.testing.assert_array_equal(task.labels("valid"), valid_idx % 10)
    x = task.tensor("test", [0, 3])
    torch.testing.assert_close(
        x, torch.from_numpy(arrays["t10k-images-idx3-ubyte"][[0, 3]][:, None]).float() / 127.5 - 1
    )
    assert task.default_metrics == ("mse",)
    assert "train 45 / valid 15 / test 20" in task.describe()
    with pytest.raises(ValueError, match="read-only"):
        task.images("train")[0, 0, 0, 0] = 1
    with pytest.raises(ValueError, match="anomaly"):
        task.anomaly_labels("test")


def test_batches_deterministic_and_partitioned(tiny_mnist: tuple[Path, ...]) -> None:
    task = ImageTask(dataset="mnist", data_root=tiny_mnist[0])
    a = task.indexed_batches("train", 16, seed=3, epoch=1)
    b = task.indexed_batches("train", 16, seed=3, epoch=1)
    c = task.indexed_batches("train", 16, seed=3, epoch=2)
    assert sorted(len(i) for _, i in a) == [12, 16, 16, 16]  # last partial batch kept
    for (xa, ia), (xb, ib) in zip(a, b, strict=True):
        torch.testing.assert_close(xa, xb)
        assert torch.equal(ia, ib)
        torch.testing.assert_close(xa, task.tensor("train", ia))
    order = torch.cat([i for _, i in a])
    assert sorted(order.tolist()) == list(range(60))
    assert not torch.equal(order, torch.cat([i for _, i in c]))
    plain = task.batches("train", 16, seed=0, epoch=0, shuffle=False)
    torch.testing.assert_close(torch.cat(plain), task.tensor("train"))
    ranks = [
        task.indexed_batches("train", 7, seed=0, epoch=0, rank=r, world_size=3) for r in range(3)
    ]
    assert [len(r) for r in ranks] == [3, 3, 3]  # 9 batches of 60 / 7 -> 3 each
    seen = [int(i) for r in ranks for _, idx in r for i in idx]
    assert len(seen) == len(set(seen))
    with pytest.raises(ValueError, match="batch_size"):
        task.batches("train", 0, seed=0, epoch=0)
    assert task.num_target_tokens(plain[0]) == 16


def test_anomaly_splits_synthetic(tiny_mnist: tuple[Path, ...]) -> None:
    task = ImageTask(dataset="mnist", data_root=tiny_mnist[0], anomaly_digit=3)
    # pool: 60 train labels i % 10, then 20 test labels (i + 3) % 10 -> 8 threes, 72 normal
    labels = np.concatenate([np.arange(60) % 10, (np.arange(20) + 3) % 10])
    n_normal = int((labels != 3).sum())
    n_train = math.floor(0.8 * n_normal)
    assert task.splits == ["train", "test"]
    assert task.num_sentences("train") == n_train
    assert task.num_sentences("test") == n_normal - n_train + 8
    train, test = task.source_index("train"), task.source_index("test")
    assert not set(train) & set(test) and len(set(train) | set(test)) == 80
    np.testing.assert_array_equal(task.labels("test"), labels[test])
    assert (task.labels("train") != 3).all()
    np.testing.assert_array_equal(task.anomaly_labels("test"), (labels[test] == 3).astype(int))
    assert task.anomaly_labels("test")[-8:].tolist() == [1] * 8  # anomalous last
    assert task.anomaly_labels("train").sum() == 0
    normal = np.flatnonzero(labels != 3)
    expected = normal[np.random.default_rng(0).permutation(len(normal))][:n_train]
    np.testing.assert_array_equal(train, expected)
    other = ImageTask(
        dataset="mnist", data_root=tiny_mnist[0], anomaly_digit=3, anomaly_split_seed=1
    )
    assert not np.array_equal(other.source_index("train"), train)
    assert task.default_metrics == ("anomaly", "mse")
    assert "anomalous digit 3 (8 in test" in task.describe()


def test_config_keywords_override(tiny_mnist: tuple[Path, ...]) -> None:
    cfg = ImageTask.Config(dataset="mnist", max_images=10)
    task = ImageTask(cfg, data_root=tiny_mnist[0], anomaly_digit=2, anomaly_train_fraction=0.5)
    assert task.config.anomaly_digit == 2 and task.config.max_images == 10
    assert task.num_sentences("train") == 10
    with pytest.raises(ValueError, match="disagree"):
        ImageTask(ImageTask.Config(anomaly_digit=1), data_root=tiny_mnist[0], anomaly_digit=2)
    with pytest.raises(ValueError, match="anomaly digit must be in 0-9"):
        ImageTask(data_root=tiny_mnist[0], anomaly_digit=11)
    with pytest.raises(ValueError, match="valid_fraction"):
        ImageTask.Config(valid_fraction=1.0)
    with pytest.raises(ValueError, match="needs class labels"):
        ImageTask.Config(dataset="celeba", anomaly_digit=1)


def test_state_dict_round_trip(tiny_mnist: tuple[Path, ...], tmp_path: Path) -> None:
    root = tiny_mnist[0]
    task = ImageTask(dataset="mnist", data_root=root, anomaly_digit=5, valid_fraction=0.1)
    state = task.state_dict()
    file = tmp_path / "state.pt"
    torch.save(state, file)
    state = torch.load(file, weights_only=True)
    # with a state nothing is read until a split is used
    lazy = ImageTask(dataset="mnist", data_root=tmp_path / "nowhere", state=state, anomaly_digit=5)
    assert lazy.generator_kwargs() == {"image_shape": (1, 28, 28)}
    restored = ImageTask(
        dataset="mnist", data_root=root, state=state, anomaly_digit=5, valid_fraction=0.1
    )
    assert restored.splits == task.splits and restored.state_dict() == task.state_dict()
    np.testing.assert_array_equal(restored.source_index("test"), task.source_index("test"))
    with pytest.raises(ValueError, match="anomaly_digit"):
        ImageTask(dataset="mnist", data_root=root, state=state, anomaly_digit=4)
    write_mnist(root / "mnist", n_train=70)  # the data changed
    changed = ImageTask(dataset="mnist", data_root=root, state=state, anomaly_digit=5)
    with pytest.raises(ValueError, match="the data changed"):
        changed.num_sentences("test")


def test_missing_data_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FileNotFoundError, match=r"mnist.*data_scripts/mnist\.py --out"):
        ImageTask(dataset="mnist", data_root=tmp_path)
    (tmp_path / "mnist").mkdir()
    with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte.*data_scripts/mnist"):
        ImageTask(dataset="mnist", data_root=tmp_path)
    monkeypatch.delenv("LATENTEBM_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="no data root is set"):
        ImageTask(dataset="cifar10")
    with pytest.raises(FileNotFoundError, match=r"celeba\.py .*--source"):
        ImageTask(dataset="celeba", data_root=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"svhn.*data_scripts/svhn\.py"):
        ImageTask(dataset="svhn", data_root=tmp_path)


def test_samples_png_and_decode(tiny_mnist: tuple[Path, ...], tmp_path: Path) -> None:
    task = ImageTask(dataset="mnist", data_root=tiny_mnist[0], max_images=8)
    x = task.tensor("train")
    out = task.save_samples(x, tmp_path / "samples" / "step_00000001.txt")
    assert out == tmp_path / "samples" / "step_00000001.png" and out.is_file()
    assert task.draw_grid(x, tmp_path / "grid.png").is_file()
    lines = task.decode(x[:2])
    assert len(lines) == 2 and lines[0].startswith("image 0: mean=")
    assert f"min={x[0].min():.4f}" in lines[0]


def test_cifar10_binary(tmp_path: Path) -> None:
    written = write_cifar_tar(tmp_path / "cifar10" / "cifar-10-binary.tar.gz")
    task = ImageTask(dataset="cifar10", data_root=tmp_path)
    assert task.image_shape == (3, 32, 32)
    assert (task.num_sentences("train"), task.num_sentences("test")) == (15, 3)
    images, labels = written["data_batch_2.bin"]
    np.testing.assert_array_equal(task.images("train")[3:6], images)  # R, G, B planes
    np.testing.assert_array_equal(task.labels("train")[3:6], labels)


def test_svhn_mat(tmp_path: Path) -> None:
    pytest.importorskip("scipy")
    written = write_svhn(tmp_path / "svhn", n=10)
    task = ImageTask(dataset="svhn", data_root=tmp_path)
    x, _ = written["test"]
    np.testing.assert_array_equal(task.images("test"), x.transpose(3, 2, 0, 1))
    assert task.labels("test").tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]  # 10 means digit 0
    resized = ImageTask(dataset="svhn", data_root=tmp_path, image_size=16)
    assert resized.image_shape == (3, 16, 16)
    assert resized.images("train").dtype == np.uint8


def test_celeba_folder_crop_resize(tmp_path: Path) -> None:
    names = ["000001.jpg", "000002.jpg", "200000.jpg"]
    write_jpegs(tmp_path / "celeba" / "img_align_celeba", names)
    task = ImageTask(dataset="celeba", data_root=tmp_path)
    assert task.image_shape == (3, 64, 64)
    assert (task.num_sentences("train"), task.num_sentences("test")) == (2, 1)
    mean_colour = task.images("test")[0].reshape(3, -1).mean(axis=1)
    np.testing.assert_allclose(mean_colour, [100, 100, 90], atol=3)  # colour of image 2
    (tmp_path / "celeba" / "list_eval_partition.txt").write_text(
        "000001.jpg 2\n000002.jpg 0\n200000.jpg 0\n"
    )
    by_file = ImageTask(dataset="celeba", data_root=tmp_path, image_size=32)
    assert (by_file.num_sentences("train"), by_file.num_sentences("test")) == (2, 1)
    assert by_file.image_shape == (3, 32, 32)
    (tmp_path / "celeba" / "img_align_celeba" / "000002.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=r"000002\.jpg: cannot decode image"):
        ImageTask(dataset="celeba", data_root=tmp_path)
    write_jpegs(tmp_path / "small" / "celeba", ["000001.jpg"], size=(100, 120))
    with pytest.raises(ValueError, match=r"000001\.jpg: cannot center-crop 140x140"):
        ImageTask(dataset="celeba", data_root=tmp_path / "small")


def test_folder_dataset(tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "pics" / "nested"
    folder.mkdir(parents=True)
    for i in range(3):
        Image.new("L", (10, 10), 50 * i).save(folder / f"{i}.png")
    task = ImageTask(dataset="folder", path=str(tmp_path / "pics"))
    assert task.image_shape == (1, 10, 10) and task.splits == ["train"]
    assert task.images("train")[:, 0, 0, 0].tolist() == [0, 50, 100]
    assert ImageTask(dataset="folder", path=str(tmp_path / "pics"), image_size=4).image_shape == (
        1,
        4,
        4,
    )
    Image.new("L", (12, 10)).save(folder / "3.png")
    with pytest.raises(ValueError, match="different sizes"):
        ImageTask(dataset="folder", path=str(tmp_path / "pics"))


# --------------------------------------------------------------------------------------------
# Real MNIST
# --------------------------------------------------------------------------------------------


@pytest.mark.real_data
def test_real_mnist_anomaly_protocol() -> None:
    root = real_mnist_root()
    task = ImageTask(dataset="mnist", data_root=root, anomaly_digit=1)
    train_labels = read_idx(root / "mnist" / "train-labels-idx1-ubyte.gz")
    test_labels = read_idx(root / "mnist" / "t10k-labels-idx1-ubyte.gz")
    pooled = np.concatenate([train_labels, test_labels]).astype(np.int64)
    n_ones = int((pooled == 1).sum())
    assert n_ones == 6742 + 1135
    n_train = math.floor(0.8 * (70000 - n_ones))
    assert task.num_sentences("train") == n_train == 49698
    assert task.num_sentences("test") == 70000 - n_ones - n_train + n_ones
    train, test = task.source_index("train"), task.source_index("test")
    assert not set(train.tolist()) & set(test.tolist())
    assert len(train) + len(test) == 70000
    np.testing.assert_array_equal(task.labels("train"), pooled[train])
    np.testing.assert_array_equal(task.labels("test"), pooled[test])
    assert (task.labels("train") != 1).all() and task.anomaly_labels("test").sum() == n_ones
    batches = task.batches("train", 500, seed=1, epoch=0)
    again = task.batches("train", 500, seed=1, epoch=0)
    torch.testing.assert_close(batches[3], again[3])
    x = batches[0]
    assert x.shape == (500, 1, 28, 28) and x.min() == -1 and x.max() == 1


@pytest.mark.real_data
def test_real_mnist_default_splits() -> None:
    root = real_mnist_root()
    task = ImageTask(dataset="mnist", data_root=root, valid_fraction=0.1)
    assert [task.num_sentences(s) for s in task.splits] == [54000, 6000, 10000]
    assert sorted(np.bincount(task.labels("test")).tolist())[-1] == 1135  # ones in t10k


# --------------------------------------------------------------------------------------------
# Recipes
# --------------------------------------------------------------------------------------------

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
IMAGE_RECIPES = {
    # recipe: (image shape, z_dim, architecture, ngf, K1) from Tables 5 and 6 (mnist: ours)
    "mnist": ((1, 28, 28), 100, "mnist28", 32, 20),
    "mnist_anomaly": ((1, 28, 28), 100, "mnist28", 32, 20),
    "svhn": ((3, 32, 32), 100, "svhn32", 64, 20),
    "cifar10": ((3, 32, 32), 128, "cifar32", 128, 40),
    "celeba": ((3, 64, 64), 100, "celeba64", 64, 20),
}


@pytest.mark.parametrize("name", sorted(IMAGE_RECIPES))
def test_image_recipes_match_the_paper(name: str) -> None:
    from latentebm.config import load_recipe
    from latentebm.generators.conv import ConvGenerator

    shape, z_dim, architecture, ngf, k1 = IMAGE_RECIPES[name]
    recipe = load_recipe(RECIPES / f"{name}.yaml", ["model.generator.ngf=2"])
    assert recipe.task.component == "latentebm.tasks.images.ImageTask"
    model = recipe.model
    assert (model.z_dim, model.prior.hidden_dims) == (z_dim, [200, 200])
    assert (model.prior_chain.n_steps, model.prior_chain.step_size) == (60, 0.4)
    assert (model.posterior_chain.n_steps, model.posterior_chain.step_size) == (k1, 0.1)
    cfg = model.generator.args
    assert isinstance(cfg, ConvGenerator.Config) and cfg.architecture == architecture
    assert cfg.likelihood_sigma == 0.3
    assert load_recipe(RECIPES / f"{name}.yaml").model.generator.args.ngf == ngf
    generator = ConvGenerator(cfg, z_dim=z_dim, image_shape=shape)
    assert generator.mean(torch.zeros(2, z_dim)).shape == (2, *shape)


def test_mnist_anomaly_recipe_trains_and_reloads(tmp_path: Path) -> None:
    from latentebm.config import load_recipe
    from latentebm.pretrained import load
    from latentebm.train import Trainer

    write_mnist(tmp_path / "data" / "mnist", n_train=80, n_test=30)
    recipe = load_recipe(
        RECIPES / "mnist_anomaly.yaml",
        [
            f"data.root={tmp_path / 'data'}",
            f"trainer.run_dir={tmp_path / 'run'}",
            "anomaly.digit=2",
            "device=cpu",
            "model.generator.ngf=4",
            "model.prior_chain.n_steps=3",
            "model.posterior_chain.n_steps=3",
            "trainer.max_steps=2",
            "trainer.batch_size=16",
            "trainer.samples_at_end=4",
            "trainer.progress=false",
            "trainer.tensorboard=false",
        ],
    )
    assert recipe.anomaly is not None and recipe.anomaly.train_fraction == 0.8
    run = Trainer(recipe).fit()
    assert list((run / "samples").glob("*.png"))
    loaded = load(run, device="cpu")
    # 110 images, 11 of digit 2: floor(0.8 * 99) = 79 train, 20 + 11 test
    assert loaded.task.config.anomaly_digit == 2
    assert loaded.task.num_sentences("train") == 79 and loaded.task.num_sentences("test") == 31
    x = loaded.model.generate(3, generator=torch.Generator().manual_seed(0))
    assert x.shape == (3, 1, 28, 28)
