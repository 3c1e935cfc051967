"""Reverse-KL (variational) fitting of a flow to an unnormalized density, through the one trainer.

Rezende & Mohamed 2015 (arXiv:1505.05770), section 6.1: minimize
``E_q[log q(x) - log p~(x)]`` with samples ``x ~ q`` drawn by the flow (reparameterized), e.g.
for the energies U1-U4 of :mod:`flowscope.data.toy2d`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .train import Trainer

__all__ = ["ReverseKL", "fit_reverse_kl"]


class ReverseKL(nn.Module):
    """Reverse-KL objective for fitting a flow to an UNNORMALIZED density ``p~(x) = Z p(x)``.

    ``loss(n) = mean_i [ln q(x_i) - beta_t ln p~(x_i)]`` with ``x_i ~ q`` reparameterized
    (``flow.sample_and_log_prob``): at ``beta = 1`` it is ``KL(q || p) - ln Z`` ("Variational
    Inference with Normalizing Flows", Rezende & Mohamed 2015, arXiv:1505.05770, section 6.1:
    the variational free energy on the energies U1-U4).  Optional annealing as in that section:
    ``beta_t = min(1, beta_start + t / anneal_steps)`` (the paper: 0.01 and 10,000).

    Args:
        flow: any module with ``sample_and_log_prob(n) -> (x (n, ...), log_q (n,))``.
        log_density: ``x (n, ...) -> ln p~(x) (n,)``; not trained (kept out of the parameters).
        anneal_steps: 0 disables annealing (beta = 1).
        beta_start: beta at step 0 when annealing.

    ``loss(batch)`` takes the number of samples (the Trainer passes ``batch_size`` when it has
    no training data).  The step counter ``t`` is a buffer, so it is checkpointed.
    """

    def __init__(
        self,
        flow: nn.Module,
        log_density: Callable[[Tensor], Tensor],
        anneal_steps: int = 0,
        beta_start: float = 0.01,
    ) -> None:
        super().__init__()
        if not callable(getattr(flow, "sample_and_log_prob", None)):
            raise ValueError(
                f"flow: expected a module with sample_and_log_prob, got {type(flow).__name__}"
            )
        if not callable(log_density):
            raise ValueError(f"log_density: expected a callable, got {type(log_density).__name__}")
        if not (isinstance(anneal_steps, int) and anneal_steps >= 0):
            raise ValueError(f"anneal_steps: expected an int >= 0, got {anneal_steps!r}")
        if not 0 < beta_start <= 1:
            raise ValueError(f"beta_start: expected a number in (0, 1], got {beta_start!r}")
        self.flow = flow
        self.__dict__["log_density"] = log_density  # bypass Module registration: never trained
        self.anneal_steps, self.beta_start = anneal_steps, beta_start
        self.register_buffer("t", torch.zeros((), dtype=torch.long))

    @property
    def beta(self) -> float:
        if not self.anneal_steps:
            return 1.0
        return min(1.0, self.beta_start + int(self.t) / self.anneal_steps)

    def loss(self, batch: int) -> Tensor:
        if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
            raise ValueError(
                f"batch: expected the number of samples (a positive int), got {batch!r:.60}"
            )
        x, log_q = self.flow.sample_and_log_prob(batch)
        log_p = self.log_density(x)
        if not isinstance(log_p, Tensor) or log_p.shape != log_q.shape:
            raise ValueError(
                f"log_density: expected a tensor of shape {tuple(log_q.shape)} (one value per "
                f"sample), got {getattr(log_p, 'shape', type(log_p).__name__)}"
            )
        loss = (log_q - self.beta * log_p).mean()
        if self.training:
            self.t += 1
        return loss


def fit_reverse_kl(
    flow: nn.Module,
    log_density: Callable[[Tensor], Tensor],
    steps: int = 5000,
    batch_size: int = 256,
    lr: float = 1e-3,
    *,
    anneal_steps: int = 0,
    beta_start: float = 0.01,
    **trainer_options: Any,
) -> dict[str, Any]:
    """Fit ``flow`` (in place) to the unnormalized ``log_density`` by reverse KL.

    A thin wrapper: :class:`ReverseKL` through the one :class:`Trainer` (constant rate and no
    weight decay unless ``trainer_options`` say otherwise; any other Trainer/TrainConfig option
    passes through, e.g. ``out_dir``, ``grad_clip``, ``progress``).

    Returns:
        The trainer's final metrics; ``train_loss`` estimates ``KL(q || p) - ln Z``.
    """
    objective = ReverseKL(flow, log_density, anneal_steps=anneal_steps, beta_start=beta_start)
    options = {"schedule": "constant", "weight_decay": 0.0, **trainer_options}
    return Trainer(objective, None, steps=steps, batch_size=batch_size, lr=lr, **options).fit()
