"""Ready-made flows: short recipes over the transforms, each returning a :class:`~flowscope.Flow`.

Structural defaults follow the papers (number and kind of layers, masks, orderings, priors);
conditioner widths default to sizes that suit low-dimensional data and are plain keyword
arguments.  Every density model accepts ``context_features=`` and then builds a conditional flow
whose every conditioner network sees the context.
"""

from __future__ import annotations

from torch import nn

from .distributions import DiagonalNormal, Distribution, Logistic, StandardNormal
from .flow import Flow
from .transforms import (
    Affine,
    AffineTransformer,
    BatchNorm,
    Compose,
    Coupling,
    Inverse,
    InverseAutoregressive,
    LULinear,
    MaskedAutoregressive,
    Planar,
    Radial,
    RationalQuadraticSpline,
    ReversePermutation,
    Transform,
    additive_coupling,
    affine_coupling,
    half_mask,
)

__all__ = ["nice", "realnvp", "maf", "iaf", "nsf", "planar", "radial", "make_base"]


def _positive(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")
    return value


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
    _positive("features", features, 2)
    _positive("layers", layers)
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
) -> Flow:
    """RealNVP (Dinh, Sohl-Dickstein & Bengio 2017, arXiv:1605.08803) for vectors.

    ``layers`` affine couplings (eqs. 7-9) on alternating halves, with the soft-clamped log-scale
    of :class:`~flowscope.transforms.AffineTransformer`, optionally followed each by the
    batch-norm flow layer of section 3.7 (seed 001 section 3.4.3).  Seed 001 used 8 such blocks
    with 1x8 conditioners on pinwheel; the peer benchmark uses 8 with 2x64 (the default here).
    """
    _positive("features", features, 2)
    _positive("layers", layers)
    steps: list[Transform] = []
    for i in range(layers):
        steps.append(
            affine_coupling(
                half_mask(features, flip=i % 2 == 1),
                clamp=clamp,
                hidden=hidden,
                layers=net_layers,
                context_features=context_features,
            )
        )
        if batch_norm:
            steps.append(BatchNorm(features))
    return Flow(Compose(*steps), make_base(base, features))


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
    _positive("features", features, 1)
    _positive("layers", layers)
    steps: list[Transform] = []
    for i in range(layers):
        if i > 0:
            # The MAF paper reverses the variable order between layers (section 3.2).
            steps.append(ReversePermutation(features))
        steps.append(
            layer(
                features,
                transformer_factory(),
                hidden=hidden,
                layers=net_layers,
                context_features=context_features,
            )
        )
        if batch_norm:
            steps.append(BatchNorm(features))
    return Flow(Compose(*steps), make_base(base, features))


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
    _positive("features", features, 1 if autoregressive else 2)
    _positive("layers", layers)
    _positive("bins", bins, 2)
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
    steps: list[Transform] = []
    for i in range(layers):
        steps.append(LULinear(features))
        steps.append(
            Coupling(
                half_mask(features, flip=i % 2 == 1),
                RationalQuadraticSpline(bins=bins, bound=bound),
                hidden=hidden,
                layers=net_layers,
                context_features=context_features,
            )
        )
    steps.append(LULinear(features))
    return Flow(Compose(*steps), make_base(base, features))


def _generative(
    layer: type[nn.Module], features: int, layers: int, base: str | Distribution
) -> Flow:
    _positive("features", features)
    _positive("layers", layers)
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
