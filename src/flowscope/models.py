"""Ready-made flows: short recipes over the transforms, each returning a :class:`~flowscope.Flow`.

Structural defaults follow the papers (number and kind of layers, masks, orderings, priors);
conditioner widths default to sizes that suit low-dimensional data and are plain keyword
arguments.  Every density model accepts ``context_features=`` and then builds a conditional flow
whose every conditioner network sees the context.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from ._checks import check_image_shape, check_int
from .distributions import DiagonalNormal, Distribution, Logistic, StandardNormal
from .flow import Flow
from .transforms import (
    ActNorm,
    Affine,
    AffineTransformer,
    BatchNorm,
    Compose,
    Coupling,
    Inverse,
    InverseAutoregressive,
    Logit,
    LULinear,
    MaskedAutoregressive,
    MultiScale,
    Planar,
    Radial,
    RationalQuadraticSpline,
    ReversePermutation,
    Squeeze,
    Transform,
    UniformDequantization,
    VariationalDequantization,
    additive_coupling,
    affine_coupling,
    channel_mask,
    checkerboard_mask,
    glow_step,
    half_mask,
    image_coupling,
)

__all__ = [
    "nice",
    "realnvp",
    "maf",
    "iaf",
    "nsf",
    "planar",
    "radial",
    "make_base",
    "glow",
    "realnvp_image",
]


def make_base(base: str | Distribution, features: int) -> Distribution:
    """``"standard"`` -> N(0, I) (seed 000's M_std), ``"diagonal"`` -> learned diagonal Gaussian
    (M_diag), ``"logistic"`` -> standard logistic (NICE); a Distribution is used as is."""
    if isinstance(base, Distribution):
        if base.features != features:
            raise ValueError(
                f"base: expected a distribution over {features} features, got {base.shape}"
            )
        return base
    choices = {"standard": StandardNormal, "diagonal": DiagonalNormal, "logistic": Logistic}
    if base not in choices:
        raise ValueError(f"base: expected one of {sorted(choices)} or a Distribution, got {base!r}")
    return choices[base](features)


def _stack(layers: int, block: Callable[[int], list[Transform]]) -> Compose:
    """``Compose`` of ``block(0) + block(1) + ... + block(layers - 1)``."""
    return Compose(*[t for i in range(layers) for t in block(i)])


def nice(
    features: int,
    layers: int = 4,
    hidden: int = 64,
    net_layers: int = 2,
    context_features: int | None = None,
    base: str | Distribution = "logistic",
) -> Flow:
    """NICE (Dinh, Krueger & Bengio 2015, arXiv:1410.8516): additive couplings + diagonal scaling.

    ``layers`` additive coupling layers (eq. 7) on alternating halves, then the learned diagonal
    scaling layer of section 3.3 (eq. 6: the only volume change), with a logistic prior (section
    3.4).  The paper used 4 couplings with 5x1000 ReLU conditioners on MNIST; ``hidden`` and
    ``net_layers`` size the conditioners here.
    """
    check_int("features", features, 2)
    check_int("layers", layers)
    steps: list[Transform] = [
        additive_coupling(
            half_mask(features, flip=i % 2 == 1),
            hidden=hidden,
            layers=net_layers,
            context_features=context_features,
        )
        for i in range(layers)
    ]
    steps.append(Affine(features))
    return Flow(Compose(*steps), make_base(base, features))


def realnvp(
    features: int,
    layers: int = 8,
    hidden: int = 64,
    net_layers: int = 2,
    batch_norm: bool = False,
    clamp: float = 3.0,
    context_features: int | None = None,
    base: str | Distribution = "standard",
    actnorm: bool = False,
    mixing: str = "swap",
) -> Flow:
    """RealNVP (Dinh, Sohl-Dickstein & Bengio 2017, arXiv:1605.08803) for vectors.

    ``layers`` affine couplings (eqs. 7-9) on alternating halves, with the soft-clamped log-scale
    of :class:`~flowscope.transforms.AffineTransformer`, optionally followed each by the
    batch-norm flow layer of section 3.7 (seed 001 section 3.4.3).  Seed 001 used 8 such blocks
    with 1x8 conditioners on pinwheel; the peer benchmark uses 8 with 2x64 (the default here).

    Two optional additions from Glow (Kingma & Dhariwal 2018, arXiv:1807.03039), off by default
    so that the default stays the paper's RealNVP; the couplings stay affine either way:

    * ``actnorm=True``: an :class:`~flowscope.transforms.ActNorm` (Glow section 3.1, Table 1: a
      per-feature ``x * exp(log_scale) + shift``, initialized from the first training batch to
      zero mean and unit variance) before each coupling.  Each conditioner then sees inputs of
      unit scale whatever the previous layers did; on pinwheel (10 couplings, 2x64, 2,000
      steps) it cut the gap to the true entropy from 0.40 to 0.16 nats (docs/training.md).
    * ``mixing="lu"``: an :class:`~flowscope.transforms.LULinear` (Glow section 3.2, eq. 10,
      identity at initialization) before each coupling, on top of the alternating halves.
      ``"swap"`` (default) is the paper's plain alternation.  In 2-D the learned linear map can
      rotate the split axis, which alternating halves cannot do.

    Block ``i``: ``[ActNorm] [LULinear] AffineCoupling(half i % 2) [BatchNorm]``.
    """
    check_int("features", features, 2)
    check_int("layers", layers)
    if not isinstance(actnorm, bool):
        raise ValueError(f"actnorm: expected a bool, got {actnorm!r}")
    if mixing not in ("swap", "lu"):
        raise ValueError(f"mixing: expected 'swap' or 'lu', got {mixing!r}")

    def block(i: int) -> list[Transform]:
        coupling = affine_coupling(
            half_mask(features, flip=i % 2 == 1),
            clamp=clamp,
            hidden=hidden,
            layers=net_layers,
            context_features=context_features,
        )
        steps: list[Transform] = [ActNorm(features)] if actnorm else []
        steps += [LULinear(features)] if mixing == "lu" else []
        steps.append(coupling)
        return steps + [BatchNorm(features)] if batch_norm else steps

    return Flow(_stack(layers, block), make_base(base, features))


def _autoregressive(
    layer: type[MaskedAutoregressive] | type[InverseAutoregressive],
    features: int,
    layers: int,
    hidden: int,
    net_layers: int,
    batch_norm: bool,
    context_features: int | None,
    transformer_factory,
    base: str | Distribution,
) -> Flow:
    check_int("features", features, 1)
    check_int("layers", layers)

    def block(i: int) -> list[Transform]:
        # The MAF paper reverses the variable order between layers (section 3.2).
        out: list[Transform] = [ReversePermutation(features)] if i > 0 else []
        out.append(
            layer(
                features,
                transformer_factory(),
                hidden=hidden,
                layers=net_layers,
                context_features=context_features,
            )
        )
        return out + [BatchNorm(features)] if batch_norm else out

    return Flow(_stack(layers, block), make_base(base, features))


def maf(
    features: int,
    layers: int = 5,
    hidden: int = 64,
    net_layers: int = 2,
    batch_norm: bool = False,
    context_features: int | None = None,
    base: str | Distribution = "standard",
) -> Flow:
    """Masked Autoregressive Flow (Papamakarios et al. 2017, arXiv:1705.07057).

    ``layers`` affine MADE layers (eqs. 2-5) with the order reversed between layers and optional
    batch norm (section 3.4); the paper's MAF 5 is the default depth.  Density is one pass per
    layer; sampling is ``features`` passes per layer.
    """
    return _autoregressive(
        MaskedAutoregressive,
        features,
        layers,
        hidden,
        net_layers,
        batch_norm,
        context_features,
        AffineTransformer,
        base,
    )


def iaf(
    features: int,
    layers: int = 5,
    hidden: int = 64,
    net_layers: int = 2,
    context_features: int | None = None,
    base: str | Distribution = "standard",
) -> Flow:
    """Inverse Autoregressive Flow (Kingma et al. 2016, arXiv:1606.04934).

    The mirror of :func:`maf`: sampling (and ``sample_and_log_prob``, the variational-inference
    path) is one pass per layer; ``log_prob`` of external data is ``features`` passes per layer.
    """
    return _autoregressive(
        InverseAutoregressive,
        features,
        layers,
        hidden,
        net_layers,
        False,
        context_features,
        AffineTransformer,
        base,
    )


def nsf(
    features: int,
    layers: int = 4,
    hidden: int = 64,
    net_layers: int = 2,
    bins: int = 8,
    bound: float = 3.0,
    autoregressive: bool = False,
    context_features: int | None = None,
    base: str | Distribution = "standard",
) -> Flow:
    """Neural Spline Flow (Durkan et al. 2019, arXiv:1906.04032): rational-quadratic splines.

    ``autoregressive=False`` (RQ-NSF (C)): each layer is an LU-parameterized linear map (their
    section 3.4 "linear layers") followed by a spline coupling on half the features;
    ``autoregressive=True`` (RQ-NSF (AR)): spline MADE layers with reversed orders between them.
    ``bins`` K=8 and tail bound B=3 are the paper's toy settings.
    """
    check_int("features", features, 1 if autoregressive else 2)
    check_int("layers", layers)
    check_int("bins", bins, 2)
    if autoregressive:
        return _autoregressive(
            MaskedAutoregressive,
            features,
            layers,
            hidden,
            net_layers,
            False,
            context_features,
            lambda: RationalQuadraticSpline(bins=bins, bound=bound),
            base,
        )

    def block(i: int) -> list[Transform]:
        spline = RationalQuadraticSpline(bins=bins, bound=bound)
        coupling = Coupling(
            half_mask(features, flip=i % 2 == 1),
            spline,
            hidden=hidden,
            layers=net_layers,
            context_features=context_features,
        )
        return [LULinear(features), coupling]

    body = _stack(layers, block)
    return Flow(Compose(*body.transforms, LULinear(features)), make_base(base, features))


def _generative(
    layer: type[nn.Module], features: int, layers: int, base: str | Distribution
) -> Flow:
    check_int("features", features)
    check_int("layers", layers)
    # Planar/radial maps are closed-form in the generative direction u -> x (Rezende & Mohamed
    # 2015, eqs. 10-14).  Wrapping them in Inverse makes Flow.sample / sample_and_log_prob use
    # that closed form, which is what variational inference (reverse KL) needs.
    return Flow(
        Inverse(Compose(*[layer(features) for _ in range(layers)])), make_base(base, features)
    )


def planar(features: int, layers: int = 16, base: str | Distribution = "standard") -> Flow:
    """Planar flow (Rezende & Mohamed 2015, arXiv:1505.05770, eqs. 10-12), for VI.

    Sampling and ``sample_and_log_prob`` are exact; ``log_prob`` of external data raises
    ``NotImplementedError`` (the planar map has no closed-form inverse).
    """
    return _generative(Planar, features, layers, base)


def radial(features: int, layers: int = 16, base: str | Distribution = "standard") -> Flow:
    """Radial flow (Rezende & Mohamed 2015, eqs. 13-14), for VI; its inverse is analytic too."""
    return _generative(Radial, features, layers, base)


# --- image flows -----------------------------------------------------------------------------


def _image_size(shape: object, squeezes: int, recipe: str, levels: int) -> tuple[int, int, int]:
    """Validate ``(C, H, W)`` and that ``H``, ``W`` survive ``squeezes`` halvings."""
    out = check_image_shape("shape", shape)  # type: ignore[arg-type]
    f = 2**squeezes
    if out[1] % f or out[2] % f:
        fits = 0
        while out[1] % 2 ** (fits + 1) == 0 and out[2] % 2 ** (fits + 1) == 0:
            fits += 1
        raise ValueError(
            f"shape: {recipe}(levels={levels}) squeezes the image {squeezes} times, so H and W "
            f"must be divisible by 2**{squeezes} = {f}; got {out}. Use fewer levels (at most "
            f"{fits + levels - squeezes} here) or crop/pad the images (e.g. 28x28 -> 32x32)"
        )
    return out


def _preprocessing(
    shape: tuple[int, int, int],
    quanta: int,
    alpha: float,
    dequantization: str | Mapping[str, Any] | Transform,
) -> list[Transform]:
    """Dequantization then ``Logit(alpha)``: integer pixels -> the real line.

    ``dequantization`` is ``"uniform"``, ``"variational"``, a mapping ``{"kind": "variational",
    **options}`` whose options go to :class:`VariationalDequantization` (``steps``, ``hidden``,
    ``squeeze``; the form a YAML config can write), or a ready Transform.
    """
    options: dict[str, Any] = {}
    kind: Any = dequantization
    if isinstance(dequantization, Mapping):
        options = dict(dequantization)
        kind = options.pop("kind", None)
        if kind != "variational":
            raise ValueError(
                f"dequantization: a mapping needs kind: 'variational' (the only dequantization "
                f"with options), got kind={kind!r}"
            )
        unknown = sorted(set(options) - {"steps", "hidden", "squeeze"})
        if unknown:
            raise ValueError(
                f"dequantization: unknown options {unknown} for kind 'variational' (expected "
                f"steps, hidden, squeeze)"
            )
    if isinstance(kind, Transform):
        deq = kind
    elif kind == "uniform":
        deq = UniformDequantization(quanta)
    elif kind == "variational":
        deq = VariationalDequantization(shape, quanta, **options)
    else:
        raise ValueError(
            f"dequantization: expected 'uniform', 'variational', a mapping "
            f"{{kind: variational, ...}} or a Transform, got {dequantization!r}"
        )
    return [deq, Logit(alpha)]


def glow(
    shape: tuple[int, int, int],
    levels: int = 3,
    steps: int = 8,
    hidden: int = 128,
    base: str | Distribution = "standard",
    alpha: float = 1e-5,
    quanta: int = 256,
    dequantization: str | Mapping[str, Any] | Transform = "uniform",
    split_prior: bool = False,
    conv_init: str = "permutation",
    scale: str = "sigmoid",
    clamp: float = 3.0,
) -> Flow:
    """Glow (Kingma & Dhariwal 2018, arXiv:1807.03039) as in seed 000's code.

    ``x`` (integer pixels) -> dequantization -> ``Logit(alpha)`` -> multi-scale flow
    (:class:`~flowscope.transforms.MultiScale`): per level a ``Squeeze`` and ``steps`` steps of
    flow ``[ActNorm, InvertibleConv1x1, affine coupling]`` (:func:`~flowscope.transforms.glow_step`,
    channel-interleaved masks flipping every step, scale ``sigmoid(h + 2) + 1e-3``, conditioner
    conv3x3-ReLU-conv1x1-ReLU-conv3x3 zero-init), half the channels factored out after every
    level but the last; all latents concatenated into one flat vector with base ``"standard"``
    (M_std) or ``"diagonal"`` (M_diag).

    ``flow.log_prob(x)`` of integer-valued images ``x`` (floats in ``0..quanta-1``) is then a
    one-sample estimate of the discrete-data log-likelihood bound (dequantization term
    included): ``flowscope.metrics.bits_per_dim(flow.log_prob(x), C * H * W)``.  Tempered
    samples: ``flow.sample(n, temperature=0.7)`` (integer-valued images).

    Args:
        shape: ``(C, H, W)``; ``H`` and ``W`` must be divisible by ``2**levels`` (8x8 digits:
            levels <= 3; 28x28: levels <= 2 -- 28 -> 14 -> 7 cannot be halved again, pad to
            32x32 for more; 32x32: levels <= 5).
        levels: number of scales (seed 000's script default 3; the thesis used 5 at 128 px).
        steps: steps of flow per level, K (seed 000's script default 32; 8 here for CPU).
        hidden: conditioner channels (seed 000: 128; the thesis ran 256).
        base: ``"standard"``, ``"diagonal"`` or a ``Distribution`` over ``(C H W,)``.
        alpha: logit squeeze (seed 000: 1e-5; RealNVP: 0.05).
        quanta: number of discrete values per pixel (``ImageDataset.levels``: 256 for 8-bit
            images, 17 for scikit-learn's digits).
        dequantization: ``"uniform"``, ``"variational"`` (Flow++), ``{"kind": "variational",
            **options}`` (``steps``, ``hidden``, ``squeeze`` of ``VariationalDequantization``)
            or a dequantization Transform.
        split_prior: Glow's learned prior on factored-out channels (seed 000 had none).
        conv_init: ``InvertibleConv1x1`` initialization (``"permutation"``: seed 000's code;
            ``"rotation"``: the Glow paper; ``"identity"``).
        scale, clamp: the couplings' scale (:func:`~flowscope.transforms.glow_step`):
            ``"sigmoid"`` (seed 000: ``sigmoid(h + 2) + 1e-3``, an inverse that may amplify
            1000x per coupling) or ``"tanh"`` (``log s = clamp * tanh(h / clamp)``: at most
            ``exp(clamp)`` either way).
    """
    check_int("levels", levels)
    check_int("steps", steps)
    check_int("quanta", quanta, 2)
    shape = _image_size(shape, levels, "glow", levels)
    scales: list[Transform] = []
    current = shape
    for _ in range(levels):
        squeeze = Squeeze(shape=current)
        squeezed = squeeze.output_shape(current)
        flow_steps = [
            glow_step(squeezed, hidden, flip=k % 2 == 1, init=conv_init, scale=scale, clamp=clamp)
            for k in range(steps)
        ]
        scales.append(Compose(squeeze, *flow_steps))
        current = (squeezed[0] - squeezed[0] // 2, squeezed[1], squeezed[2])
    body = MultiScale(scales, shape, split_prior=split_prior)
    transform = Compose(*_preprocessing(shape, quanta, alpha, dequantization), body)
    return Flow(transform, make_base(base, body.features), shape=shape)


def realnvp_image(
    shape: tuple[int, int, int],
    levels: int = 3,
    hidden: int = 64,
    base: str | Distribution = "standard",
    alpha: float = 0.05,
    quanta: int = 256,
    dequantization: str | Mapping[str, Any] | Transform = "uniform",
    split_prior: bool = False,
    clamp: float = 3.0,
) -> Flow:
    """Multi-scale RealNVP for images (Dinh, Sohl-Dickstein & Bengio 2017, arXiv:1605.08803).

    Section 3.6: every level but the last applies 3 affine couplings with alternating
    checkerboard masks, a ``Squeeze``, 3 couplings with alternating channel masks, then factors
    out half the channels; the last level applies 4 checkerboard couplings.  Each coupling is
    preceded by an ``ActNorm`` (in place of the paper's batch normalization, section 3.7) and
    uses the soft-clamped scale ``log s = clamp * tanh(h / clamp)`` and a ``ConvNet``
    conditioner (in place of the paper's ResNets).  Preprocessing, latent, base and
    ``log_prob`` semantics are those of :func:`glow`.

    Args:
        shape: ``(C, H, W)``; ``H``, ``W`` divisible by ``2**(levels - 1)`` and the last level's
            ``H W >= 2`` (checkerboard).
        levels: number of scales.
        hidden: conditioner channels.
        base, alpha, quanta, dequantization, split_prior: as in :func:`glow` (``alpha`` defaults
            to RealNVP's 0.05).
        clamp: bound of the log-scale.
    """
    check_int("levels", levels)
    check_int("quanta", quanta, 2)
    shape = _image_size(shape, levels - 1, "realnvp_image", levels)
    if shape[1] * shape[2] < 2 * 4 ** (levels - 1):
        raise ValueError(
            f"shape: realnvp_image(levels={levels}) ends with checkerboard couplings on an image "
            f"of {shape[1] * shape[2] // 4 ** (levels - 1)} pixel(s); got {shape}, use fewer levels"
        )

    def block(mask_fn, at: tuple[int, int, int], count: int) -> list[Transform]:
        out: list[Transform] = []
        for k in range(count):
            coupling = image_coupling(
                mask_fn(at, flip=k % 2 == 1), AffineTransformer(scale="tanh", clamp=clamp), hidden
            )
            out += [ActNorm(at), coupling]
        return out

    scales: list[Transform] = []
    current = shape
    for i in range(levels):
        if i == levels - 1:
            scales.append(Compose(*block(checkerboard_mask, current, 4)))
            break
        squeeze = Squeeze(shape=current)
        squeezed = squeeze.output_shape(current)
        scales.append(
            Compose(
                *block(checkerboard_mask, current, 3),
                squeeze,
                *block(channel_mask, squeezed, 3),
            )
        )
        current = (squeezed[0] - squeezed[0] // 2, squeezed[1], squeezed[2])
    body = MultiScale(scales, shape, split_prior=split_prior)
    transform = Compose(*_preprocessing(shape, quanta, alpha, dequantization), body)
    return Flow(transform, make_base(base, body.features), shape=shape)
