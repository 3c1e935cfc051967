"""Cases for the vector constructors of flowscope.models: their whole transform, small sizes.

``planar`` and ``radial`` build ``Flow(Inverse(Compose(...)))`` so that sampling uses the closed
form; the case checks the inner stack (closed form in ``forward``), and for planar that its
``inverse`` raises.
"""

from flowscope import models
from flowscope.transforms import Compose

from . import Case
from .image import integers, seeded


def _transform(build, **kw):
    return lambda: build(**kw).transform


CASES: list[Case] = [
    Case(
        "model-nice-4",
        _transform(models.nice, features=4, layers=3, hidden=8),
        (4,),
        (models.nice,),
    ),
    Case(
        "model-realnvp-3",
        _transform(models.realnvp, features=3, layers=3, hidden=8),
        (3,),
        (models.realnvp,),
    ),
    Case(  # the fused run on its layers' own tensors (transforms/packing.py, pack=False)
        "model-realnvp-3-unpacked",
        lambda: Compose(list(models.realnvp(3, layers=3, hidden=8).transform), pack=False),
        (3,),
        (models.realnvp,),
    ),
    Case(
        "model-realnvp-bn-ctx",
        _transform(
            models.realnvp, features=3, layers=2, hidden=8, batch_norm=True, context_features=2
        ),
        (3,),
        (models.realnvp,),
        context=2,
    ),
    Case(
        "model-realnvp-actnorm-lu-bn-ctx",
        _transform(
            models.realnvp,
            features=3,
            layers=2,
            hidden=8,
            actnorm=True,
            mixing="lu",
            batch_norm=True,
            context_features=2,
        ),
        (3,),
        (models.realnvp,),
        context=2,
    ),
    Case(
        "model-maf-3", _transform(models.maf, features=3, layers=2, hidden=8), (3,), (models.maf,)
    ),
    Case(
        "model-maf-ctx",
        _transform(models.maf, features=3, layers=2, hidden=8, context_features=2),
        (3,),
        (models.maf,),
        context=2,
    ),
    Case(
        "model-iaf-3", _transform(models.iaf, features=3, layers=2, hidden=8), (3,), (models.iaf,)
    ),
    Case(
        "model-nsf-coupling-ctx",
        _transform(
            models.nsf, features=3, layers=2, hidden=8, bins=4, bound=2.0, context_features=2
        ),
        (3,),
        (models.nsf,),
        context=2,
    ),
    Case(
        "model-nsf-autoregressive",
        _transform(
            models.nsf, features=3, layers=2, hidden=8, bins=4, bound=2.0, autoregressive=True
        ),
        (3,),
        (models.nsf,),
    ),
    Case(
        "model-nice-ctx",
        _transform(models.nice, features=4, layers=2, hidden=8, context_features=2),
        (4,),
        (models.nice,),
        context=2,
    ),
    Case(
        "model-iaf-ctx",
        _transform(models.iaf, features=3, layers=2, hidden=8, context_features=2),
        (3,),
        (models.iaf,),
        context=2,
    ),
    Case(
        "model-planar-3",
        lambda: models.planar(3, layers=3).transform.transform,
        (3,),
        (models.planar,),
        inverse=False,
    ),
    Case(
        "model-radial-3",
        lambda: models.radial(3, layers=3).transform.transform,
        (3,),
        (models.radial,),
    ),
    Case(
        "model-glow-tanh-scale-1x4x4",
        lambda: (
            models.glow(
                (1, 4, 4),
                levels=2,
                steps=2,
                hidden=4,
                quanta=17,
                dequantization=seeded(17),
                scale="tanh",
                clamp=1.0,
            ).transform
        ),
        (1, 4, 4),
        (models.glow,),
        sample=integers(17),
    ),
]
