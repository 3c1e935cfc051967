"""SynthFaces: procedurally drawn RGB faces whose binary attributes are known exactly.

CelebA's 40 attributes are human annotations (noisy, correlated, unbalanced) and the data set
cannot ship with the project. SynthFaces stands in for it in the latent-coherence study (seed 000:
SVM attribute directions, class fits) with attributes that are *true by construction*: each face
is drawn from independent Bernoulli(``p``) attributes plus nuisance variables (pose, face size,
skin tone within its class, hair colour within its class, background, clothes, pixel noise).

Attributes (columns of ``attributes``, in this order): ``smiling``, ``mouth_open``, ``beard``,
``glasses``, ``hat``, ``eyes_closed``, ``long_hair``, ``bangs``, ``pale_skin``, ``blond_hair``.

Drawing. Every shape is a signed distance function (SDF) in face-local coordinates (unit = half
the face width, after a random rotation, offset and scale); a pixel's coverage is
``clip(0.5 - d / pixel_width, 0, 1)``, the exact area of a straight edge crossing the pixel. That
anti-aliases analytically at the output resolution, which is 16x cheaper than drawing at 4x and
averaging down (``supersample=k`` does that too, for a reference). Layers are composited back to
front with those coverages as alpha, for a whole chunk of faces at once on coordinate grids.

Determinism. Face ``i`` depends only on ``(seed, split, i)``: per-face parameters come from one
``(n, _N_PARAMS)`` uniform draw (a prefix of a longer draw is the same) and the noise from one
generator per fixed chunk of faces, so ``synthfaces(10)`` equals ``synthfaces(1000)[:10]``.
Splits use disjoint random streams, ``numpy.random.default_rng((seed, split_index))``.

Run ``python -m flowscope.data.synthfaces docs/figures/synthfaces_grid.png`` to draw a labelled
grid of 64 faces.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
import torch

from .images import ImageDataset, check_split

__all__ = ["SYNTHFACES_ATTRIBUTES", "synthfaces", "render_faces"]

SYNTHFACES_ATTRIBUTES: tuple[str, ...] = (
    "smiling",
    "mouth_open",
    "beard",
    "glasses",
    "hat",
    "eyes_closed",
    "long_hair",
    "bangs",
    "pale_skin",
    "blond_hair",
)
_A = len(SYNTHFACES_ATTRIBUTES)
_SPLIT_INDEX = {"train": 0, "val": 1, "test": 2}
_CHUNK = 256  # faces drawn at once: keeps the (chunk, size, size) temporaries cache-sized
_N_PARAMS = 32  # uniform numbers per face: _A attributes, then nuisances (see _nuisance)

# Colour palettes (RGB, 0..255). Non-pale skin runs from light-medium to dark; pale skin sits
# clearly above that range so that "pale_skin" is a colour class, not a threshold on a continuum.
_PALE_SKIN = np.array([246.0, 224.0, 208.0])
_SKIN_RAMP = np.array([[222.0, 170.0, 128.0], [170.0, 116.0, 78.0], [98.0, 62.0, 42.0]])
_BLOND = np.array([232.0, 200.0, 110.0])
_DARK_HAIR = np.array(
    [[28.0, 24.0, 24.0], [72.0, 46.0, 30.0], [112.0, 70.0, 40.0], [150.0, 62.0, 36.0]]
)
_LIPS = np.array([196.0, 64.0, 72.0])
_MOUTH_INSIDE = np.array([90.0, 20.0, 30.0])


def synthfaces(
    n: int,
    size: int = 32,
    seed: int = 0,
    split: str = "train",
    p: float | Sequence[float] = 0.5,
    noise: float = 4.0,
    supersample: int = 1,
) -> ImageDataset:
    """Draw ``n`` SynthFaces with their attribute table.

    Args:
        n: number of faces.
        size: side of the square images in pixels (>= 8; 16, 32 and 64 all work).
        seed: base seed; together with ``split`` it fixes every face.
        split: ``"train"``, ``"val"`` or ``"test"``; each draws from its own random stream.
        p: probability of each attribute being 1 (a float for all, or one per attribute in
            ``SYNTHFACES_ATTRIBUTES`` order). Attributes are drawn independently.
        noise: standard deviation of the Gaussian pixel noise, in 0..255 levels.
        supersample: draw at ``size * supersample`` and average down (1: analytic anti-aliasing
            only, the fast default).

    Returns:
        ``ImageDataset`` with ``images`` uint8 ``(n, 3, size, size)``, ``labels=None``,
        ``attributes`` int64 ``(n, 10)`` in {0, 1} and ``attribute_names`` as above.
    """
    split = check_split(split)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n: expected a positive int, got {n!r}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 8:
        raise ValueError(f"size: expected an int >= 8, got {size!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed: expected an int >= 0, got {seed!r}")
    if not isinstance(supersample, int) or isinstance(supersample, bool) or supersample < 1:
        raise ValueError(f"supersample: expected an int >= 1, got {supersample!r}")
    if not (isinstance(noise, (int, float)) and 0 <= noise < float("inf")):
        raise ValueError(f"noise: expected a finite number >= 0, got {noise!r}")
    probs = np.broadcast_to(np.asarray(p, dtype=np.float64), (_A,)) if np.ndim(p) == 0 else None
    if probs is None:
        probs = np.asarray(p, dtype=np.float64)
        if probs.shape != (_A,):
            raise ValueError(f"p: expected a float or {_A} floats, got shape {probs.shape}")
    if not np.all((probs >= 0) & (probs <= 1)):
        raise ValueError(f"p: expected probabilities in [0, 1], got {probs.tolist()}")

    stream = (seed, _SPLIT_INDEX[split])
    u = np.random.default_rng(stream).random((n, _N_PARAMS))
    attrs = u[:, :_A] < probs
    images = np.empty((n, 3, size, size), dtype=np.uint8)
    for c, start in enumerate(range(0, n, _CHUNK)):
        stop = min(start + _CHUNK, n)
        img = render_faces(attrs[start:stop], u[start:stop, _A:], size * supersample)
        if supersample > 1:
            img = img.reshape(stop - start, 3, size, supersample, size, supersample).mean((3, 5))
        if noise > 0:
            chunk_rng = np.random.default_rng((*stream, 1 + c))
            img += np.float32(noise) * chunk_rng.standard_normal(img.shape, dtype=np.float32)
        images[start:stop] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return ImageDataset(
        images=torch.from_numpy(images),
        labels=None,
        attributes=torch.from_numpy(attrs.astype(np.int64)),
        attribute_names=list(SYNTHFACES_ATTRIBUTES),
        split=split,
        name="synthfaces",
    )


def _lerp(lo: float, hi: float, t: np.ndarray) -> np.ndarray:
    return (lo + (hi - lo) * t).astype(np.float32)


def _nuisance(v: np.ndarray, attrs: np.ndarray) -> dict[str, np.ndarray]:
    """Map uniforms ``v`` ``(B, _N_PARAMS - _A)`` to pose and colours (RGB rows ``(B, 3)``)."""
    b = v.shape[0]
    par = {
        "theta": _lerp(-0.14, 0.14, v[:, 0]),  # about +-8 degrees of roll
        "cx": _lerp(-0.05, 0.05, v[:, 1]),
        "cy": _lerp(0.0, 0.08, v[:, 2]),
        "r": _lerp(0.41, 0.47, v[:, 3]),  # half face width, in half image widths
        "aspect": _lerp(1.15, 1.32, v[:, 4]),  # face half-height / half-width
        "eye_dx": _lerp(0.36, 0.42, v[:, 5]),
        "mouth_w": _lerp(0.28, 0.34, v[:, 6]),
    }
    pale = attrs[:, 8]
    ramp_t = v[:, 7] * (len(_SKIN_RAMP) - 1)
    i0 = np.minimum(ramp_t.astype(int), len(_SKIN_RAMP) - 2)
    frac = (ramp_t - i0)[:, None]
    skin = _SKIN_RAMP[i0] * (1 - frac) + _SKIN_RAMP[i0 + 1] * frac
    pale_skin = _PALE_SKIN + (v[:, 8:9] - 0.5) * np.array([10.0, 14.0, 16.0])
    par["skin"] = np.where(pale[:, None], pale_skin, skin)
    dark = _DARK_HAIR[np.minimum((v[:, 9] * len(_DARK_HAIR)).astype(int), len(_DARK_HAIR) - 1)]
    dark = dark + (v[:, 10:11] - 0.5) * 24.0
    blond = _BLOND + (v[:, 10:11] - 0.5) * np.array([24.0, 30.0, 40.0])
    par["hair"] = np.where(attrs[:, 9][:, None], blond, dark)
    # Cool, unsaturated backgrounds: never the hue of skin or hair, so every silhouette shows.
    hue = v[:, 11:12] * 2 * np.pi
    light = 120.0 + 100.0 * v[:, 12:13]
    par["bg"] = light + 28.0 * np.concatenate(
        [np.cos(hue) - 0.6, np.cos(hue - 2.1) + 0.2, np.cos(hue + 2.1) + 0.6], axis=1
    )
    par["shirt"] = 40.0 + 180.0 * v[:, 13:16]
    hat_hue = v[:, 16:17] * 2 * np.pi
    par["hat"] = 120.0 + 90.0 * np.concatenate(
        [np.cos(hat_hue), np.cos(hat_hue - 2.1), np.cos(hat_hue + 2.1)], axis=1
    )
    par["iris"] = 20.0 + 70.0 * v[:, 17:20]
    par["frame"] = 15.0 + 50.0 * v[:, 20:21] * np.ones((b, 3))
    for k in ("skin", "hair", "bg", "shirt", "hat", "iris", "frame"):
        par[k] = np.clip(par[k], 0, 255).astype(np.float32)
    return par


def _ellipse(x: np.ndarray, y: np.ndarray, a: float | np.ndarray, b: float | np.ndarray):
    """Signed distance to an axis-aligned ellipse centred at the origin, to first order.

    ``f = (x/a)^2 + (y/b)^2 - 1`` divided by ``|grad f|``: exact on the boundary's tangent
    line, so the anti-aliasing ramp is one pixel wide all around, even for thin ellipses
    (scaling ``f`` by a constant instead smears the ends of a thin ellipse over pixels).
    """
    xa, yb = x / a, y / b
    grad = 2.0 * np.sqrt((xa / a) ** 2 + (yb / b) ** 2)
    return (xa * xa + yb * yb - 1.0) / np.maximum(grad, 1e-6)


def _segment(x: np.ndarray, y: np.ndarray, x0: float, x1: float, y0: float, t: float):
    """Signed distance to a horizontal capsule from (x0, y0) to (x1, y0) of half-thickness t."""
    dx = x - np.clip(x, x0, x1)
    return np.sqrt(dx * dx + (y - y0) ** 2) - t


def _arc(x: np.ndarray, y: np.ndarray, radius: float, t: float, below: float):
    """Ring of ``radius``/half-thickness ``t`` about the origin, kept where ``y > below``."""
    return np.maximum(np.abs(np.sqrt(x * x + y * y) - radius) - t, below - y)


def render_faces(attrs: np.ndarray, v: np.ndarray, size: int) -> np.ndarray:
    """Draw one chunk of faces without noise.

    Args:
        attrs: bool ``(B, 10)`` attributes in ``SYNTHFACES_ATTRIBUTES`` order.
        v: uniforms in [0, 1) ``(B, _N_PARAMS - 10)`` for the nuisance variables.
        size: output side in pixels.

    Returns:
        float32 ``(B, 3, size, size)`` in 0..255.
    """
    b = attrs.shape[0]
    par = _nuisance(v, attrs)
    on = {
        name: attrs[:, i].astype(np.float32)[:, None, None]
        for i, name in enumerate(SYNTHFACES_ATTRIBUTES)
    }
    col = lambda c: np.broadcast_to(np.asarray(c, np.float32), (b, 3))  # noqa: E731
    theta, cx, cy, r = par["theta"], par["cx"], par["cy"], par["r"]
    cos, sin = np.cos(theta), np.sin(theta)
    grid = (np.arange(size, dtype=np.float32) + 0.5) * (2.0 / size) - 1.0
    gx = grid[None, None, :] - cx[:, None, None]
    gy = grid[None, :, None] - cy[:, None, None]
    # Face-local coordinates: x right, y down, unit = half the face width.
    r3, c3, s3 = r[:, None, None], cos[:, None, None], sin[:, None, None]
    x_full = (c3 * gx + s3 * gy) / r3
    y_full = (c3 * gy - s3 * gx) / r3
    pw = (2.0 / size) / r3  # one pixel, in local units
    img = np.empty((b, 3, size, size), dtype=np.float32)
    img[:] = par["bg"][:, :, None, None]
    tmp = np.empty_like(img)

    def box(x0: float, x1: float, y0: np.ndarray | float, y1: np.ndarray | float):
        """Pixel window covering the local box [x0, x1] x [y0, y1] for every face."""
        # The box is widened by 0.1 (and the window by a pixel) so that no anti-aliased edge
        # is cut: a window must never change a face, or faces would depend on their chunk.
        x0, x1, y0, y1 = x0 - 0.1, x1 + 0.1, y0 - 0.1, y1 + 0.1
        xs = np.array([x0, x1, x0, x1], np.float32)[:, None]
        ys = np.stack(np.broadcast_arrays(y0, y0, y1, y1)).reshape(4, -1)
        px = cx + r * (cos * xs - sin * ys)
        py = cy + r * (sin * xs + cos * ys)
        to_pix = lambda g: (g + 1.0) * (size / 2.0) - 0.5  # noqa: E731
        lo_c, hi_c = int(np.floor(to_pix(px.min()))), int(np.ceil(to_pix(px.max())))
        lo_r, hi_r = int(np.floor(to_pix(py.min()))), int(np.ceil(to_pix(py.max())))
        rows = slice(max(lo_r - 1, 0), max(min(hi_r + 2, size), 0))
        cols = slice(max(lo_c - 1, 0), max(min(hi_c + 2, size), 0))
        return rows, cols

    def coords(win):
        return x_full[:, win[0], win[1]], y_full[:, win[0], win[1]]

    def paint(win, d: np.ndarray, colour: np.ndarray, mask: np.ndarray | float = 1.0) -> None:
        """Composite ``colour`` over the window with coverage from the signed distance ``d``."""
        alpha = np.clip(0.5 - d / pw, 0.0, 1.0)
        if not isinstance(mask, float):
            alpha *= mask
        part, t = img[:, :, win[0], win[1]], tmp[:, :, win[0], win[1]]
        np.subtract(colour[:, :, None, None], part, out=t)
        t *= alpha[:, None]
        part += t

    skin, hair = par["skin"], par["hair"]
    hb = par["aspect"]  # face half-height, (B,)
    h3 = hb[:, None, None]
    everything = (slice(None), slice(None))
    x, y = x_full, y_full
    # Shoulders, long hair (a rounded slab behind the head, onto the shoulders), neck.
    win = box(-1.8, 1.8, hb + 0.4, 4.0)
    xs, ys = coords(win)
    paint(win, _ellipse(xs, ys - (h3 + 1.5), 1.8, 1.05), par["shirt"])
    long_d = np.maximum(_ellipse(x, y - 0.15, 1.34, 2.0), y - (h3 + 0.8))
    paint(everything, long_d, hair, on["long_hair"])
    win = box(-0.4, 0.4, hb - 0.5, hb + 1.0)
    xs, ys = coords(win)
    paint(win, np.maximum(np.abs(xs) - 0.3, np.abs(ys - h3[..., :1] - 0.2) - 0.6), skin * 0.88)
    # Hair at the back of the head, seen around the temples (also under a hat), then the face.
    paint(everything, _ellipse(x, y + 0.22, 1.12, h3 * 0.95), hair)
    paint(everything, _ellipse(x, y, 1.0, h3), skin)
    # Beard: jaw and chin, leaving skin around the mouth so that the mouth stays readable.
    mouth_y = h3 * 0.52
    win = box(-1.1, 1.1, 0.1, hb + 0.2)
    xs, ys = coords(win)
    beard = np.maximum(_ellipse(xs, ys - 0.05, 1.02, h3 * 1.08), 0.42 - ys)
    beard = np.maximum(beard, -_ellipse(xs, ys - mouth_y, 0.5, 0.22))
    paint(win, beard, hair * 0.6, on["beard"])
    # Nose and brows (under the fringe, when there are bangs), then the hair over the head.
    win = box(-0.2, 0.2, 0.0, 0.5)
    xs, ys = coords(win)
    paint(win, _ellipse(xs, ys - 0.2 * h3, 0.11, 0.2), skin * 0.82)
    ex0 = par["eye_dx"][:, None, None]
    eyes = box(-0.85, 0.85, -0.5 * hb - 0.1, 0.35)
    xe, ye = coords(eyes)
    ex, ey = np.abs(xe) - ex0, ye + 0.05 * h3  # both eyes at once, by symmetry
    paint(eyes, _segment(ex, ye + 0.34 * h3, -0.17, 0.17, 0.0, 0.06), hair * 0.8)
    # Hair over the top of the head; bangs bring the fringe down over the forehead.
    win = box(-1.15, 1.15, -hb - 0.3, 0.2)
    xs, ys = coords(win)
    head = _ellipse(xs, ys + 0.25, 1.1, h3 * 0.98)
    paint(win, np.maximum(head, ys + h3 * 0.7 - 0.18 * xs * xs), hair)
    # The fringe casts a shadow line on the forehead: a cue that holds whatever the colours.
    fringe_edge = ys + h3 * 0.16 - 0.12 * xs * xs
    paint(win, np.maximum(_ellipse(xs, ys, 1.0, h3), fringe_edge - 0.07), skin * 0.55, on["bangs"])
    paint(win, np.maximum(head, fringe_edge), hair, on["bangs"])
    # Eyes (open: white almond and iris; closed: a dark lid line), glasses.
    win = eyes
    open_ = 1.0 - on["eyes_closed"]
    paint(win, _ellipse(ex, ey, 0.24, 0.17), col(245.0), open_)
    paint(win, _ellipse(ex, ey, 0.12, 0.13), par["iris"], open_)
    paint(win, _arc(ex, ey + 0.16, 0.22, 0.045, 0.06), skin * 0.35, on["eyes_closed"])
    lens = _ellipse(ex, ey, 0.33, 0.28)
    paint(win, lens, col(200.0), on["glasses"] * 0.18)
    paint(win, np.abs(lens) - 0.055, par["frame"], on["glasses"])
    paint(win, _segment(xe, ey, -0.1, 0.1, 0.0, 0.05), par["frame"], on["glasses"])
    # Mouth, one of four shapes per face from (smiling, mouth_open). A smile is wider, with
    # raised corners; an open smile shows teeth. Shapes are drawn in units of the mouth's
    # half-width w (hence "* w" back to local units).
    win = box(-0.7, 0.7, 0.52 * hb - 0.5, 0.52 * hb + 0.5)
    xs, ys = coords(win)
    smiling, open_mouth = attrs[:, 0][:, None, None], attrs[:, 1][:, None, None]
    w = par["mouth_w"][:, None, None] * np.where(smiling, np.float32(1.4), np.float32(1.0))
    xw, yw = xs / w, (ys - mouth_y) / w
    grin = np.maximum(_ellipse(xw, yw + 0.2, 1.0, 0.95), -yw - 0.2) * w
    closed_d = np.where(
        smiling, _arc(xw, yw + 0.9, 1.1, 0.2, 0.45) * w, _segment(xs, ys - mouth_y, -w, w, 0, 0.07)
    )
    open_d = np.where(smiling, grin, _ellipse(xs, ys - mouth_y, 0.16, 0.2))
    mouth_colour = np.where(attrs[:, 1:2], _MOUTH_INSIDE, _LIPS).astype(np.float32)
    paint(win, np.where(open_mouth, open_d, closed_d), mouth_colour)
    paint(win, np.maximum(grin, yw * w - 0.05), col(240.0), on["smiling"] * on["mouth_open"])
    # Hat: crown and brim, over the hair.
    win = box(-1.5, 1.5, -hb - 0.9, -0.4 * hb)
    xs, ys = coords(win)
    hat = np.maximum(_ellipse(xs, ys + h3 * 0.95, 1.08, 0.75), ys + h3 * 0.6)
    paint(win, hat, par["hat"], on["hat"])
    paint(win, _ellipse(xs, ys + h3 * 0.62, 1.45, 0.14), par["hat"] * 0.75, on["hat"])
    return img


def _main(argv: list[str]) -> None:
    """Save a labelled grid of 64 faces: ``python -m flowscope.data.synthfaces OUT.png``."""
    import matplotlib.pyplot as plt

    out = argv[0] if argv else "synthfaces_grid.png"
    size = int(argv[1]) if len(argv) > 1 else 32
    data = synthfaces(64, size=size, seed=0)
    short = ["smile", "open", "beard", "glass", "hat", "closed", "long", "bangs", "pale", "blond"]
    fig, axes = plt.subplots(8, 8, figsize=(13, 16))
    for i, ax in enumerate(axes.flat):
        ax.imshow(data.images[i].permute(1, 2, 0).numpy(), interpolation="nearest")
        names = [s for s, on in zip(short, data.attributes[i].tolist()) if on]
        half = (len(names) + 1) // 2
        ax.set_title(" ".join(names[:half]) + "\n" + " ".join(names[half:]), fontsize=7)
        ax.axis("off")
    fig.suptitle(f"SynthFaces, {size}x{size}, seed 0: the attributes that are on", fontsize=12)
    fig.tight_layout()
    fig.savefig(out, dpi=80)


if __name__ == "__main__":
    _main(sys.argv[1:])
