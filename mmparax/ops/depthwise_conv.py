"""Depthwise convolution with a different kernel for every sample."""
from typing import Optional

import torch
import torch.nn.functional as F


def depthwise_conv_backward(grad_out, x, weight, needs=(True, True)):
    """Gradients of a "same" depthwise conv ``conv2d(x, weight, groups=G)``.

    On the CPU the native depthwise weight gradient of kernels larger than
    3x3 dominates the cost; for a single sample ([1, G, H, W], the layout of
    :func:`dynamic_depthwise_conv`) it equals a grouped convolution of the
    padded input with the output gradient as kernel, an order of magnitude
    faster.

    Args:
        grad_out, x (Tensor): [N, G, H, W].
        weight (Tensor): [G, 1, k, k].
        needs (tuple[bool, bool]): Whether the input / weight gradient is
            wanted.

    Returns:
        tuple: ``grad_x`` and ``grad_weight`` (None where not wanted).
    """
    groups, _, k, _ = weight.shape
    grad_out = grad_out.contiguous()
    trick = needs[1] and k > 3 and x.device.type == 'cpu' and x.shape[0] == 1
    grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
        grad_out, x, weight, None, [1, 1], [k // 2, k // 2], [1, 1], False,
        [0, 0], groups, [needs[0], needs[1] and not trick, False])
    if trick:
        grad_w = F.conv2d(
            F.pad(x, (k // 2, ) * 4),
            grad_out.reshape(groups, 1, *grad_out.shape[-2:]),
            groups=groups).reshape(weight.shape)
    return grad_x, grad_w


class _DynamicDepthwiseConv(torch.autograd.Function):
    """Depthwise conv, "same" padding, of ``x`` or of the blend
    ``x * scales[0] + prev * scales[1]``; the blend is recomputed in the
    backward pass rather than kept."""

    @staticmethod
    def forward(ctx, x, weight, prev=None, scales=None):
        """x, prev: [1, G, H, W], weight: [G, 1, k, k], scales: [2]."""
        inp = x if prev is None else torch.addcmul(scales[0] * x, prev,
                                                   scales[1])
        ctx.save_for_backward(x, weight, prev, scales)
        k = weight.shape[-1]
        return F.conv2d(inp, weight, padding=k // 2, groups=weight.shape[0])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        x, weight, prev, scales = ctx.saved_tensors
        blend = prev is not None
        inp = torch.addcmul(scales[0] * x, prev, scales[1]) if blend else x
        needs_inp = any(ctx.needs_input_grad[i] for i in (0, 2, 3))
        grad_inp, grad_w = depthwise_conv_backward(
            grad_out, inp, weight, (needs_inp, ctx.needs_input_grad[1]))
        if not blend:
            return grad_inp, grad_w, None, None
        grad_scales = None
        if ctx.needs_input_grad[3]:
            grad_scales = torch.stack(
                [(grad_inp * x).sum(), (grad_inp * prev).sum()])
        return (grad_inp * scales[0], grad_w, grad_inp * scales[1],
                grad_scales)


def dynamic_depthwise_conv(x: torch.Tensor,
                           weight: torch.Tensor,
                           prev: Optional[torch.Tensor] = None,
                           scales: Optional[torch.Tensor] = None):
    """Depthwise conv with a different kernel for every sample.

    Args:
        x (Tensor): [B, C, H, W].
        weight (Tensor): [B, C, 1, k, k], k odd ("same" padding, no bias).
        prev (Tensor, optional): [B, C, H, W]; with ``scales`` [2], the conv
            reads ``x * scales[0] + prev * scales[1]`` (not kept for the
            backward pass).

    Returns:
        Tensor: [B, C, H, W].
    """
    B, C, H, W = x.shape
    k = weight.shape[-1]
    # The batch is folded into the channels: one grouped conv, no loop over
    # samples.
    x = x.reshape(1, B * C, H, W)
    if prev is not None:
        prev = prev.reshape(1, B * C, H, W)
    weight = weight.reshape(B * C, 1, k, k).to(x.dtype)
    if torch.is_autocast_enabled(x.device.type):  # autocast picks the dtypes
        if prev is not None:
            x = torch.addcmul(scales[0] * x, prev, scales[1])
        out = F.conv2d(x, weight, padding=k // 2, groups=B * C)
    else:
        out = _DynamicDepthwiseConv.apply(x, weight, prev, scales)
    return out.view(B, C, H, W)
