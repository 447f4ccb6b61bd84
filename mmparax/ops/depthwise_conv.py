"""Depthwise convolution with a different kernel for every sample."""
import torch
import torch.nn.functional as F


class _DepthwiseConvCPU(torch.autograd.Function):
    """Depthwise conv, "same" padding, with a faster CPU weight gradient.

    On CPU the native depthwise weight gradient of kernels larger than 3x3
    dominates the adapter's cost; it equals a grouped convolution of the
    padded input with the output gradient as kernel, which runs an order of
    magnitude faster.
    """

    @staticmethod
    def forward(ctx, x, weight):
        """x: [1, G, H, W], weight: [G, 1, k, k] -> [1, G, H, W]."""
        ctx.save_for_backward(x, weight)
        k = weight.shape[-1]
        return F.conv2d(x, weight, padding=k // 2, groups=weight.shape[0])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        groups, _, k, _ = weight.shape
        grad_out = grad_out.contiguous()
        use_trick = k > 3 and ctx.needs_input_grad[1]
        grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
            grad_out, x, weight, None, [1, 1], [k // 2, k // 2], [1, 1],
            False, [0, 0], groups,
            [ctx.needs_input_grad[0], ctx.needs_input_grad[1]
             and not use_trick, False])
        if use_trick:
            # x and grad_out hold one sample: the batch is folded in groups
            grid = grad_out.shape[-2:]
            grad_w = F.conv2d(
                F.pad(x, (k // 2, ) * 4),
                grad_out.reshape(groups, 1, *grid),
                groups=groups).reshape(weight.shape)
        return grad_x, grad_w


def dynamic_depthwise_conv(x: torch.Tensor, weight: torch.Tensor):
    """Depthwise conv with a different kernel for every sample.

    Args:
        x (Tensor): [B, C, H, W].
        weight (Tensor): [B, C, 1, k, k], k odd ("same" padding, no bias).

    Returns:
        Tensor: [B, C, H, W].
    """
    B, C, H, W = x.shape
    k = weight.shape[-1]
    # The batch is folded into the channels: one grouped conv, no loop over
    # samples.
    x = x.reshape(1, B * C, H, W)
    weight = weight.reshape(B * C, 1, k, k).to(x.dtype)
    if x.device.type == 'cpu':
        out = _DepthwiseConvCPU.apply(x, weight)
    else:
        out = F.conv2d(x, weight, padding=k // 2, groups=B * C)
    return out.view(B, C, H, W)
