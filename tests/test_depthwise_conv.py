import torch
import torch.nn.functional as F

from mmparax.ops import dynamic_depthwise_conv
from mmparax.ops.depthwise_conv import _DepthwiseConvCPU


def test_cpu_depthwise_gradients_match_autograd():
    for k in (3, 5, 7):
        x = torch.randn(1, 6, 9, 8, dtype=torch.float64, requires_grad=True)
        w = torch.randn(6, 1, k, k, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(_DepthwiseConvCPU.apply, (x, w))


def test_every_sample_has_its_own_kernel():
    """[B, C, H, W] with [B, C, 1, k, k] kernels against one depthwise conv
    per sample."""
    x = torch.randn(3, 4, 7, 6, dtype=torch.float64)
    w = torch.randn(3, 4, 1, 5, 5, dtype=torch.float64)
    expected = torch.stack([
        F.conv2d(x[b:b + 1], w[b], padding=2, groups=4)[0] for b in range(3)
    ])
    torch.testing.assert_close(dynamic_depthwise_conv(x, w), expected)
