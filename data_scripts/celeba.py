#!/usr/bin/env python3
"""Copy CelebA (the aligned and cropped JPEGs, ``img_align_celeba``) for latentebm.

Usage::

    python data_scripts/celeba.py --out DIR --source img_align_celeba.zip
    python data_scripts/celeba.py --out DIR --source img_align_celeba/   # folder of JPEGs

CelebA (Liu et al. 2015, https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html) is distributed
through Google Drive and Baidu links with no stable direct URL, so ``--source`` is required:
the official ``img_align_celeba.zip`` or its extracted folder. ``list_eval_partition.txt`` (or
Kaggle's ``list_eval_partition.csv``), found beside the source or inside the zip, is copied too;
without it the task uses the official numbering (1-162,770 train, 182,638-202,599 test).

Checked: 202,599 ``.jpg`` files (``--skip-count-check`` for subsets), each starting with the
JPEG signature. Written to ``DIR``: ``img_align_celeba.zip`` (the source zip copied byte for
byte, or a new uncompressed zip of the folder's JPEGs under ``img_align_celeba/``, sorted, fixed
timestamps) and the partition file. Recipes expect ``celeba/`` under the data root
(``$LATENTEBM_DATA``), so use ``--out $LATENTEBM_DATA/celeba``. The task center-crops each
178x218 image to 140x140 and resizes it (64x64 in recipes/celeba.yaml). Existing files with
different content are never overwritten.

Standard library only.
"""

from __future__ import annotations

import sys
import tempfile
import zipfile
from pathlib import Path

if (_here := str(Path(__file__).resolve().parent)) not in sys.path:
    sys.path.insert(0, _here)  # loaded by file path rather than run as a script
import _common  # noqa: E402
from _common import COUNT_CHECK_HINT, DataScriptError  # noqa: E402

ARCHIVE = "img_align_celeba.zip"
FOLDER = "img_align_celeba"
PARTITION_FILES = ("list_eval_partition.txt", "list_eval_partition.csv")
EXPECTED_IMAGES = 202_599
JPEG_SIGNATURE = b"\xff\xd8"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def check_zip(path: Path) -> tuple[int, str | None, bytes | None]:
    """Number of JPEGs in a zip (each checked for the JPEG signature) and the partition file
    inside it, if any, as ``(name, content)`` parts."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.lower().endswith(".jpg")]
            for name in names:
                with zf.open(name) as f:
                    if f.read(2) != JPEG_SIGNATURE:
                        raise DataScriptError(f"{path}:{name} is not a JPEG file")
            partition = next(
                (n for n in zf.namelist() if n.rsplit("/", 1)[-1] in PARTITION_FILES), None
            )
            content = zf.read(partition) if partition else None
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataScriptError(f"cannot read {path} as a zip archive: {exc}") from exc
    return len(names), partition.rsplit("/", 1)[-1] if partition else None, content


def folder_images(folder: Path) -> list[Path]:
    """The ``.jpg`` files of a folder (not recursive), sorted, each checked for the signature."""
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".jpg" and p.is_file())
    for path in images:
        with open(path, "rb") as f:
            if f.read(2) != JPEG_SIGNATURE:
                raise DataScriptError(f"{path} is not a JPEG file")
    return images


def zip_folder(images: list[Path], dest: Path) -> None:
    """Write ``images`` into an uncompressed zip under ``img_align_celeba/`` (fixed dates)."""
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_STORED) as zf:
        for path in images:
            info = zipfile.ZipInfo(f"{FOLDER}/{path.name}", date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            zf.writestr(info, path.read_bytes())


def find_partition(source: Path) -> Path | None:
    """A partition file beside (or inside) the source folder, if any."""
    folders = [source.parent] if source.is_file() else [source, source.parent]
    for folder in folders:
        for name in PARTITION_FILES:
            if (folder / name).is_file():
                return folder / name
    return None


def fetch(out: Path, source: Path, skip_count_check: bool = False) -> list[Path]:
    """Check and copy the images (and the partition file); returns the written paths."""
    if not source.exists():
        raise DataScriptError(f"source {source} does not exist")
    written: list[Path] = []
    with tempfile.TemporaryDirectory() as tmp:
        partition_path = find_partition(source)
        if source.is_file():
            n, inner_name, inner = check_zip(source)
            archive = source
            if partition_path is None and inner is not None and inner_name is not None:
                partition_path = Path(tmp) / inner_name
                partition_path.write_bytes(inner)
        else:
            folder = source / FOLDER if (source / FOLDER).is_dir() else source
            images = folder_images(folder)
            n = len(images)
            archive = Path(tmp) / ARCHIVE
        if n == 0:
            raise DataScriptError(f"no .jpg images in {source}")
        if not skip_count_check and n != EXPECTED_IMAGES:
            raise DataScriptError(
                f"{source}: {n} images, expected {EXPECTED_IMAGES}{COUNT_CHECK_HINT}"
            )
        print(f"{n} images", file=sys.stderr)
        if not source.is_file():
            zip_folder(images, archive)
        written.append(_common.install(archive, out / ARCHIVE))
        if partition_path is not None:
            written.append(_common.install(partition_path, out / partition_path.name))
        else:
            print("no list_eval_partition file: the official numbering is used", file=sys.stderr)
    return written


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = _common.make_parser(
        f"Copy CelebA's aligned JPEGs as {ARCHIVE} (and the partition file) to --out.",
        f"local {ARCHIVE} or a folder of the aligned JPEGs (required: no stable download URL)",
        source_required=True,
    )
    _common.add_skip_count_check(parser, f"accept an image count other than {EXPECTED_IMAGES}")
    args = parser.parse_args(argv)
    return _common.run(lambda: fetch(args.out, args.source, skip_count_check=args.skip_count_check))


if __name__ == "__main__":
    sys.exit(main())
