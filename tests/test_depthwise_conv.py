import torch
import torch.nn.functional as F

from mmparax.ops import dynamic_depthwise_conv
from mmparax.ops.depthwise_conv import _DynamicDepthwiseConv


def test_cpu_depthwise_gradients_match_autograd():
    for k in (3, 5, 7):
        x = torch.randn(1, 6, 9, 8, dtype=torch.float64, requires_grad=True)
        w = torch.randn(6, 1, k, k, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(_DynamicDepthwiseConv.apply, (x, w))


def test_blended_input_gradients_match_autograd():
    """The conv of ``x * s[0] + prev * s[1]``, the blend recomputed in the
    backward pass."""
    for k in (3, 5):
        x, prev = torch.randn(2, 1, 6, 9, 8, dtype=torch.float64,
                              requires_grad=True)
        w = torch.randn(6, 1, k, k, dtype=torch.float64, requires_grad=True)
        s = torch.randn(2, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(_DynamicDepthwiseConv.apply,
                                        (x, w, prev, s))


def test_blend_is_not_kept():
    x, prev = torch.randn(2, 4, 16, 16), torch.randn(2, 4, 16, 16)
    w = torch.randn(2, 4, 1, 5, 5, requires_grad=True)
    s = torch.ones(2, requires_grad=True)
    saved = {}

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.nbytes
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = dynamic_depthwise_conv(x, w, prev, s)
    # x, prev, the kernels and the scales; no blended map
    assert sum(saved.values()) == x.nbytes + prev.nbytes + w.nbytes + s.nbytes
    expected = dynamic_depthwise_conv(x + prev, w)
    torch.testing.assert_close(out, expected)


def test_every_sample_has_its_own_kernel():
    """[B, C, H, W] with [B, C, 1, k, k] kernels against one depthwise conv
    per sample."""
    x = torch.randn(3, 4, 7, 6, dtype=torch.float64)
    w = torch.randn(3, 4, 1, 5, 5, dtype=torch.float64)
    expected = torch.stack([
        F.conv2d(x[b:b + 1], w[b], padding=2, groups=4)[0] for b in range(3)
    ])
    torch.testing.assert_close(dynamic_depthwise_conv(x, w), expected)
