"""The toy-gap experiment's model rows: within the target's limits, and still the named family.

Training is not run here (minutes of CPU); docs/training.md gives the measured table and its
command.  The transform-level properties of every ``realnvp`` option are checked by the ONE
property test through ``tests/cases/models.py``.
"""

import pytest
import torch

from flowscope import models
from flowscope.experiments import toy_gap
from flowscope.runs import TOY_MODELS
from flowscope.transforms import (
    ActNorm,
    AffineTransformer,
    Coupling,
    LULinear,
    RationalQuadraticSpline,
)


def _build(model: str) -> torch.nn.Module:
    return TOY_MODELS[model](2, **toy_gap.MODELS[model])


@pytest.mark.parametrize("model", sorted(toy_gap.MODELS))
def test_rows_respect_the_parameter_budget(model):
    params = sum(p.numel() for p in _build(model).parameters())
    assert 0 < params <= 100_000
    assert set(toy_gap.TRAINING[model]) == {"steps", "lr", "grad_clip"}


def test_realnvp_row_is_affine_couplings_on_alternating_halves():
    flow = _build("realnvp")
    couplings = [m for m in flow.modules() if isinstance(m, Coupling)]
    assert len(couplings) == toy_gap.MODELS["realnvp"]["layers"]
    assert all(isinstance(c.transformer, AffineTransformer) for c in couplings)
    # No learned mixing and no splines: the row is a RealNVP (plus Glow's ActNorm, documented).
    assert not any(isinstance(m, (LULinear, RationalQuadraticSpline)) for m in flow.modules())
    # Alternating halves: consecutive couplings transform different coordinates.
    masks = [tuple(c.transform_index.tolist()) for c in couplings]
    assert all(a != b for a, b in zip(masks, masks[1:]))


def test_realnvp_default_is_the_paper_recipe_and_options_add_layers():
    plain = models.realnvp(2, layers=4, hidden=8)
    kinds = [type(t) for t in plain.transform.transforms]
    assert kinds == [Coupling] * 4
    both = models.realnvp(2, layers=4, hidden=8, actnorm=True, mixing="lu")
    kinds = [type(t) for t in both.transform.transforms]
    assert kinds == [ActNorm, LULinear, Coupling] * 4
    # LU and couplings start at the identity, so the first training-mode call returns the
    # batch standardized by the first ActNorm's data-dependent initialization.
    x = torch.randn(256, 2) * 3 + 1
    u, _ = both.transform(x)
    assert torch.allclose(u.mean(0), torch.zeros(2), atol=1e-4)
    assert torch.allclose(u.std(0, unbiased=False), torch.ones(2), atol=1e-3)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"mixing": "rotate"}, "mixing"), ({"actnorm": 1}, "actnorm")],
)
def test_realnvp_rejects_bad_options(kwargs, name):
    with pytest.raises(ValueError, match=rf"^{name}: expected .* got"):
        models.realnvp(2, **kwargs)
