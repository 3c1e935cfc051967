"""Variational Mixture of Normalizing Flows (VMoNF): K flows, a posterior network, an exact ELBO.

Seed 001 (chapter 4): a mixture ``p(x) = sum_k pi_k p_k(x)`` whose components ``p_k`` are
normalizing flows, fitted by maximizing the evidence lower bound with a variational posterior
``q(z | x)`` given by a neural network with a softmax output.  With K discrete values of ``z``
the expectation in the ELBO is a finite sum, so it is computed exactly (seed 001 eq. 4.2):

    ELBO(x) = sum_k q_k(x) [log p_k(x) + log pi_k - log q_k(x)]  <=  log p(x),

with equality iff ``q(z | x)`` is the exact posterior ``pi_k p_k(x) / p(x)``.  The softmax
divides the posterior's logits by a temperature ``T(t) = max(T_min, T0 exp(-rate t))`` at step
``t`` (seed 001 chapter 5, after Zhang et al. 2017; the original code: ``T0 = 1``, ``rate =
1e-3``, no floor), so that early on every component sees all of the data.

Layout (DESIGN.md): the mixture returns per-component log-densities ``(batch, K)``; the ELBO,
the exact mixture likelihood, the exact posterior and the semi-supervised loss are the small
pure functions below; the K components run as one batched computation
(:mod:`flowscope.mixture_batched`).  Semi-supervised training (seed 001 section 5.1.2) is the
:class:`SemiSupervised` objective, trained by the one :class:`~flowscope.train.Trainer` like
everything else.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ._checks import check_event_shape, check_finite, check_positive
from .flow import Flow
from .mixture_batched import ComponentBank, make_bank
from .nets import MLP

__all__ = [
    "MixtureOfFlows",
    "SemiSupervised",
    "elbo",
    "mixture_log_prob",
    "exact_posterior",
    "supervised_loss",
    "consistency_penalty",
    "semi_supervised_dataset",
    "check_labels",
    "default_posterior",
]


# ----------------------------------------------------------------------------- pure functions


def elbo(log_pk: Tensor, log_q: Tensor, log_pi: Tensor) -> Tensor:
    """Exact ELBO by enumeration of the K components (seed 001 eq. 4.2).

    ``sum_k q_k (log p_k(x) + log pi_k - log q_k)``; a component with ``q_k = 0`` contributes 0
    (the limit of ``q log q``), never ``0 * inf``.

    Args:
        log_pk: ``(batch, K)`` component log-densities ``log p(x | z = k)``.
        log_q: ``(batch, K)`` log-probabilities of the variational posterior ``q(z | x)``.
        log_pi: ``(K,)`` log mixture weights ``log p(z = k)``.

    Returns:
        ``(batch,)``.
    """
    q = log_q.exp()
    terms = torch.where(q > 0, q * (log_pk + log_pi - log_q), torch.zeros_like(q))
    return terms.sum(dim=-1)


def mixture_log_prob(log_pk: Tensor, log_pi: Tensor) -> Tensor:
    """Exact mixture density ``log p(x) = logsumexp_k (log pi_k + log p_k(x))``.

    Shapes: ``log_pk (batch, K)``, ``log_pi (K,)`` -> ``(batch,)``.
    """
    return torch.logsumexp(log_pk + log_pi, dim=-1)


def exact_posterior(log_pk: Tensor, log_pi: Tensor) -> Tensor:
    """Exact ``log p(z = k | x) = log pi_k + log p_k(x) - log p(x)`` (Bayes): ``(batch, K)``."""
    return torch.log_softmax(log_pk + log_pi, dim=-1)


def supervised_loss(log_pk: Tensor, log_q: Tensor, log_pi: Tensor, labels: Tensor) -> Tensor:
    """Per-example loss on labeled data (seed 001 section 5.1.2): ``(batch,)``.

    ``-log pi_y - log p_y(x)`` trains the labeled component by maximum likelihood (the joint
    ``log p(x, z = y)``) and ``-log q_y(x)`` is the cross-entropy that trains the posterior to
    predict the label.  Both are MINIMIZED (the seed's code added the cross-entropy with the
    wrong sign, pushing q away from the labels).

    Args:
        log_pk, log_q: ``(batch, K)`` as in :func:`elbo`; ``log_pi``: ``(K,)``.
        labels: ``(batch,)`` integers in ``0 .. K-1``.
    """
    index = labels.unsqueeze(-1)
    joint = (log_pk + log_pi).gather(-1, index).squeeze(-1)
    return -joint - log_q.gather(-1, index).squeeze(-1)


def consistency_penalty(log_q: Tensor, log_q_perturbed: Tensor) -> Tensor:
    """``KL(q(z | x) || q(z | x + noise))`` with ``q(z | x)`` held fixed: ``(batch,)``.

    A consistency regularizer on the posterior (the remedy seed 001 section 6.2 proposes, after
    "Semi-Supervised Learning with Normalizing Flows", Izmailov et al. 2019, and the Pi-model of
    "Temporal Ensembling for Semi-Supervised Learning", Laine & Aila 2017, arXiv:1610.02242):
    a posterior that changes its mind under a small perturbation of ``x`` is penalized, so its
    decision boundaries move to regions of low data density instead of cutting through clusters.
    """
    target = log_q.detach()
    return (target.exp() * (target - log_q_perturbed)).sum(dim=-1)


def check_labels(name: str, labels: Tensor, k: int, allow_unlabeled: bool = False) -> None:
    """Raise unless ``labels`` are integers in ``0 .. k-1`` (``-1`` = unlabeled when allowed)."""
    if (
        not isinstance(labels, Tensor)
        or labels.dtype.is_floating_point
        or labels.dtype
        in (
            torch.bool,
            torch.complex64,
            torch.complex128,
        )
    ):
        got = f"{labels.dtype} tensor" if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"{name}: expected an integer tensor of component indices, got a {got}")
    low = -1 if allow_unlabeled else 0
    bad = (labels < low) | (labels >= k)
    if bad.any():
        what = "-1 (unlabeled) or " if allow_unlabeled else ""
        raise ValueError(
            f"{name}: expected {what}component indices in 0..{k - 1}, got "
            f"{int(bad.sum())} outside (e.g. {int(labels[bad][0])})"
        )


def semi_supervised_dataset(
    x_unlabeled: Tensor, x_labeled: Tensor, labels: Tensor, repeats: int = 1
) -> tuple[Tensor, Tensor]:
    """One training set for :class:`SemiSupervised`: ``(x, y)`` with ``y = -1`` unlabeled.

    The labeled points are repeated ``repeats`` times, so a shuffled batch holds on average a
    fraction ``repeats N_l / (N_u + repeats N_l)`` of labeled rows: this weighs the supervised
    term against the unsupervised one (the seed alternated whole supervised and unsupervised
    epochs instead; mixing them in each batch optimizes the same sum with less variance).

    Returns:
        ``x`` ``(N_u + repeats N_l, *shape)`` and ``y`` ``(N_u + repeats N_l,)`` int64.
    """
    if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
        raise ValueError(f"repeats: expected a positive int, got {repeats!r}")
    if len(x_labeled) != len(labels):
        raise ValueError(
            f"labels: expected one label per labeled point ({len(x_labeled)}), got {len(labels)}"
        )
    x = torch.cat([x_unlabeled] + [x_labeled] * repeats)
    unl = torch.full((len(x_unlabeled),), -1, dtype=torch.long)
    y = torch.cat([unl] + [labels.long()] * repeats)
    return x, y


# ----------------------------------------------------------------------------- the model


def _nonnegative(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
    return float(value)


def _count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")
    return value


def default_posterior(
    features: int, k: int, hidden: int = 64, layers: int = 1, batch_norm: bool = False
) -> nn.Module:
    """``q(z | x)`` logits: Flatten, then ``layers`` blocks Linear-ReLU(-BatchNorm), Linear to K.

    Seed 001's code used Linear-ReLU-BatchNorm blocks; the default here leaves batch norm out
    (``batch_norm=False``) so that the posterior of one point does not depend on the rest of
    its batch (evaluation and training then agree), see docs/vmonf.md.
    """
    if not batch_norm:
        return nn.Sequential(nn.Flatten(), MLP(features, k, hidden, layers, zero_init=False))
    blocks: list[nn.Module] = [nn.Flatten()]
    width = features
    for _ in range(layers):
        blocks += [nn.Linear(width, hidden), nn.ReLU(), nn.BatchNorm1d(hidden)]
        width = hidden
    blocks.append(nn.Linear(width, k))
    return nn.Sequential(*blocks)


class MixtureOfFlows(nn.Module):
    """Mixture of K normalizing flows with a variational posterior (VMoNF, seed 001 chapter 4).

    Args:
        components: a list of K flows over one event shape, or ``(factory, K)`` where
            ``factory()`` builds one flow (called K times: K independent initializations).
            Flows of one architecture are stacked and evaluated together (``batched``).
        posterior: a module mapping ``x (batch, *shape)`` to K logits ``(batch, K)``; None
            builds :func:`default_posterior` (MLP ``posterior_hidden`` x ``posterior_layers``).
        learn_weights: learn the mixture weights ``pi`` (softmax of K logits); otherwise they
            are fixed to ``weights`` (seed 001: fixed uniform).
        weights: ``(K,)`` positive fixed (or initial) weights, normalized; None = uniform.
        temperature: ``T0`` of the schedule ``T(t) = max(T_min, T0 exp(-rate t))``.
        temperature_rate: ``rate`` per training step (the original code: 1e-3).
        temperature_min: ``T_min``, the floor (0 allowed: the original had none).
        batched: ``None`` stacks the components when possible, ``True`` requires it, ``False``
            keeps a Python loop (see :mod:`flowscope.mixture_batched`).
        posterior_hidden, posterior_layers: size of the default posterior.
        consistency: weight of :func:`consistency_penalty` added to the training loss (0: the
            seed's objective, the ELBO alone).
        consistency_noise: standard deviation of the Gaussian perturbation of ``x`` it uses.

    Shapes: ``x (batch, *shape)``; per-component quantities ``(batch, K)``; labels ``(batch,)``.

    The step counter ``t`` of the temperature schedule is the buffer ``step``: it advances by
    one at each :meth:`loss` call in training mode and is saved in the state dict, so a resumed
    run continues the schedule where it stopped.
    """

    def __init__(
        self,
        components: Sequence[Flow] | tuple[Callable[[], Flow], int],
        posterior: nn.Module | None = None,
        learn_weights: bool = False,
        weights: Tensor | Sequence[float] | None = None,
        temperature: float = 1.0,
        temperature_rate: float = 1e-3,
        temperature_min: float = 0.05,
        batched: bool | None = None,
        posterior_hidden: int = 64,
        posterior_layers: int = 1,
        consistency: float = 0.0,
        consistency_noise: float = 0.1,
    ) -> None:
        super().__init__()
        flows = self._build(components)
        self.components: ComponentBank = make_bank(flows, batched)
        self.num_components = k = len(flows)
        self.shape = self.components.shape
        check_positive("temperature", temperature)
        self.temperature0 = float(temperature)
        self.temperature_rate = _nonnegative("temperature_rate", temperature_rate)
        self.temperature_min = _nonnegative("temperature_min", temperature_min)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.consistency = _nonnegative("consistency", consistency)
        check_positive("consistency_noise", consistency_noise)
        self.consistency_noise = float(consistency_noise)

        log_w = self._log_weights(weights, k)
        if learn_weights:
            self.weight_logits = nn.Parameter(log_w)
        else:
            self.register_buffer("weight_logits", log_w)
        self.learn_weights = bool(learn_weights)

        features = math.prod(self.shape)
        if posterior is None:
            posterior = default_posterior(features, k, posterior_hidden, posterior_layers)
        elif not isinstance(posterior, nn.Module):
            raise ValueError(f"posterior: expected an nn.Module, got {type(posterior).__name__}")
        self.posterior = posterior
        self._check_posterior()

    # ------------------------------------------------------------------ construction

    @staticmethod
    def _build(components: object) -> list[Flow]:
        if (
            isinstance(components, tuple)
            and len(components) == 2
            and callable(components[0])
            and not isinstance(components[0], nn.Module)
        ):
            factory, k = components
            _count("K", k, 1)
            return [factory() for _ in range(k)]
        if isinstance(components, nn.Module) or not isinstance(components, Sequence):
            raise ValueError(
                "components: expected a list of K flows or (factory, K), got "
                f"{type(components).__name__}"
            )
        if len(components) < 1:
            raise ValueError("components: expected K >= 1 flows, got an empty list (K = 0)")
        return list(components)

    @staticmethod
    def _log_weights(weights: Tensor | Sequence[float] | None, k: int) -> Tensor:
        if weights is None:
            return torch.full((k,), -math.log(k))
        w = torch.as_tensor(weights, dtype=torch.float32)
        if w.shape != (k,) or not torch.isfinite(w).all() or (w <= 0).any():
            got = w.tolist() if w.dim() <= 1 else f"shape {tuple(w.shape)}"
            raise ValueError(f"weights: expected {k} finite positive numbers, got {got}")
        return (w / w.sum()).log()

    def _check_posterior(self) -> None:
        """Run the posterior once on zeros so that a wrong output size fails here, clearly."""
        modes = [(m, m.training) for m in self.posterior.modules()]
        self.posterior.eval()
        try:
            with torch.no_grad():
                probe = next(iter(self.components.parameters()), torch.zeros(()))
                out = self.posterior(probe.new_zeros((2, *self.shape)))
        finally:
            for m, mode in modes:
                m.training = mode
        self._check_logits(out, 2)

    def _check_logits(self, logits: object, batch: int) -> None:
        k = self.num_components
        if not isinstance(logits, Tensor) or tuple(logits.shape) != (batch, k):
            got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ValueError(
                f"posterior: expected an output of shape (batch, K) = ({batch}, {k}), got {got}"
            )

    # ------------------------------------------------------------------ pieces

    @property
    def temperature(self) -> float:
        """``T(t) = max(T_min, T0 exp(-rate t))`` at the current step ``t``."""
        t = float(self.step)
        return max(self.temperature_min, self.temperature0 * math.exp(-self.temperature_rate * t))

    @property
    def log_weights(self) -> Tensor:
        """``log pi``: ``(K,)``."""
        return torch.log_softmax(self.weight_logits, dim=0)

    def component(self, k: int) -> Flow:
        """Component ``k`` as a standalone flow (a copy when the components are stacked)."""
        return self.components.component(self._k(k))

    def _k(self, k: int) -> int:
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < self.num_components:
            raise ValueError(
                f"k: expected a component index in 0..{self.num_components - 1}, got {k!r}"
            )
        return k

    def _check_x(self, x: Tensor) -> None:
        # Validated once here: inside the vmapped components the value checks are skipped.
        if not isinstance(x, Tensor):
            raise ValueError(f"x: expected a tensor, got {type(x).__name__}")
        check_event_shape("x", x, self.shape)
        check_finite("x", x)

    def component_log_prob(self, x: Tensor) -> Tensor:
        """``log p_k(x)`` for every component, one batched pass: ``(batch, K)``."""
        self._check_x(x)
        return self.components.log_prob(x)

    def posterior_logits(self, x: Tensor) -> Tensor:
        """The posterior network's raw logits (before the temperature): ``(batch, K)``."""
        logits = self.posterior(x)
        self._check_logits(logits, x.shape[0])
        return logits

    def log_q(self, x: Tensor, temperature: float | None = None) -> Tensor:
        """``log q(z | x) = log_softmax(logits / T)``: ``(batch, K)`` (T: the schedule's now)."""
        self._check_x(x)
        return self._log_q(x, temperature)

    def _log_q(self, x: Tensor, temperature: float | None = None) -> Tensor:
        t = self.temperature if temperature is None else temperature
        return torch.log_softmax(self.posterior_logits(x) / t, dim=-1)

    def _parts(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self._check_x(x)
        return self.components.log_prob(x), self._log_q(x)

    # ------------------------------------------------------------------ objectives

    def elbo(self, x: Tensor) -> Tensor:
        """Exact ELBO per example (seed 001 eq. 4.2): ``(batch,)``, ``<= log_prob(x)``."""
        log_pk, log_q = self._parts(x)
        return elbo(log_pk, log_q, self.log_weights)

    def _advance(self) -> None:
        if self.training:
            self.step += 1

    def _regularized(self, rows: Tensor, x: Tensor, log_q: Tensor) -> Tensor:
        """Mean of the per-row loss plus the consistency penalty (training mode only)."""
        out = rows.mean()
        if self.consistency > 0 and self.training:
            noisy = x + self.consistency_noise * torch.randn_like(x)
            penalty = consistency_penalty(log_q, self._log_q(noisy)).mean()
            out = out + self.consistency * penalty
        return out

    def loss(self, batch: Tensor | tuple | list) -> Tensor:
        """``-mean ELBO`` of a batch (the Trainer's interface); advances the temperature step.

        ``batch`` is ``x`` or a tuple whose first item is ``x`` (labels are ignored: use
        :class:`SemiSupervised` to train on labels).
        """
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        log_pk, log_q = self._parts(x)
        out = self._regularized(-elbo(log_pk, log_q, self.log_weights), x, log_q)
        self._advance()
        return out

    # ------------------------------------------------------------------ inference

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact mixture log-density ``logsumexp_k(log pi_k + log p_k(x))``: ``(batch,)``."""
        return mixture_log_prob(self.component_log_prob(x), self.log_weights)

    def responsibilities(self, x: Tensor) -> Tensor:
        """Exact posterior ``p(z = k | x)`` (Bayes' rule on the mixture): ``(batch, K)``."""
        return exact_posterior(self.component_log_prob(x), self.log_weights).exp()

    def predict(self, x: Tensor, by: str = "posterior") -> Tensor:
        """Cluster of each point: ``argmax_k q(z=k|x)`` (``by="posterior"``, the seed's
        assignment) or ``argmax_k p(z=k|x)`` (``by="exact"``): ``(batch,)`` int64."""
        if by == "posterior":
            self._check_x(x)
            return self.posterior_logits(x).argmax(dim=-1)  # argmax is unchanged by T
        if by == "exact":
            return (self.component_log_prob(x) + self.log_weights).argmax(dim=-1)
        raise ValueError(f"by: expected 'posterior' or 'exact', got {by!r}")

    def sample(self, n: int, temperature: float = 1.0) -> tuple[Tensor, Tensor]:
        """``n`` draws ``z ~ pi``, ``x ~ p_z``: ``(x (n, *shape), z (n,) int64)``.

        All components sample at once (``max_k n_k`` draws each, the extra ones dropped).
        """
        _count("n", n, 1)
        check_positive("temperature", temperature)
        z = torch.multinomial(self.log_weights.exp(), n, replacement=True)
        counts = torch.bincount(z, minlength=self.num_components)
        draws = self.components.sample_all(int(counts.max()), temperature)  # (K, m, *shape)
        x = torch.cat([draws[k, : int(c)] for k, c in enumerate(counts.tolist())])
        z = torch.repeat_interleave(torch.arange(self.num_components, device=x.device), counts)
        perm = torch.randperm(n, device=x.device)
        return x[perm], z[perm]

    def sample_component(self, k: int, n: int, temperature: float = 1.0) -> Tensor:
        """``n`` samples of component ``k``: ``(n, *shape)``."""
        _count("n", n, 1)
        check_positive("temperature", temperature)
        return self.components.sample(self._k(k), n, temperature)


class SemiSupervised(nn.Module):
    """Semi-supervised objective over a :class:`MixtureOfFlows` (seed 001 section 5.1.2).

    ``loss((x, y))``: rows with a label ``y in 0..K-1`` contribute :func:`supervised_loss`
    (the labeled component by maximum likelihood, the posterior by cross-entropy), rows with
    ``y = -1`` the negative ELBO; the batch loss is the mean over rows, the labeled rows weighed
    by ``labeled_weight``.  Pretraining on labels only is this objective on the labeled set;
    then training on :func:`semi_supervised_dataset` interleaves the two kinds of rows.  Both
    phases go through the one :class:`~flowscope.train.Trainer`.

    The temperature step of the mixture advances at each training-mode call, as in
    :meth:`MixtureOfFlows.loss`.
    """

    def __init__(self, mixture: MixtureOfFlows, labeled_weight: float = 1.0) -> None:
        super().__init__()
        if not isinstance(mixture, MixtureOfFlows):
            raise ValueError(f"mixture: expected a MixtureOfFlows, got {type(mixture).__name__}")
        check_positive("labeled_weight", labeled_weight)
        self.mixture = mixture
        self.labeled_weight = float(labeled_weight)

    def losses(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-row loss ``(batch,)``, the labeled mask ``(batch,)`` and ``log q`` ``(batch, K)``."""
        m = self.mixture
        check_labels("labels", y, m.num_components, allow_unlabeled=True)
        if y.shape != (x.shape[0],):
            raise ValueError(f"labels: expected shape ({x.shape[0]},), got {tuple(y.shape)}")
        log_pk, log_q = m._parts(x)
        log_pi = m.log_weights
        labeled = y >= 0
        sup = supervised_loss(log_pk, log_q, log_pi, y.clamp_min(0))
        unsup = -elbo(log_pk, log_q, log_pi)
        return torch.where(labeled, self.labeled_weight * sup, unsup), labeled, log_q

    def loss(self, batch: tuple | list) -> Tensor:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError(
                "batch: expected (x, labels) with labels -1 for unlabeled rows, got "
                f"{type(batch).__name__}"
            )
        x = batch[0]
        rows, _, log_q = self.losses(x, batch[1])
        out = self.mixture._regularized(rows, x, log_q)
        self.mixture._advance()
        return out
