"""Coherence of a flow's latent space (seed 000 sections 2.5, 3.4 and 5.1.1).

Seed 000 calls a flow *coherent* when (property 1) high-probability regions of the EMBEDDED data
and (property 2) high-probability regions of the BASE distribution both decode to well-formed
data.  It leaves "high-probability region" undefined (section 6.2) and uses the point two standard
deviations from the mean along every axis as a bound (eq. 5.1).  Two readings are measured here:

- the mode-centred region ``{u : ln p(u) >= bound}`` (a superlevel set, e.g. eq. 5.1's bound);
  in ``D`` dimensions it is misleading: a standard normal's samples have
  ``ln p(u) ~ -D (ln 2 pi + 1) / 2`` while eq. 5.1's point has ``-D (ln 2 pi + 4) / 2``, so the
  region holds a fraction ``P(chi2_D <= 4 D)`` of the samples, essentially all once ``D`` is
  large (0.98 in 2-D, 1 - 1e-5 in 10-D);
- the typical set ``{u : q_lo <= ln p(u) <= q_hi}``, quantiles of ``ln p(u)`` over base samples:
  where base samples actually fall ("A Note on the Evaluation of Generative Models", Theis et al.
  2016; "Do Deep Generative Models Know What They Don't Know?", Nalisnick et al. 2019).

Functions: :func:`encode_dataset` (latents and log-densities of a data set, streamed),
:func:`decode_latents`, :func:`mean_image` (Figs. 3.7-3.8) and :func:`tempered_samples`
(Figs. 3.9-3.10), :func:`two_sigma_bound` (eq. 5.1),
:func:`typical_set` (base-sample ``ln p(u)`` against that of encoded data) and
:func:`coherence_score` (property 2 as a number) with two judges: :func:`density_judge` for
2-D toys with a known density and :class:`ImageJudge` for images.

Example::

    >>> from flowscope.models import realnvp
    >>> from flowscope.data.toy2d import Moons
    >>> flow, toy = realnvp(2, layers=2), Moons()
    >>> x, _ = toy.sample(500, seed=0)
    >>> judge = density_judge(toy.log_prob, density_threshold(toy.log_prob, x, mass=0.99))
    >>> result = coherence_score(flow, judge, n=500, seed=0)   # untrained: low score
    >>> 0.0 <= result.score <= 1.0
    True
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from scipy import stats
from torch import Tensor

from .._checks import check_event_shape, check_finite, check_int, check_positive
from ..distributions import DiagonalNormal, Distribution, Logistic, StandardNormal, StudentT
from ..flow import Flow

__all__ = [
    "EncodedData",
    "DecodedLatents",
    "TypicalSet",
    "CoherenceScore",
    "ImageJudge",
    "encode_dataset",
    "decode_latents",
    "mean_image",
    "tempered_samples",
    "two_sigma_bound",
    "typical_set",
    "coherence_score",
    "density_threshold",
    "density_judge",
]


class EncodedData(NamedTuple):
    """A data set in latent space (CPU tensors): ``u (N, D)`` flattened latents, ``log_px``,
    ``log_pu``, ``logabsdet`` ``(N,)`` with ``log_px = log_pu + logabsdet``, and the labels that
    came with the data (``(N, ...)``) or None."""

    u: Tensor
    log_px: Tensor
    log_pu: Tensor
    logabsdet: Tensor
    labels: Tensor | None


class DecodedLatents(NamedTuple):
    """Latents decoded: ``x (N, *flow.shape)``, ``log_px`` and ``log_pu`` ``(N,)`` (CPU)."""

    x: Tensor
    log_px: Tensor
    log_pu: Tensor


def _device(module: torch.nn.Module) -> torch.device:
    for t in list(module.parameters()) + list(module.buffers()):
        return t.device
    return torch.device("cpu")


def _check_quantiles(quantiles: tuple[float, float]) -> tuple[float, float]:
    lo, hi = (float(q) for q in quantiles)
    if not (0.0 <= lo < hi <= 1.0):
        raise ValueError(f"quantiles: expected 0 <= low < high <= 1, got {quantiles!r}")
    return lo, hi


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's global generators for a block without disturbing them afterwards."""
    check_int("seed", seed, 0)
    cuda = [device.index if device.index is not None else 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def _eval_mode(flow: torch.nn.Module) -> Iterator[None]:
    """Evaluation mode (batch-norm layers use running statistics) and no autograd, restored."""
    was = flow.training
    flow.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        flow.train(was)


def _batches(data: Any, batch_size: int) -> Iterator[tuple[Tensor, Any]]:
    if isinstance(data, Tensor):
        for x in data.split(batch_size):
            yield x, None
        return
    if not isinstance(data, Iterable):
        raise ValueError(
            f"data: expected a Tensor or an iterable of batches, got {type(data).__name__}"
        )
    for i, batch in enumerate(data):
        if isinstance(batch, (tuple, list)):
            if not batch or not isinstance(batch[0], Tensor):
                raise ValueError(f"data: batch {i}: expected (x, labels, ...) with x a Tensor")
            yield batch[0], (batch[1] if len(batch) > 1 else None)
        elif isinstance(batch, Tensor):
            yield batch, None
        else:
            raise ValueError(
                f"data: batch {i}: expected a Tensor or a tuple, got {type(batch).__name__}"
            )


def encode_dataset(flow: Flow, data: Any, batch_size: int = 256, labels: Any = None) -> EncodedData:
    """Encode a data set batch by batch, in eval mode and without gradients.

    Args:
        flow: an unconditional flow.
        data: a tensor ``(N, *flow.shape)`` (cut into ``batch_size`` batches) or an iterable of
            batches, each ``x`` or ``(x, labels, ...)`` (a DataLoader): labels then pass through.
        labels: labels for a tensor ``data`` (``(N, ...)``), passed through unchanged.

    Returns:
        :class:`EncodedData` on the CPU; ``u`` is flattened to ``(N, D)``.
    """
    check_int("batch_size", batch_size)
    device = _device(flow)
    parts: list[tuple[Tensor, ...]] = []
    ys: list[Tensor] = []
    with _eval_mode(flow):
        for x, y in _batches(data, batch_size):
            u, ladj = flow.encode(x.to(device))
            log_pu = flow.base.log_prob(u)
            parts.append(tuple(t.detach().cpu() for t in (u.reshape(len(u), -1), log_pu, ladj)))
            if y is not None:
                ys.append(torch.as_tensor(y).cpu())
    if not parts:
        raise ValueError("data: expected at least one example, got none")
    u, log_pu, ladj = (torch.cat(c) for c in zip(*parts))
    out_labels = torch.cat(ys) if ys else None
    if labels is not None:
        out_labels = torch.as_tensor(labels)
    if out_labels is not None and len(out_labels) != len(u):
        raise ValueError(
            f"labels: expected {len(u)} labels to match the data, got {len(out_labels)}"
        )
    return EncodedData(u, log_pu + ladj, log_pu, ladj, out_labels)


def decode_latents(flow: Flow, u: Tensor, batch_size: int = 256) -> DecodedLatents:
    """Decode latents ``u (N, *base.shape)`` with ``ln p(x) = ln p(u) - log|det dT/du|`` (the
    exact inverse log-det, no re-encoding): what seed 000 prints under every image."""
    check_int("batch_size", batch_size)
    check_event_shape("u", u, flow.base.shape)
    check_finite("u", u)
    device = _device(flow)
    xs, lpx, lpu = [], [], []
    with _eval_mode(flow):
        for ub in u.split(batch_size):
            ub = ub.to(device)
            x, ladj_inv = flow.transform.inverse(ub)
            log_pu = flow.base.log_prob(ub)
            xs.append(x.cpu())
            lpx.append((log_pu - ladj_inv).cpu())
            lpu.append(log_pu.cpu())
    return DecodedLatents(torch.cat(xs), torch.cat(lpx), torch.cat(lpu))


def mean_image(flow: Flow) -> DecodedLatents:
    """The base mean decoded (seed 000 Figs. 3.7-3.8): ``x (1, *shape)``, ``ln p(x)``,
    ``ln p(u)`` (each ``(1,)``).  For a Gaussian base this is its mode."""
    return decode_latents(flow, flow.base.mean.unsqueeze(0))


def tempered_samples(
    flow: Flow, n: int, temperature: float = 0.7, seed: int = 0, batch_size: int = 256
) -> DecodedLatents:
    """``n`` samples drawn at ``temperature`` (seed 000 Figs. 3.9-3.10, tau = 0.7: the base's
    spread scaled by tau) with their UNtempered ``ln p(x)`` and ``ln p(u)``; seeded."""
    check_int("n", n)
    check_positive("temperature", temperature)
    with torch.no_grad(), _seeded(seed, _device(flow)):
        u = flow.base.sample(n, float(temperature))
    return decode_latents(flow, u, batch_size)


def _base_std(base: Distribution) -> Tensor:
    if isinstance(base, StandardNormal):
        return torch.ones(base.shape, dtype=base.mean.dtype, device=base.mean.device)
    if isinstance(base, DiagonalNormal):
        return base.log_scale.detach().exp()
    if isinstance(base, Logistic):
        m = base.mean
        return torch.full(base.shape, math.pi / math.sqrt(3.0), dtype=m.dtype, device=m.device)
    if isinstance(base, StudentT):
        v = float(base.df)
        if v <= 2:
            raise ValueError(f"base: a Student-t with df = {v:.3g} <= 2 has no standard deviation")
        return base.log_scale.detach().exp() * math.sqrt(v / (v - 2))
    raise ValueError(
        "base: expected a unimodal base with a mean and standard deviations (StandardNormal, "
        f"DiagonalNormal, StudentT, Logistic), got {type(base).__name__}"
    )


def two_sigma_bound(base: Distribution | Flow, k: float = 2.0) -> float:
    """Seed 000 eq. 5.1: ``ln p(mu + k Sigma^(1/2) 1)``, the base log-density of the point ``k``
    standard deviations from the mean along EVERY axis (``k = 2`` in the thesis).

    For ``N(mu, diag(sigma^2))`` in ``D`` dimensions this is
    ``-D (ln 2 pi + k^2) / 2 - sum_i ln sigma_i`` (the seed's M_std value, -143471.67 for
    ``D = 128 * 128 * 3``, is this with ``k = 2``).  Its squared Mahalanobis radius ``k^2 D``
    is far beyond the typical ``D +- sqrt(2 D)``: the region ``{ln p(u) >= bound}`` holds almost
    all the base mass in high dimension (see the module docstring).
    """
    if isinstance(base, Flow):
        base = base.base
    check_positive("k", k)
    with torch.no_grad():
        point = base.mean + k * _base_std(base).to(base.mean.dtype)
        return float(base.log_prob(point.unsqueeze(0))[0])


@dataclass(frozen=True, eq=False)
class TypicalSet:
    """``ln p(u)`` of base samples against that of encoded data (numpy float64 arrays), the
    typical-set band, the eq. 5.1 bound and how much of each sample lies in each region."""

    base_log_pu: np.ndarray
    data_log_pu: np.ndarray
    band: tuple[float, float]
    quantiles: tuple[float, float]
    data_in_band: float
    data_above_band: float
    data_below_band: float
    base_in_band: float
    ks_statistic: float
    ks_pvalue: float
    mode_log_pu: float
    bound: float | None
    base_above_bound: float | None
    data_above_bound: float | None

    def metrics(self) -> dict[str, float]:
        """The scalar fields plus means/stds, for a ``metrics.json``."""
        out = {
            k: float(v)
            for k, v in self.__dict__.items()
            if isinstance(v, (int, float)) and v is not None
        }
        out.update(
            band_low=self.band[0],
            band_high=self.band[1],
            base_log_pu_mean=float(self.base_log_pu.mean()),
            base_log_pu_std=float(self.base_log_pu.std()),
            data_log_pu_mean=float(self.data_log_pu.mean()),
            data_log_pu_std=float(self.data_log_pu.std()),
        )
        return out


def _sample_log_pu(
    base: Distribution, n: int, temperature: float, batch_size: int
) -> Iterator[tuple[Tensor, Tensor]]:
    """Base samples and their untempered ``ln p(u)``, in batches (memory stays O(batch D))."""
    for start in range(0, n, batch_size):
        u = base.sample(min(batch_size, n - start), temperature)
        yield u, base.log_prob(u)


def typical_set(
    source: Flow | Distribution,
    encoded: EncodedData | Tensor,
    n: int = 10_000,
    temperature: float = 1.0,
    quantiles: tuple[float, float] = (0.05, 0.95),
    seed: int = 0,
    batch_size: int = 1024,
) -> TypicalSet:
    """Where the encoded data sit relative to the base's typical set and to eq. 5.1's bound.

    Draws ``n`` base samples at ``temperature`` and evaluates their (untempered) ``ln p(u)``; the
    band ``[q_lo, q_hi]`` are its ``quantiles``.  Returns the fractions of encoded data inside,
    above (closer to the mode than typical samples) and below the band; the two-sample
    Kolmogorov-Smirnov statistic between the two ``ln p(u)`` samples (0 when the embedding fills
    the base as the base does, 1 when they do not overlap); and the fractions above the eq. 5.1
    bound (None when the base has no such bound, e.g. a mixture).

    Args:
        source: the flow (its base is used) or a base distribution.
        encoded: :class:`EncodedData` or latents ``(N, *base.shape)``.
    """
    base = source.base if isinstance(source, Flow) else source
    if not isinstance(base, Distribution):
        raise ValueError(f"source: expected a Flow or a Distribution, got {type(source).__name__}")
    check_int("n", n, 2)
    check_int("batch_size", batch_size)
    check_positive("temperature", temperature)
    q = _check_quantiles(quantiles)
    with torch.no_grad():
        if isinstance(encoded, EncodedData):
            data_lp = encoded.log_pu
        elif isinstance(encoded, Tensor):
            check_event_shape("encoded", encoded, base.shape)
            data_lp = base.log_prob(encoded.to(_device(base)))
        else:
            raise ValueError(
                f"encoded: expected EncodedData or a Tensor, got {type(encoded).__name__}"
            )
        with _seeded(seed, _device(base)):
            base_lp = torch.cat([lp for _, lp in _sample_log_pu(base, n, temperature, batch_size)])
        mode_lp = float(base.log_prob(base.mean.unsqueeze(0))[0])
    b = base_lp.double().cpu().numpy()
    d = data_lp.double().cpu().numpy()
    if not (np.isfinite(b).all() and np.isfinite(d).all()):
        raise ValueError("encoded: ln p(u) has NaN/inf entries; check the flow and the data")
    lo, hi = (float(v) for v in np.quantile(b, q))
    try:
        bound = two_sigma_bound(base)
    except ValueError:
        bound = None
    ks = stats.ks_2samp(b, d)
    return TypicalSet(
        base_log_pu=b,
        data_log_pu=d,
        band=(lo, hi),
        quantiles=q,
        data_in_band=float(np.mean((d >= lo) & (d <= hi))),
        data_above_band=float(np.mean(d > hi)),
        data_below_band=float(np.mean(d < lo)),
        base_in_band=float(np.mean((b >= lo) & (b <= hi))),
        ks_statistic=float(ks.statistic),
        ks_pvalue=float(ks.pvalue),
        mode_log_pu=mode_lp,
        bound=bound,
        base_above_bound=None if bound is None else float(np.mean(b >= bound)),
        data_above_bound=None if bound is None else float(np.mean(d >= bound)),
    )


@dataclass(frozen=True)
class CoherenceScore:
    """Property 2 as a number: ``score`` = fraction of decoded in-region base samples judged
    good, with its binomial standard error; ``kept`` of ``drawn`` samples fell in the region
    ``band`` of ``ln p(u)``."""

    score: float
    stderr: float
    kept: int
    drawn: int
    band: tuple[float, float]


def coherence_score(
    flow: Flow,
    is_good: Callable[[Tensor], Tensor],
    n: int = 1000,
    quantiles: tuple[float, float] = (0.05, 0.95),
    temperature: float = 1.0,
    seed: int = 0,
    n_reference: int | None = None,
    band: tuple[float, float] | None = None,
    batch_size: int = 256,
) -> CoherenceScore:
    """Seed 000 property 2 (section 2.5): do high-probability base samples decode to good data?

    1. ``n_reference`` (default ``n``) untempered base samples define the region: the band
       ``[q_lo, q_hi]`` of their ``ln p(u)`` at ``quantiles``.  The default ``(0.05, 0.95)`` is
       the typical set; ``(q, 1.0)`` is the mode-centred highest-density region of mass ``1-q``.
    2. ``n`` base samples at ``temperature`` are drawn; those inside the band are decoded.
    3. ``score`` = fraction of the decoded samples for which ``is_good`` is True.

    Args:
        is_good: ``x (m, *flow.shape) -> (m,)`` booleans (``x`` on the CPU), e.g.
            :func:`density_judge` or an :class:`ImageJudge`.
        band: an explicit ``(low, high)`` range of ``ln p(u)`` instead of ``quantiles``, e.g.
            ``(two_sigma_bound(flow), math.inf)`` for eq. 5.1's region.
    """
    check_int("n", n)
    n_ref = check_int("n_reference", n if n_reference is None else n_reference, 2)
    check_int("batch_size", batch_size)
    check_positive("temperature", temperature)
    q = _check_quantiles(quantiles)
    base = flow.base
    with torch.no_grad(), _seeded(seed, _device(flow)):
        if band is None:
            ref = torch.cat([lp for _, lp in _sample_log_pu(base, n_ref, 1.0, batch_size)])
            qs = torch.quantile(ref.double().cpu(), torch.tensor(q, dtype=torch.float64))
            lo, hi = (float(v) for v in qs)
        else:
            lo, hi = (float(v) for v in band)
            if not lo < hi:
                raise ValueError(f"band: expected low < high, got {band!r}")
        kept = []
        for u, lp in _sample_log_pu(base, n, temperature, batch_size):
            lp = lp.double().cpu()
            kept.append(u[((lp >= lo) & (lp <= hi)).to(u.device)])
    u = torch.cat(kept)
    if len(u) == 0:
        raise ValueError(
            f"quantiles: no base sample at temperature={temperature} fell in the ln p(u) band "
            f"[{lo:.4g}, {hi:.4g}]; widen the band or raise the temperature"
        )
    good = []
    for ub in u.split(batch_size):
        verdict = torch.as_tensor(is_good(decode_latents(flow, ub, batch_size).x))
        if verdict.shape != (len(ub),):
            raise ValueError(
                f"is_good: expected {len(ub)} booleans, got shape {tuple(verdict.shape)}"
            )
        good.append(verdict.bool().cpu())
    p = float(torch.cat(good).double().mean())
    return CoherenceScore(p, math.sqrt(p * (1 - p) / len(u)), len(u), n, (lo, hi))


def density_threshold(
    true_log_prob: Callable[[Tensor], Tensor], data: Tensor, mass: float = 0.99
) -> float:
    """The level ``t`` of the true log-density above which a fraction ``mass`` of the data lie
    (the ``1 - mass`` quantile of ``true_log_prob(data)``): ``{x : ln p(x) >= t}`` is the
    highest-density region of (approximately) that mass."""
    if not (0.0 < mass < 1.0):
        raise ValueError(f"mass: expected a number in (0, 1), got {mass!r}")
    lp = torch.as_tensor(true_log_prob(data)).double().cpu()
    return float(torch.quantile(lp[torch.isfinite(lp)], 1.0 - mass))


def density_judge(
    true_log_prob: Callable[[Tensor], Tensor], threshold: float
) -> Callable[[Tensor], Tensor]:
    """Judge for 2-D toys: a sample is good iff its TRUE log-density is ``>= threshold`` (see
    :func:`density_threshold`); non-finite samples are bad."""

    def judge(x: Tensor) -> Tensor:
        ok = torch.isfinite(x.reshape(len(x), -1)).all(1)
        good = torch.zeros(len(x), dtype=torch.bool)
        if ok.any():
            lp = torch.as_tensor(true_log_prob(x[ok])).cpu()
            good[ok.cpu()] = lp >= threshold
        return good

    return judge


def _nn_distance(x: Tensor, ref: Tensor, chunk: int, exclude_self: bool = False) -> Tensor:
    out = []
    for start in range(0, len(x), chunk):
        d = torch.cdist(x[start : start + chunk], ref)
        if exclude_self:
            idx = torch.arange(d.shape[0])
            d[idx, idx + start] = math.inf
        out.append(d.min(1).values)
    return torch.cat(out)


class ImageJudge:
    """Judge for images: good iff a held-out classifier is confident AND the nearest real image
    is no farther than real images are from each other.

    ``good(x) = confidence_fn(x) >= conf_threshold  and  min_j ||x - r_j|| <= t``, where ``t`` is
    the ``nn_quantile`` quantile of the leave-one-out nearest-neighbour distances among the
    ``reference_images`` (Euclidean, on flattened pixels).  The classifier and the references
    must be in the space the flow decodes to (e.g. [0, 1] pixels): the judge does not convert.

    Args:
        confidence_fn: ``x (m, ...) -> (m,)`` e.g. the max class probability of a classifier
            trained on other images than the reference.
        reference_images: real images ``(M, ...)``, ``M >= 2``.
    """

    def __init__(
        self,
        confidence_fn: Callable[[Tensor], Tensor],
        reference_images: Tensor,
        conf_threshold: float = 0.5,
        nn_quantile: float = 0.95,
        chunk: int = 512,
    ) -> None:
        if not (0.0 < nn_quantile <= 1.0):
            raise ValueError(f"nn_quantile: expected a number in (0, 1], got {nn_quantile!r}")
        if len(reference_images) < 2:
            raise ValueError(
                f"reference_images: expected at least 2 images, got {len(reference_images)}"
            )
        check_finite("reference_images", reference_images)
        self.confidence_fn = confidence_fn
        self.conf_threshold = float(conf_threshold)
        self.chunk = check_int("chunk", chunk)
        self.reference = reference_images.detach().reshape(len(reference_images), -1).float().cpu()
        real = _nn_distance(self.reference, self.reference, chunk, exclude_self=True)
        self.nn_threshold = float(torch.quantile(real.double(), nn_quantile))

    def details(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(confidence (m,), nearest-neighbour distance (m,))`` of images ``x``."""
        flat = x.detach().reshape(len(x), -1).float().cpu()
        if flat.shape[1] != self.reference.shape[1]:
            raise ValueError(
                f"x: expected images with {self.reference.shape[1]} values like the references, "
                f"got {flat.shape[1]}"
            )
        conf = torch.as_tensor(self.confidence_fn(x)).detach().reshape(-1).float().cpu()
        return conf, _nn_distance(flat, self.reference, self.chunk)

    def __call__(self, x: Tensor) -> Tensor:
        conf, nn = self.details(x)
        ok = torch.isfinite(x.detach().reshape(len(x), -1)).all(1).cpu()
        return ok & (conf >= self.conf_threshold) & (nn <= self.nn_threshold)
