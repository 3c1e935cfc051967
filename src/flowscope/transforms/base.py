"""The transform interface, composition and inversion.

Direction convention (DESIGN.md): ``forward`` maps data ``x`` to latent ``u`` (the normalizing
direction, T^-1 in seed 000's notation) and ``inverse`` maps ``u`` back to ``x`` (generation).
Both return ``(output, logabsdet)`` where ``logabsdet`` has shape ``(batch,)`` and is the log
absolute determinant of the Jacobian of the map that was applied.  By the change of variables
(seed 000 eq. 2.2; seed 001 eq. 3.9):  ``log p(x) = log p_u(forward(x)) + logabsdet``.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor, nn

from .._checks import _tracing, check_finite

__all__ = ["Transform", "Compose", "Inverse", "sum_except_batch"]


class Transform(nn.Module):
    """Base class of all bijections.

    Subclasses implement ``forward(x, context=None)`` and ``inverse(u, context=None)``, each
    returning ``(output, logabsdet)`` with ``logabsdet`` of shape ``(batch,)``.  A transform whose
    inverse has no closed form raises ``NotImplementedError`` from ``inverse`` with a sentence
    saying why.

    Attributes:
        context_features: size of the context vector this transform conditions on (None when
            unconditional).
    """

    context_features: int | None = None

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def inverse(self, u: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError(f"{type(self).__name__} has no inverse")

    # Inner paths.  DESIGN.md: "check at public entry points; inner code trusts its inputs".  A
    # composite (``Compose``, ``Flow``, ``MultiScale``) validates its input ONCE -- shape,
    # context and the NaN/inf scan, the check that costs a pass over the data and a device sync
    # -- and then calls ``_forward``/``_inverse`` on its members.  The default is the public
    # method itself (called directly, without the ``nn.Module.__call__`` machinery), so a member
    # keeps every check it has; layers whose only value check is the NaN/inf scan the door has
    # already done (e.g. MAF) override these to skip it.  Domain checks (``Logit``'s (0, 1),
    # dequantization's pixel range) are never skipped: the door cannot know them.

    def _forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``forward`` for a caller that has validated ``x`` (finite values) and ``context``."""
        return self.forward(x, context)

    def _inverse(self, u: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``inverse`` for a caller that has validated ``u`` (finite values) and ``context``."""
        return self.inverse(u, context)


class Compose(Transform):
    """Composition ``T_n o ... o T_1`` (forward applies ``transforms[0]`` first).

    This is the ONE place where log-determinants of a chain are accumulated (chain rule, seed 000
    eq. 2.5); flows, mixtures and multi-scale models all go through it.

    Runs of members that ``transforms/fused.py`` evaluates as one (RealNVP couplings, small MAF
    layers) have their conditioners' weights packed into one flat tensor each (``pack=True``,
    ``transforms/packing.py``): ``parameters()`` yields ``packed.0``, ``packed.1``, ... for
    them, the layers read views of it, and the state dict keeps the per-layer keys.
    """

    def __init__(self, *transforms: Transform, pack: bool = True) -> None:
        super().__init__()
        if (
            len(transforms) == 1
            and isinstance(transforms[0], Iterable)
            and not isinstance(transforms[0], nn.Module)
        ):
            transforms = tuple(transforms[0])
        for i, t in enumerate(transforms):
            if not isinstance(t, Transform):
                raise ValueError(
                    f"transforms[{i}]: expected a flowscope Transform, got {type(t).__name__}"
                )
        from .fused import pack_runs  # fused.py imports the layer modules
        from .packing import Packs

        # Registered first: the flat tensors are named ``packed.0``, ... (not through a layer).
        self.packed = Packs()
        self.transforms = nn.ModuleList(transforms)
        if pack:
            pack_runs(self.packed, list(self.transforms))
        sizes = {t.context_features for t in transforms if t.context_features is not None}
        if len(sizes) > 1:
            raise ValueError(
                f"transforms: context_features disagree between layers: {sorted(sizes)}"
            )
        self.context_features = sizes.pop() if sizes else None
        self._fused_key: tuple | None = None
        self._fused: list = []

    def _apply(self, fn, recurse=True):  # noqa: ANN001, ANN201 - nn.Module's signature
        # A conversion that makes new Parameter objects (``.to("meta")``, another device type)
        # makes one per module holding a tensor: the packed layers' handles would each get
        # their own copy of the flat tensor.  Tie them to the Packs entry again.
        out = super()._apply(fn, recurse)
        from .packing import retie

        retie(self.packed, self)
        return out

    def _members(self, x: Tensor, context: Tensor | None) -> Iterable:
        """The members, each maximal run of fusable couplings as one (``transforms/fused.py``).

        Only where the generic path gives nothing more: no context, and not under
        ``torch.compile`` or ``vmap`` (``_tracing``), whose compiler fuses the generic graph.
        The grouping is rebuilt whenever the member list changes or a submodule is assigned
        anywhere (``fused.structure_version``).
        """
        if context is not None or _tracing(x):
            return self.transforms
        from .fused import fuse, structure_version  # fused.py imports the layer modules

        key = (structure_version(), *map(id, self.transforms))
        if key != self._fused_key:
            self._fused, self._fused_key = fuse(list(self.transforms)), key
        return self._fused

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        # The door of the chain: one NaN/inf scan here instead of one per member.
        check_finite("x", x)
        return self._forward(x, context)

    def inverse(self, u: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_finite("u", u)
        return self._inverse(u, context)

    def _forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        total: Tensor | None = None
        for t in self._members(x, context):
            x, ladj = t._forward(x, context)
            # Starting from the first log-det (not from zeros) saves one op per call.
            total = ladj if total is None else total + ladj
        return x, (x.new_zeros(x.shape[0]) if total is None else total)

    def _inverse(self, u: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        total: Tensor | None = None
        for t in reversed(self._members(u, context)):
            u, ladj = t._inverse(u, context)
            total = ladj if total is None else total + ladj
        return u, (u.new_zeros(u.shape[0]) if total is None else total)

    def forward_steps(
        self, x: Tensor, context: Tensor | None = None
    ) -> list[tuple[Tensor, Tensor]]:
        """Every intermediate output and the log-det accumulated so far.

        Returns ``[(x, 0), (T_1(x), ladj_1), (T_2(T_1(x)), ladj_1 + ladj_2), ...]``.

        Used to draw seed 000 Figure 1.1 (data pushed through each transform in turn).
        """
        total = x.new_zeros(x.shape[0])
        steps = [(x, total)]
        for t in self.transforms:
            x, ladj = t(x, context)
            total = total + ladj
            steps.append((x, total))
        return steps

    def __len__(self) -> int:
        return len(self.transforms)

    def __getitem__(self, i: int) -> Transform:
        return self.transforms[i]


class Inverse(Transform):
    """The inverse of a transform: ``forward`` and ``inverse`` swap roles.

    Used e.g. for IAF (an autoregressive transform whose fast direction is generation) and for
    flows whose closed form exists only in the generative direction (planar).
    """

    def __init__(self, transform: Transform) -> None:
        super().__init__()
        if not isinstance(transform, Transform):
            raise ValueError(
                f"transform: expected a flowscope Transform, got {type(transform).__name__}"
            )
        self.transform = transform
        self.context_features = transform.context_features

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.transform.inverse(x, context)

    def inverse(self, u: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.transform.forward(u, context)

    def _forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.transform._inverse(x, context)

    def _inverse(self, u: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.transform._forward(u, context)


def sum_except_batch(x: Tensor) -> Tensor:
    """Sum all dimensions but the first: ``(batch, ...) -> (batch,)``."""
    return x.reshape(x.shape[0], -1).sum(dim=1)
