"""The benchmark architectures, built the same way in flowscope and in each installed peer.

Every builder returns a :class:`Built`: the module (for parameter counting and the optimizer)
and three closures with one convention for all libraries, whatever each library calls them:

* ``log_prob(x) -> (batch,)`` -- data to latent, the density direction;
* ``sample(n) -> (n, *shape)`` -- latent to data.

Library conventions differ (nflows and zuko: ``forward`` is data -> latent; normflows:
``forward`` is latent -> data and ``log_prob`` runs every layer's ``inverse``), so each builder
wires the direction that makes the layer the named model (e.g. a MAF's density pass is ONE
network pass in every library; see the notes per builder).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

PEERS = ("nflows", "normflows", "zuko")
LIBRARIES = ("flowscope",) + PEERS


@dataclass
class Built:
    """One model under test."""

    module: nn.Module
    log_prob: Callable[[Tensor], Tensor]
    sample: Callable[[int], Tensor] | None
    note: str = ""


def available(lib: str) -> bool:
    """Whether ``lib`` imports (the peers are the optional ``bench`` extra)."""
    try:
        importlib.import_module(lib)
    except Exception:  # noqa: BLE001 - any import failure means "not installed"
        return False
    return True


def stored_parameter_count(module: nn.Module) -> int:
    """The numbers the optimizer updates."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _masked_layers(module: nn.Module):  # noqa: ANN202 - (mask, stored weight) pairs
    # A MADE's masked linear layer, in all four libraries: a module with a 2-D ``mask`` buffer
    # the shape of its weight; flowscope's large ones store the weight packed (``weight_blocks``).
    for m in module.modules():
        mask = m._buffers.get("mask")
        if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
            continue
        stored = m._parameters.get("weight_blocks")
        if stored is None:
            stored = getattr(m, "weight", None)
            if not isinstance(stored, torch.Tensor) or stored.shape != mask.shape:
                continue
        if stored.requires_grad:
            yield mask, stored


def parameter_count(module: nn.Module) -> int:
    """The architecture's size, what the same-architecture check compares: every layer's
    full weight matrix, whether a library stores all of it (the peers' masked layers) or only
    the blocks its products read (flowscope's large MADE layers: ``weight_blocks``)."""
    total = stored_parameter_count(module)
    for mask, stored in _masked_layers(module):
        total += mask.numel() - stored.numel()
    return total


def free_parameter_count(module: nn.Module) -> int:
    """Trainable numbers that can reach the output: a masked layer counts its mask's ones."""
    total = stored_parameter_count(module)
    for mask, stored in _masked_layers(module):
        total += int(mask.count_nonzero()) - stored.numel()
    return total


def version(lib: str) -> str:
    if lib == "torch":
        return torch.__version__
    try:
        from importlib.metadata import version as v

        return v(lib)
    except Exception:  # noqa: BLE001
        return "unknown"


# ------------------------------------------------------------------------------ flowscope


def _flowscope(flow) -> Built:
    return Built(flow, flow.log_prob, flow.sample)


def flowscope_realnvp(features: int = 2) -> Built:
    from flowscope import models

    return _flowscope(models.realnvp(features, layers=8, hidden=64, net_layers=2))


def flowscope_maf(features: int, hidden: int, net_layers: int) -> Built:
    from flowscope import models

    return _flowscope(models.maf(features, layers=5, hidden=hidden, net_layers=net_layers))


def flowscope_glow(shape: tuple[int, int, int]) -> Built:
    from flowscope import Flow, models

    full = models.glow(shape, levels=3, steps=8, hidden=128)
    # The body only (MultiScale): the peers get continuous inputs, so flowscope's dequantization
    # and logit preprocessing (a few elementwise ops) are left out to time the same thing.
    body = full.transform.transforms[-1]
    flow = Flow(body, full.base, shape=shape)
    return Built(flow, flow.log_prob, flow.sample, "MultiScale body, no dequantization/logit")


# ---------------------------------------------------------------------------------- nflows


def nflows_realnvp(features: int = 2) -> Built:
    from nflows.distributions import StandardNormal
    from nflows.flows import Flow
    from nflows.nn.nets import MLP
    from nflows.transforms import AffineCouplingTransform, CompositeTransform

    layers = []
    for i in range(8):
        mask = torch.ones(features)
        # nflows: mask > 0 is transformed; alternate halves as flowscope's half_mask does.
        half = features // 2
        mask[half:] = -1 if i % 2 == 0 else 1
        mask[:half] = 1 if i % 2 == 0 else -1
        layers.append(
            AffineCouplingTransform(mask, lambda i_, o_: _NoContext(MLP((i_,), (o_,), [64, 64])))
        )
    flow = Flow(CompositeTransform(layers), StandardNormal([features]))
    return Built(flow, flow.log_prob, flow.sample, "scale = sigmoid(h + 2) + 1e-3 (its default)")


def nflows_maf(features: int, hidden: int, net_layers: int) -> Built:
    from nflows.distributions import StandardNormal
    from nflows.flows import Flow
    from nflows.transforms import (
        CompositeTransform,
        MaskedAffineAutoregressiveTransform,
        ReversePermutation,
    )

    layers = []
    for i in range(5):
        if i > 0:
            layers.append(ReversePermutation(features))
        # nflows' MADE: an input layer to `hidden`, then `num_blocks` hidden->hidden blocks.
        layers.append(
            MaskedAffineAutoregressiveTransform(
                features, hidden, num_blocks=net_layers - 1, use_residual_blocks=False
            )
        )
    flow = Flow(CompositeTransform(layers), StandardNormal([features]))
    return Built(flow, flow.log_prob, flow.sample)


def nflows_glow(shape: tuple[int, int, int]) -> Built:
    from nflows.distributions import StandardNormal
    from nflows.flows import Flow
    from nflows.transforms import (
        ActNorm,
        AffineCouplingTransform,
        CompositeTransform,
        MultiscaleCompositeTransform,
        OneByOneConvolution,
        SqueezeTransform,
    )

    def net(i: int, o: int) -> nn.Module:
        return _NoContext(_conv_net(i, o, 128))

    c, h, w = shape
    multi = MultiscaleCompositeTransform(num_transforms=3, split_dim=1)
    for _level in range(3):
        squeeze = SqueezeTransform()
        c, h, w = squeeze.get_output_shape(c, h, w)
        steps: list[nn.Module] = [squeeze]
        for k in range(8):
            mask = torch.ones(c)
            mask[::2] = -1 if k % 2 == 0 else 1
            mask[1::2] = 1 if k % 2 == 0 else -1
            steps += [ActNorm(c), OneByOneConvolution(c), AffineCouplingTransform(mask, net)]
        new_shape = multi.add_transform(CompositeTransform(steps), (c, h, w))
        if new_shape is not None:
            c, h, w = new_shape
    flow = Flow(multi, StandardNormal([shape[0] * shape[1] * shape[2]]))
    return Built(flow, flow.log_prob, flow.sample, "1x1 conv has a bias (+C per step)")


class _NoContext(nn.Module):
    """nflows calls its coupling nets as ``net(x, context)``; plain nets take ``x`` only."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.net(x)


def _conv_net(i: int, o: int, hidden: int) -> nn.Module:
    """Seed 000's conditioner, conv3x3-ReLU-conv1x1-ReLU-conv3x3, last layer zero."""
    last = nn.Conv2d(hidden, o, 3, padding=1)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(
        nn.Conv2d(i, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, hidden, 1), nn.ReLU(), last
    )


# ------------------------------------------------------------------------------- normflows


def _normflows_flow(flows: list, features: int) -> Built:
    import normflows as nf

    model = nf.NormalizingFlow(nf.distributions.DiagGaussian(features, trainable=False), flows)
    return Built(model, model.log_prob, lambda n: model.sample(n)[0])


def normflows_realnvp(features: int = 2) -> Built:
    import normflows as nf

    flows = []
    for i in range(8):
        # One MLP for shift and scale (AffineCouplingBlock), halves alternating through the
        # split mode rather than an extra Permute layer: normflows' cheapest equivalent.
        net = nf.nets.MLP([features // 2, 64, 64, 2 * (features - features // 2)], init_zeros=True)
        mode = "channel" if i % 2 == 0 else "channel_inv"
        flows.append(
            nf.flows.AffineCouplingBlock(net, scale=True, scale_map="exp", split_mode=mode)
        )
    built = _normflows_flow(flows, features)
    built.note = "scale = exp(h) (its default), halves alternate by split_mode"
    return built


def normflows_maf(features: int, hidden: int, net_layers: int) -> Built:
    import normflows as nf

    flows = []
    for i in range(5):
        if i > 0:
            perm = nf.flows.Permute(features, mode="shuffle")
            perm.perm.copy_(torch.arange(features - 1, -1, -1))
            perm.inv_perm.copy_(torch.arange(features - 1, -1, -1))
            flows.append(perm)
        # normflows' log_prob runs each layer's `inverse`, which for its MaskedAffineAutoregressive
        # is the D-pass loop (an IAF in cost). Reverse makes the density pass ONE MADE pass: a MAF.
        layer = nf.flows.MaskedAffineAutoregressive(
            features, hidden, num_blocks=net_layers - 1, use_residual_blocks=False
        )
        flows.append(nf.flows.Reverse(layer))
    built = _normflows_flow(flows, features)
    built.note = "layers wrapped in nf.flows.Reverse so that log_prob is one MADE pass"
    return built


def normflows_glow(shape: tuple[int, int, int]) -> Built:
    import normflows as nf

    c, h, w = shape
    levels, steps = 3, 8
    q0, flows, merges = [], [], []
    # normflows lists levels deepest first (its sampling order), as in its Glow example.
    for i in range(levels):
        ch = c * 2 ** (levels + 1 - i)
        level = [
            nf.flows.GlowBlock(ch, 128, split_mode="channel", scale=True) for _ in range(steps)
        ]
        level.append(nf.flows.Squeeze())
        flows.append(level)
        if i > 0:
            merges.append(nf.flows.Merge())
            latent = (c * 2 ** (levels - i), h // 2 ** (levels - i), w // 2 ** (levels - i))
        else:
            latent = (c * 2 ** (levels + 1), h // 2**levels, w // 2**levels)
        q0.append(nf.distributions.DiagGaussian(latent, trainable=False))
    model = nf.MultiscaleFlow(q0, flows, merges, class_cond=False)
    return Built(
        model,
        lambda x: model.log_prob(x, None),
        lambda n: model.sample(n)[0],
        "1x1 conv stores full L and U matrices (2 C^2 + C)",
    )


# ------------------------------------------------------------------------------------ zuko


def _zuko(flow) -> Built:
    return Built(flow, lambda x: flow().log_prob(x), lambda n: flow().sample((n,)))


def zuko_realnvp(features: int = 2) -> Built:
    import zuko

    built = _zuko(zuko.flows.RealNVP(features, transforms=8, hidden_features=(64, 64)))
    built.note = "MonotonicAffineTransform (soft-clipped log-scale)"
    return built


def zuko_maf(features: int, hidden: int, net_layers: int) -> Built:
    import zuko

    return _zuko(zuko.flows.MAF(features, transforms=5, hidden_features=(hidden,) * net_layers))


# ------------------------------------------------------------------------------- registry


def builder(workload: str, lib: str) -> Callable[[], Built] | None:
    """The builder of ``workload`` for ``lib``, or None when the library has no such model."""
    table: dict[str, dict[str, Callable[[], Built]]] = {
        "W1": {
            "flowscope": flowscope_realnvp,
            "nflows": nflows_realnvp,
            "normflows": normflows_realnvp,
            "zuko": zuko_realnvp,
        },
        "W1b": {
            "flowscope": lambda: flowscope_maf(2, 64, 2),
            "nflows": lambda: nflows_maf(2, 64, 2),
            "normflows": lambda: normflows_maf(2, 64, 2),
            "zuko": lambda: zuko_maf(2, 64, 2),
        },
        "W2": {
            "flowscope": lambda: flowscope_maf(784, 512, 1),
            "nflows": lambda: nflows_maf(784, 512, 1),
            "normflows": lambda: normflows_maf(784, 512, 1),
            "zuko": lambda: zuko_maf(784, 512, 1),
        },
        "W3": {
            "flowscope": lambda: flowscope_glow((3, 32, 32)),
            "nflows": lambda: nflows_glow((3, 32, 32)),
            "normflows": lambda: normflows_glow((3, 32, 32)),
        },
    }
    table["W4"] = table["W1"]
    return table.get(workload, {}).get(lib)
