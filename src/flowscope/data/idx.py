"""IDX files (the MNIST format) and the data sets stored in them: Fashion-MNIST, MNIST.

An IDX file is a 4-byte magic number ``00 00 <dtype code> <ndim>``, then ``ndim`` big-endian
uint32 dimension sizes, then the values in C order, big-endian (LeCun et al., "The MNIST database
of handwritten digits", file-format section). Files may be gzip-compressed (``.gz``).

Fashion-MNIST ("Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning
Algorithms", Xiao, Rasul & Vollgraf, 2017, arXiv:1708.07747) comes from Debian's package
``dataset-fashion-mnist`` (files in ``/usr/share/datasets/fashion-mnist``) or from any directory
holding the four IDX files. Its attribute table is derived from the class (e.g. ``footwear`` =
sandal, sneaker or ankle boot), for the latent coherence study's attribute directions.
"""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import numpy as np
import torch

from .images import ImageDataset, check_split, split_indices

__all__ = [
    "read_idx",
    "write_idx",
    "fashion_mnist",
    "mnist_idx",
    "FASHION_MNIST_ROOT",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_ATTRIBUTES",
]

FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "t-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)
# Attribute -> the classes that have it. Approximate by nature (a few "shirts" have short
# sleeves), but a deterministic function of the label, so the ground truth is known.
FASHION_MNIST_ATTRIBUTES: dict[str, tuple[int, ...]] = {
    "footwear": (5, 7, 9),
    "upper_body": (0, 2, 4, 6),
    "long_sleeves": (2, 4, 6),
    "covers_legs": (1, 3),
    "garment": (0, 1, 2, 3, 4, 6),
    "outerwear": (4,),
    "open_toe": (5,),
    "covers_ankle": (9,),
    "accessory": (8,),
}

# IDX type code -> big-endian numpy dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {dt.newbyteorder("="): code for code, dt in _IDX_DTYPES.items()}


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (raw or ``.gz``) into a native-endian numpy array.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: bad magic number, unknown type code, or a payload whose size does not match
            the header (truncated or with trailing bytes); the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no IDX file at {path}")
    try:
        with _open(path) as f:
            data = f.read()
    except (OSError, EOFError) as err:  # a corrupt gzip stream
        raise ValueError(
            f"path: cannot read {path} as {'gzip' if path.suffix == '.gz' else 'raw'}"
            f" IDX data: {err}"
        ) from err
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(
            f"path: {path} is not an IDX file: expected a magic number starting with bytes "
            f"00 00, got {data[:4].hex(' ') or 'an empty file'}"
        )
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise ValueError(
            f"path: {path} has IDX type code 0x{code:02X}; expected one of "
            f"{', '.join(f'0x{c:02X}' for c in _IDX_DTYPES)}"
        )
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise ValueError(f"path: {path} has a truncated IDX header ({ndim} dimensions declared)")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _IDX_DTYPES[code]
    expected = math.prod(shape) * dtype.itemsize
    got = len(data) - header
    if got != expected:
        raise ValueError(
            f"path: {path} declares shape {shape} of {dtype.name} ({expected} bytes of data), "
            f"got {got} bytes: the file is {'truncated' if got < expected else 'too long'}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # a native-endian, writable copy


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (gzip-compressed when ``path`` ends in ``.gz``)."""
    array = np.asarray(array)
    code = _IDX_CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        raise ValueError(
            f"array: expected dtype uint8, int8, int16, int32, float32 or float64, "
            f"got {array.dtype}"
        )
    if array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"array: expected 1 to 255 dimensions, got {array.ndim}")
    payload = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload += np.ascontiguousarray(array, dtype=_IDX_DTYPES[code]).tobytes()
    path = Path(path)
    with gzip.open(path, "wb") if path.suffix == ".gz" else open(path, "wb") as f:
        f.write(payload)


def _find(root: Path, stems: tuple[str, ...]) -> Path | None:
    for stem in stems:
        for name in (stem, stem + ".gz"):
            if (root / name).is_file():
                return root / name
    return None


def _stems(prefix: str, kind: str) -> tuple[str, ...]:
    # The official names use dashes; some redistributions replace the last dash with a dot.
    ndim = 3 if kind == "images" else 1
    return (f"{prefix}-{kind}-idx{ndim}-ubyte", f"{prefix}-{kind}.idx{ndim}-ubyte")


def _read_pair(root: Path, split: str, what: str, how_to_get: str) -> tuple[np.ndarray, np.ndarray]:
    prefix = "t10k" if split == "test" else "train"
    arrays = []
    for kind in ("images", "labels"):
        path = _find(root, _stems(prefix, kind))
        if path is None:
            wanted = " or ".join(f"{s}[.gz]" for s in _stems(prefix, kind))
            raise FileNotFoundError(
                f"root: {what} files not found: looked for {wanted} in {root}. {how_to_get}"
            )
        arrays.append(read_idx(path))
    images, labels = arrays
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"root: expected uint8 images (N, H, W) in {root}, got {images.dtype} {images.shape}"
        )
    if labels.shape != (images.shape[0],):
        raise ValueError(
            f"root: {images.shape[0]} images but labels of shape {labels.shape} in {root}"
        )
    return images, labels.astype(np.int64)


def _select(
    images: np.ndarray, labels: np.ndarray, split: str, val_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``split`` part of the IDX pair read for it, as ``(N, 1, H, W)`` images and labels."""
    if split == "test":
        idx = np.arange(len(labels))
    else:
        idx = split_indices(
            len(labels),
            split,
            test_fraction=None,
            val_fraction=val_fraction,
            seed=seed,
            stratify=labels,
        )
    x = torch.from_numpy(np.ascontiguousarray(images[idx])[:, None])
    return x, torch.from_numpy(labels[idx])


def fashion_mnist(
    root: str | Path | None = None,
    split: str = "train",
    val_fraction: float = 0.0,
    seed: int = 0,
) -> ImageDataset:
    """Fashion-MNIST (Xiao et al. 2017, arXiv:1708.07747): 28x28 grey images, 10 classes.

    Args:
        root: directory with ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``; default
            ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``).
        split: ``train`` (60,000, less ``val``), ``val`` (``val_fraction`` of the training
            files, stratified, seeded) or ``test`` (the 10,000 ``t10k`` images).
        val_fraction: fraction of the training files held out as ``val`` (0: no ``val``).
        seed: seed of the train/val cut.

    Returns:
        ``ImageDataset`` with images ``(N, 1, 28, 28)``, labels 0..9 (``class_names``) and the
        attribute table ``FASHION_MNIST_ATTRIBUTES`` derived from the labels, ``(N, 9)``.
    """
    check_split(split)
    directory = FASHION_MNIST_ROOT if root is None else Path(root)
    how = (
        "Install Debian's package dataset-fashion-mnist (apt-get install dataset-fashion-mnist, "
        f"files land in {FASHION_MNIST_ROOT}), or put the four Fashion-MNIST IDX files in a "
        "directory and pass root=DIR (--root DIR on the command line)."
    )
    images, labels = _read_pair(directory, split, "Fashion-MNIST", how)
    x, y = _select(images, labels, split, val_fraction, seed)
    names = list(FASHION_MNIST_ATTRIBUTES)
    table = torch.zeros(10, len(names), dtype=torch.int64)
    for j, classes in enumerate(FASHION_MNIST_ATTRIBUTES.values()):
        table[list(classes), j] = 1
    return ImageDataset(
        images=x,
        labels=y,
        attributes=table[y],
        attribute_names=names,
        split=split,
        name="fashion-mnist",
        class_names=list(FASHION_MNIST_CLASSES),
    )


def mnist_idx(
    root: str | Path | None = None,
    split: str = "train",
    val_fraction: float = 0.0,
    seed: int = 0,
) -> ImageDataset:
    """Any MNIST-style IDX directory (MNIST, KMNIST, Fashion-MNIST...), labels as given.

    Args:
        root: directory with ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` (required).
        split, val_fraction, seed: as in :func:`fashion_mnist`.

    Returns:
        ``ImageDataset`` with images ``(N, 1, H, W)`` and labels, no attributes.
    """
    check_split(split)
    if root is None:
        raise ValueError(
            "root: mnist-idx reads the IDX files of a directory you name, expected a path, got None"
        )
    how = (
        "Put train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
        "t10k-labels-idx1-ubyte (optionally .gz) in that directory."
    )
    images, labels = _read_pair(Path(root), split, "IDX", how)
    x, y = _select(images, labels, split, val_fraction, seed)
    return ImageDataset(
        images=x, labels=y, attributes=None, attribute_names=[], split=split, name="mnist-idx"
    )
