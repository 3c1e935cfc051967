"""CelebA from its official folder layout (the user's own copy; nothing is downloaded).

"Deep Learning Face Attributes in the Wild" (Liu, Luo, Wang & Tang, 2015, arXiv:1411.7766):
202,599 aligned 178x218 faces with 40 binary attributes. Expected layout under ``root``::

    root/img_align_celeba/000001.jpg ...     (the aligned JPEGs; PNG copies with the same stem
                                              also work, and so does Kaggle's doubled folder
                                              img_align_celeba/img_align_celeba/)
    root/list_attr_celeba.txt                line 1: image count; line 2: the 40 attribute
                                              names; then "000001.jpg -1 1 1 ..." (values -1/1)
    root/list_eval_partition.txt             "000001.jpg 0" with 0/1/2 = train/val/test

Preprocessing as in seed 000 (and Glow's CelebA-64): a centred 148x148 crop, then a Lanczos
resize to ``size`` x ``size``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .images import ImageDataset, check_split

__all__ = ["celeba", "read_celeba_attributes", "read_celeba_partition", "CELEBA_LAYOUT"]

CELEBA_LAYOUT = (
    "expected the official CelebA layout: ROOT/img_align_celeba/<name>.jpg, "
    "ROOT/list_attr_celeba.txt and ROOT/list_eval_partition.txt"
)
_PARTITION = {"train": 0, "val": 1, "test": 2}


def _need(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"root: missing {path}; {CELEBA_LAYOUT}")
    return path


def read_celeba_attributes(path: str | Path) -> tuple[list[str], list[str], np.ndarray]:
    """Parse ``list_attr_celeba.txt``.

    Returns:
        ``(filenames, attribute_names, values)`` with ``values`` int64 ``(N, A)`` in {0, 1}
        (the file's -1 becomes 0).

    Raises:
        ValueError: a count, a row length or a value that does not match the format, naming
            the file and line.
    """
    path = _need(Path(path))
    lines = path.read_text().splitlines()
    if len(lines) < 2:
        raise ValueError(f"path: {path} is too short for an attribute file ({len(lines)} lines)")
    try:
        count = int(lines[0].strip())
    except ValueError:
        raise ValueError(
            f"path: {path} line 1: expected the image count, got {lines[0][:40]!r}"
        ) from None
    names = lines[1].split()
    rows = [line.split() for line in lines[2:] if line.strip()]
    if len(rows) != count:
        raise ValueError(f"path: {path} announces {count} images on line 1, got {len(rows)} rows")
    files = []
    values = np.empty((count, len(names)), dtype=np.int64)
    for i, row in enumerate(rows):
        if len(row) != len(names) + 1:
            raise ValueError(
                f"path: {path} line {i + 3}: expected a file name and {len(names)} values, "
                f"got {len(row)} fields"
            )
        files.append(row[0])
        try:
            values[i] = [int(v) for v in row[1:]]
        except ValueError:
            raise ValueError(f"path: {path} line {i + 3}: non-integer attribute value") from None
    if not np.isin(values, (-1, 1)).all():
        bad = values[~np.isin(values, (-1, 1))][0]
        raise ValueError(f"path: {path}: expected attribute values -1 or 1, got {bad}")
    return files, names, (values > 0).astype(np.int64)


def read_celeba_partition(path: str | Path) -> dict[str, int]:
    """Parse ``list_eval_partition.txt`` into ``{filename: 0 | 1 | 2}`` (train/val/test)."""
    path = _need(Path(path))
    out: dict[str, int] = {}
    for i, line in enumerate(path.read_text().splitlines()):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise ValueError(
                f"path: {path} line {i + 1}: expected '<file name> 0|1|2', got {line[:60]!r}"
            )
        out[fields[0]] = int(fields[1])
    return out


def _image_dir(root: Path) -> Path:
    folder = _need(root / "img_align_celeba")
    nested = folder / "img_align_celeba"
    return nested if nested.is_dir() else folder


def _load_image(folder: Path, name: str, size: int, crop: int):
    from PIL import Image

    path = folder / name
    if not path.is_file():
        png = path.with_suffix(".png")
        if not png.is_file():
            raise FileNotFoundError(f"root: missing image {path} (nor {png.name}); {CELEBA_LAYOUT}")
        path = png
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        if crop > min(w, h):
            raise ValueError(f"crop: expected at most {min(w, h)} for {path} ({w}x{h}), got {crop}")
        # Centred crop with torchvision's rounding, so the pixels match common CelebA pipelines.
        left, top = int(round((w - crop) / 2.0)), int(round((h - crop) / 2.0))
        im = im.crop((left, top, left + crop, top + crop))
        if size != crop:
            im = im.resize((size, size), Image.LANCZOS)
        return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)


def celeba(
    root: str | Path | None = None,
    split: str = "train",
    size: int = 64,
    crop: int = 148,
    limit: int | None = None,
) -> ImageDataset:
    """CelebA's aligned faces of one official split, centre-cropped and resized.

    Args:
        root: the CelebA directory (layout in the module docstring); required.
        split: ``train``, ``val`` or ``test`` (the official partition 0/1/2).
        size: output side in pixels (Lanczos resize).
        crop: side of the centred square crop taken first (148 as in seed 000).
        limit: read only the first ``limit`` images of the split, in file order (None: all).

    Returns:
        ``ImageDataset`` with images uint8 ``(N, 3, size, size)``, ``labels=None``, attributes
        int64 ``(N, 40)`` in {0, 1} and the file's 40 attribute names.
    """
    check_split(split)
    if root is None:
        raise ValueError(
            f"root: celeba needs the directory of your CelebA copy, got None; {CELEBA_LAYOUT}"
        )
    for name, v in (("size", size), ("crop", crop)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name}: expected a positive int, got {v!r}")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit: expected None or a positive int, got {limit!r}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"root: {root} is not a directory; {CELEBA_LAYOUT}")
    folder = _image_dir(root)
    files, names, values = read_celeba_attributes(root / "list_attr_celeba.txt")
    partition = read_celeba_partition(root / "list_eval_partition.txt")
    missing = [f for f in files if f not in partition]
    if missing:
        raise ValueError(
            f"root: {len(missing)} images of list_attr_celeba.txt have no partition in "
            f"list_eval_partition.txt (e.g. {missing[0]})"
        )
    rows = [i for i, f in enumerate(files) if partition[f] == _PARTITION[split]]
    if limit is not None:
        rows = rows[:limit]
    images = np.empty((len(rows), 3, size, size), dtype=np.uint8)
    for k, i in enumerate(rows):
        images[k] = _load_image(folder, files[i], size, crop)
    return ImageDataset(
        images=torch.from_numpy(images),
        labels=None,
        attributes=torch.from_numpy(values[rows]),
        attribute_names=names,
        split=split,
        name="celeba",
    )
