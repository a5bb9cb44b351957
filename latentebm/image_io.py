"""Image reading and writing with numpy and Pillow only (no torchvision).

* :func:`read_idx`: the IDX format of the MNIST files (plain or ``.gz``), checked;
* :func:`to_uint8`, :func:`make_grid`, :func:`save_grid`, :func:`save_strip`: images in
  ``[-1, 1]`` (the scale of the Gaussian generator ``g_beta(z)``; Pang, Han, Nijkamp, Zhu and
  Wu (2020), "Learning Latent Space Energy-Based Prior Model", appendix B.1: "the training
  images are resized and scaled to [-1, 1]") to 8-bit pixels and PNG grids;
* :func:`load_image`, :func:`resize_images`: decoding and resizing for the CelebA and folder
  data sets (center crop, then a bilinear resize, as torchvision's ``CenterCrop`` and
  ``Resize`` do with their defaults).

Pillow is imported only by the functions that need it.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from latentebm.atomic import write_bytes_atomic
from latentebm.errors import require

__all__ = [
    "IDX_DTYPES",
    "center_crop_box",
    "load_image",
    "make_grid",
    "read_idx",
    "resize_images",
    "save_grid",
    "save_strip",
    "to_uint8",
    "write_atomic",
]

IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
"""IDX type byte -> element type (multi-byte types are big-endian)."""


def _pil() -> Any:
    return require("PIL.Image", "image", "image files")


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """The array stored in an IDX file (``.gz`` or plain), e.g. MNIST's
    ``train-images-idx3-ubyte.gz`` -> ``uint8 (60000, 28, 28)``.

    Layout: two zero bytes, a type byte (:data:`IDX_DTYPES`), the number of dimensions, each
    dimension as a big-endian uint32, then the data in C order.

    Raises:
        ValueError: bad magic number, unknown type, or a byte count that does not match the
            dimensions (the message names the file).
    """
    p = Path(path)
    raw = p.read_bytes()
    if p.name.endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"{p}: cannot decompress IDX file ({exc})") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{p}: not an IDX file (magic number must start with two zero bytes)")
    type_code, ndim = raw[2], raw[3]
    if type_code not in IDX_DTYPES:
        raise ValueError(f"{p}: unknown IDX element type 0x{type_code:02x}")
    if ndim == 0 or len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{p}: truncated IDX header ({ndim} dimensions)")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[type_code]
    expected = math.prod(dims) * dtype.itemsize
    body = len(raw) - 4 - 4 * ndim
    if body != expected:
        raise ValueError(
            f"{p}: IDX dimensions {dims} need {expected} data bytes, the file has {body}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim).reshape(dims)
    return data.astype(dtype.newbyteorder("="), copy=True)


def to_uint8(images: Tensor | np.ndarray) -> np.ndarray:
    """``(B, C, H, W)`` floats in ``[-1, 1]`` -> ``uint8 (B, H, W, C)``: ``round((x + 1) * 127.5)``
    clipped to ``[0, 255]`` (the inverse of the tasks' ``u / 127.5 - 1``)."""
    x = images.detach().float().cpu().numpy() if isinstance(images, Tensor) else np.asarray(images)
    if x.ndim != 4:
        raise ValueError(f"expected images of shape (B, C, H, W), got shape {tuple(x.shape)}")
    pixels = np.clip(np.rint((x.astype(np.float64) + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(pixels.transpose(0, 2, 3, 1))


def make_grid(
    images: Tensor | np.ndarray, nrow: int | None = None, padding: int = 2, pad_value: int = 0
) -> np.ndarray:
    """A ``uint8 (H', W', C)`` grid of ``(B, C, H, W)`` images in ``[-1, 1]`` (C = 1 or 3).

    ``nrow`` images per row (default ``ceil(sqrt(B))``); ``padding`` pixels of ``pad_value``
    around and between the images (torchvision's ``make_grid`` layout).
    """
    pixels = to_uint8(images)
    n, h, w, c = pixels.shape
    if c not in (1, 3):
        raise ValueError(f"expected 1 or 3 channels, got {c}")
    if n == 0:
        raise ValueError("no images to put in a grid")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    per_row = math.ceil(math.sqrt(n)) if nrow is None else min(nrow, n)
    if per_row < 1:
        raise ValueError(f"nrow must be >= 1, got {nrow}")
    rows = math.ceil(n / per_row)
    grid = np.full(
        (rows * (h + padding) + padding, per_row * (w + padding) + padding, c),
        pad_value,
        dtype=np.uint8,
    )
    for i in range(n):
        top = padding + (i // per_row) * (h + padding)
        left = padding + (i % per_row) * (w + padding)
        grid[top : top + h, left : left + w] = pixels[i]
    return grid


def write_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` (parent folders created) atomically and durably, with an
    existing file's mode kept and a new file's from the umask
    (:func:`latentebm.atomic.write_bytes_atomic`)."""
    return write_bytes_atomic(path, data)


def save_grid(
    images: Tensor | np.ndarray, path: str | os.PathLike[str], nrow: int | None = None
) -> Path:
    """Write :func:`make_grid` of ``images`` as a PNG at ``path`` (atomically); returns it."""
    grid = make_grid(images, nrow=nrow)
    return write_atomic(path, png_bytes(grid[:, :, 0] if grid.shape[2] == 1 else grid))


def png_bytes(pixels: np.ndarray) -> bytes:
    """Encode a uint8 ``(H, W)`` (grey) or ``(H, W, 3)`` (RGB) array as a PNG file (zlib only,
    so writing sample grids needs no imaging library)."""
    if (
        pixels.dtype != np.uint8
        or pixels.ndim not in (2, 3)
        or pixels.ndim == 3
        and pixels.shape[2] != 3
    ):
        raise ValueError(f"expected uint8 (H, W) or (H, W, 3), got {pixels.dtype} {pixels.shape}")
    height, width = pixels.shape[:2]
    color_type = 0 if pixels.ndim == 2 else 2
    rows = np.ascontiguousarray(pixels).reshape(height, -1)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


def save_strip(images: Tensor | np.ndarray, path: str | os.PathLike[str]) -> Path:
    """:func:`save_grid` with every image in one row (e.g. a Langevin trajectory)."""
    return save_grid(images, path, nrow=len(images))


# --------------------------------------------------------------------------------------------
# Decoding and resizing
# --------------------------------------------------------------------------------------------


def center_crop_box(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """``(left, top, right, bottom)`` of the centred ``size x size`` square (torchvision's
    ``CenterCrop`` rounding: ``round((H - size) / 2)``)."""
    if size > width or size > height:
        raise ValueError(f"cannot center-crop {size}x{size} from a {width}x{height} image")
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return left, top, left + size, top + size


def _to_chw(pil: Any, channels: int) -> np.ndarray:
    arr = np.asarray(pil.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    return arr[None] if channels == 1 else np.ascontiguousarray(arr.transpose(2, 0, 1))


def load_image(
    source: str | os.PathLike[str] | bytes,
    *,
    image_size: int | None = None,
    crop: int | None = None,
    channels: int = 3,
    name: str | None = None,
) -> np.ndarray:
    """Decode an image file (path or bytes) to ``uint8 (C, H, W)``.

    ``crop``: first cut the centred ``crop x crop`` square (CelebA: 140). ``image_size``: then
    resize so that the shorter side is ``image_size`` (bilinear, antialiased) and cut the
    centred ``image_size`` square (torchvision ``Resize(s)`` + ``CenterCrop(s)``).
    ``channels``: 1 (grey) or 3 (RGB). ``name`` labels errors (default: the path).
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    image = _pil()
    if name is None:
        name = "<bytes>" if isinstance(source, bytes) else str(source)
    try:
        pil = image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        pil.load()
    except (OSError, ValueError) as exc:
        raise ValueError(f"{name}: cannot decode image ({exc})") from exc
    try:
        if crop is not None:
            pil = pil.crop(center_crop_box(pil.width, pil.height, crop))
        if image_size is not None:
            pil = _resize_square(pil, image_size, channels)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from exc
    return _to_chw(pil, channels)


def _resize_square(pil: Any, image_size: int, channels: int) -> Any:
    """Shorter side to ``image_size`` (bilinear, antialiased), then the centred square."""
    scale = image_size / min(pil.width, pil.height)
    new = (max(image_size, round(pil.width * scale)), max(image_size, round(pil.height * scale)))
    if new != (pil.width, pil.height):
        pil = pil.convert("L" if channels == 1 else "RGB").resize(new, _pil().BILINEAR)
    return pil.crop(center_crop_box(pil.width, pil.height, image_size))


def resize_images(images: np.ndarray, image_size: int) -> np.ndarray:
    """``uint8 (N, C, H, W)`` resized to ``(N, C, image_size, image_size)`` (bilinear,
    antialiased; shorter side to ``image_size`` then a centre crop)."""
    n, c, h, w = images.shape
    if (h, w) == (image_size, image_size):
        return images
    image = _pil()
    out = np.empty((n, c, image_size, image_size), dtype=np.uint8)
    for i in range(n):
        pil = image.fromarray(images[i, 0] if c == 1 else images[i].transpose(1, 2, 0))
        out[i] = _to_chw(_resize_square(pil, image_size, c), c)
    return out
