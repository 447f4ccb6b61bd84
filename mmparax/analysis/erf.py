"""Effective receptive field (Luo et al., NeurIPS 2016).

How much each input pixel moves the centre of a feature map: for an image
x and features F = f(x) of shape [C, h, w],

.. math::

    E(x) = \\sum_{c'} \\left| \\frac{\\partial \\sum_c
    \\mathrm{ReLU}(F_{c, h/2, w/2})}{\\partial x_{c'}} \\right|,

an [H, W] map, averaged over images. The ReLU (as in the RepLKNet ERF
code) matters after a LayerNorm with equal channel weights, such as a
backbone's freshly initialised output norm: the plain channel sum of its
output is the sum of its biases whatever the input, with zero gradient.

For display the mean map is compressed as ``log10(1 + E) / max`` (the
convention of the RepLKNet ERF figures) or, scale-free, as a log map over
a few decades below its maximum (:func:`normalise`).
:func:`high_contribution_ratio` measures how far the contribution spreads:
the area of the smallest square around the centre holding a given share
of the total.
"""
from typing import Callable, Dict, Iterable, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

THRESHOLDS = (0.2, 0.3, 0.5, 0.99)


def input_gradient_map(forward: Callable[[torch.Tensor], torch.Tensor],
                       x: torch.Tensor, relu: bool = True) -> torch.Tensor:
    """E(x) of one input.

    Args:
        forward (callable): ``[1, 3, H, W] -> [1, C, h, w]`` features.
        x (Tensor): [1, 3, H, W] input.
        relu (bool): Sum the ReLU of the centre features (else the
            features themselves). Default: True.

    Returns:
        Tensor: [H, W] absolute input gradient of the summed centre
        features, summed over input channels.
    """
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f'expected one input [1, C, H, W], got '
                         f'{tuple(x.shape)}')
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        feats = forward(x)
        if feats.dim() != 4:
            raise ValueError(
                'the effective receptive field needs a feature map [B, C, '
                f'h, w]; the chosen output has shape {tuple(feats.shape)}')
        h, w = feats.shape[-2:]
        centre = feats[0, :, h // 2, w // 2]
        centre = (centre.relu() if relu else centre).sum()
        grad, = torch.autograd.grad(centre, x)
    return grad[0].abs().sum(0)


def mean_erf(forward: Callable[[torch.Tensor], torch.Tensor],
             inputs: Iterable[torch.Tensor],
             relu: bool = True) -> np.ndarray:
    """Mean of :func:`input_gradient_map` over ``inputs``; [H, W] float64.
    """
    total, n = None, 0
    for x in inputs:
        m = input_gradient_map(forward, x, relu).double().cpu()
        if total is not None and m.shape != total.shape:
            raise ValueError(f'inputs of different sizes: {tuple(m.shape)} '
                             f'vs {tuple(total.shape)}')
        total = m if total is None else total + m
        n += 1
    if n == 0:
        raise ValueError('no inputs')
    return (total / n).numpy()


def backbone_output(backbone: nn.Module,
                    index: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x -> backbone(x)[index]``, the feature map of one output."""

    def forward(x):
        outs = backbone(x)
        outs = [outs] if isinstance(outs, torch.Tensor) else list(outs)
        if not -len(outs) <= index < len(outs):
            raise ValueError(
                f'output {index} does not exist: {type(backbone).__name__} '
                f'returns {len(outs)} feature maps (0..{len(outs) - 1}; '
                'its out_indices)')
        return outs[index]

    return forward


def normalise(erf: np.ndarray, decades: Optional[float] = None
              ) -> np.ndarray:
    """The display map, in [0, 1].

    Args:
        erf (ndarray): [H, W] non-negative mean map.
        decades (float, optional): None: ``log10(1 + erf) / max`` (the
            RepLKNet convention; nearly linear when the gradients are much
            smaller than 1). Otherwise a scale-free log map showing
            ``decades`` orders of magnitude below the maximum:
            ``clip(log10(erf / max), -decades, 0) / decades + 1``.
    """
    erf = np.asarray(erf, dtype=np.float64)
    if decades is None:
        shown = np.log10(1 + erf)
        top = shown.max()
        return shown / top if top > 0 else shown
    if not decades > 0:
        raise ValueError(f'decades must be positive, got {decades}')
    top = erf.max()
    if top <= 0:
        return np.zeros_like(erf)
    with np.errstate(divide='ignore'):
        logs = np.log10(erf / top)
    return np.clip(logs, -decades, 0) / decades + 1


def high_contribution_ratio(
        erf: np.ndarray,
        thresholds: Sequence[float] = THRESHOLDS) -> Dict[str, Dict]:
    """Area of the smallest centred square holding a share of the total.

    Args:
        erf (ndarray): [H, W] non-negative contributions.
        thresholds (Sequence[float]): Shares t in (0, 1].

    Returns:
        dict: ``{str(t): {'side': s, 'area_ratio': s_h * s_w / (H * W)}}``
        where the square of half-width r around (H // 2, W // 2), clipped to
        the image (sides s_h, s_w; ``side`` is 2r + 1), is the smallest
        holding at least t of the total.
    """
    erf = np.asarray(erf, dtype=np.float64)
    H, W = erf.shape
    total = erf.sum()
    if total <= 0:
        raise ValueError(
            'the effective receptive field is zero everywhere: the centre '
            'features do not depend on the input (e.g. all ReLU-inactive)')
    ch, cw = H // 2, W // 2
    # integral image: the sum of any rectangle in O(1)
    cum = np.zeros((H + 1, W + 1))
    cum[1:, 1:] = erf.cumsum(0).cumsum(1)
    shares, sizes = [], []
    for r in range(max(H, W)):
        t, b = max(ch - r, 0), min(ch + r + 1, H)
        le, ri = max(cw - r, 0), min(cw + r + 1, W)
        s = cum[b, ri] - cum[t, ri] - cum[b, le] + cum[t, le]
        shares.append(s / total)
        sizes.append((2 * r + 1, (b - t) * (ri - le)))
        if b - t == H and ri - le == W:
            break
    out = {}
    for t in thresholds:
        if not 0 < t <= 1:
            raise ValueError(f'thresholds are shares in (0, 1], got {t}')
        i = next(i for i, s in enumerate(shares) if s >= t - 1e-12)
        side, area = sizes[i]
        out[str(t)] = dict(side=side, area_ratio=area / (H * W))
    return out
