"""CoLoRA: the published updates in float64, the filter, the correlated
recursion over forwards, placement and counts, and validation."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmparax.models import ConvNeXt, Swin, VMamba
from mmparax.peft.colora import (
    CoLoRAConv,
    CoLoRAPointwise,
    _reflect_index,
    bilateral_filter,
    gaussian_window,
    reflect_pad,
)
from mmparax.testing import tiny_convnext_kwargs, tiny_swin_kwargs

VMAMBA = dict(arch=dict(dims=16, depths=(2, 2, 2, 2), ssm_ratio=2.0))


def literal_filter(u, size=11, sigma=1.0):
    """F(u), pixel by pixel: u [B, r, H, W] (H, W > size // 2)."""
    grid = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    line = torch.exp(-grid**2 / (2 * sigma**2))
    G = (line[:, None] * line[None, :])
    G = (G / G.sum()).to(u.dtype)
    pad = size // 2
    out = torch.empty_like(u)
    B, r, H, W = u.shape
    for b in range(B):
        for c in range(r):
            m = u[b, c].detach()
            gamma = math.pi / (2 * max(float(m.max() - m.min()), 1e-5))
            cos = torch.cos(gamma * m).clamp(min=0)
            sin = torch.sin(gamma * m).clamp(min=0)
            mp, cp, sp = (F.pad(t[None, None], (pad, ) * 4,
                                mode='reflect')[0, 0] for t in (m, cos, sin))
            for y in range(H):
                for x in range(W):
                    win = (slice(y, y + size), slice(x, x + size))
                    num = cos[y, x] * (G * cp[win] * mp[win]).sum() + \
                        sin[y, x] * (G * sp[win] * mp[win]).sum()
                    den = cos[y, x] * (G * cp[win]).sum() + \
                        sin[y, x] * (G * sp[win]).sum()
                    out[b, c, y, x] = num / (den + 1e-5)
    return out


def test_filter_matches_the_formula():
    torch.manual_seed(0)
    u = torch.randn(2, 3, 8, 7, dtype=torch.float64)
    window = gaussian_window(11, 1.0).double()
    torch.testing.assert_close(bilateral_filter(u, window),
                               literal_filter(u))


def test_conv_branch_matches_the_formula():
    torch.manual_seed(0)
    C, r = 8, 4
    branch = CoLoRAConv(C, r).double()
    nn.init.normal_(branch.B)
    x = torch.randn(2, C, 7, 6, dtype=torch.float64)
    u = torch.einsum('rc,bchw->brhw', branch.A[:, :, 0, 0], x)
    v = F.pad(u + 0.2 * literal_filter(u), (1, 1, 1, 1))
    expected = torch.zeros(2, C, 7, 6, dtype=torch.float64)
    for o in range(C):
        g = o // (C // r)  # r groups: one input channel each
        for dy in range(3):
            for dx in range(3):
                expected[:, o] += branch.B[o, 0, dy, dx] * \
                    v[:, g, dy:dy + 7, dx:dx + 6]
    torch.testing.assert_close(branch(x), expected)


def test_reflect_pad_extends_periodically():
    x = torch.arange(2 * 5 * 6, dtype=torch.float64).view(1, 2, 5, 6)
    for pad in (1, 3, 4):
        idx_h, idx_w = _reflect_index(5, pad, None), _reflect_index(6, pad,
                                                                    None)
        torch.testing.assert_close(
            x.index_select(-2, idx_h).index_select(-1, idx_w),
            F.pad(x, (pad, ) * 4, mode='reflect'))
    small = torch.randn(1, 1, 2, 1)
    out = reflect_pad(small, 5)  # F.pad refuses this
    assert out.shape == (1, 1, 12, 11)
    assert torch.equal(out[0, 0, :, 0], small[0, 0, [1, 0] * 6, 0])


def _literal_deltas(pair, W1, W2):
    """ΔW_1, ΔW_2 as written in the module docstring."""
    rs, ri, C = pair.shared_rank, pair.own_rank, pair.channels
    As, Bs = pair.shared_A, pair.shared_B
    kappa = (rs * C)**0.25
    left, right = W2.T @ Bs, As @ W1.T
    d1 = left @ As / (kappa * (left.std() + As.std()))
    d2 = Bs @ right / (kappa * (right.std() + Bs.std()))
    d1 = d1 + pair.B1 @ pair.A1 / (math.sqrt(ri) *
                                   (pair.A1.std() + pair.B1.std()))
    d2 = d2 + pair.B2 @ pair.A2 / (math.sqrt(ri) *
                                   (pair.A2.std() + pair.B2.std()))
    return d1, d2


def test_pointwise_updates_and_their_recursion_match_the_formula():
    """fc2(gelu(fc1(x))) with the correlated updates; the second forward
    correlates with the weights the first one used."""
    torch.manual_seed(0)
    C, H = 6, 24
    fc1, fc2 = nn.Linear(C, H).double(), nn.Linear(H, C).double()
    pair = CoLoRAPointwise(C, H, rank=5).double()  # r_s = 2, r_i = 3
    assert (pair.shared_rank, pair.own_rank) == (2, 3)
    for B in (pair.shared_B, pair.B1, pair.B2):
        nn.init.normal_(B)
    pair.bind(fc1, fc2)
    x = torch.randn(3, 4, C, dtype=torch.float64)
    W1, W2 = fc1.weight.detach(), fc2.weight.detach()
    bar1, bar2 = W1, W2  # the pretrained weights at the first forward
    for _ in range(3):
        pair.advance(None, None)  # what the host's pre-hook does
        d1, d2 = _literal_deltas(pair, bar1, bar2)
        expected = F.linear(
            F.gelu(F.linear(x, W1 + d1, fc1.bias)), W2 + d2, fc2.bias)
        torch.testing.assert_close(fc2(F.gelu(fc1(x))), expected)
        bar1, bar2 = W1 + d1.detach(), W2 + d2.detach()
    # a recomputation within the same forward sees the same W̄
    torch.testing.assert_close(fc2(F.gelu(fc1(x))), expected)
    pair.forget()
    assert pair.last_delta1 is None and pair.last_delta2 is None


def test_block_matches_the_official_forward():
    """One ConvNeXt block of the host against the official block written
    out: dwconv + conv branch, norm, (W1 + ΔW1), GELU, (W2 + ΔW2), gamma,
    residual."""
    torch.manual_seed(0)
    model = ConvNeXt(peft=dict(type='CoLoRA', rank=4),
                     **tiny_convnext_kwargs(drop_path_rate=0.)).double()
    model.eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    block = model.stages[0][1]
    x = torch.randn(2, 16, 8, 7, dtype=torch.float64)
    conv = block.depthwise_conv.colora
    pair = block.pointwise_conv1.colora
    W1, W2 = block.pointwise_conv1.weight, block.pointwise_conv2.weight
    d1, d2 = _literal_deltas(pair, W1, W2)
    u = F.conv2d(x, conv.A)
    h = F.conv2d(x, block.depthwise_conv.weight, block.depthwise_conv.bias,
                 padding=3, groups=16) + F.conv2d(
                     u + 0.2 * literal_filter(u), conv.B, padding=1, groups=4)
    h = F.layer_norm(h.permute(0, 2, 3, 1), (16, ), block.norm.weight,
                     block.norm.bias, block.norm.eps)
    h = F.linear(F.gelu(F.linear(h, W1 + d1, block.pointwise_conv1.bias)),
                 W2 + d2, block.pointwise_conv2.bias)
    expected = x + (h * block.gamma).permute(0, 3, 1, 2)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_block(block, x), expected)


def _count(model):
    return sum(p.numel() for n, p in model.named_parameters()
               if '.colora' in n)


@pytest.mark.parametrize('rank', [1, 4, (2, 4, 8, 16)])
def test_placement_and_count(rank):
    model = ConvNeXt(peft=dict(type='CoLoRA', rank=rank),
                     **tiny_convnext_kwargs())
    ranks = (rank, ) * 4 if isinstance(rank, int) else rank
    expected = 0
    for i, (C, blocks) in enumerate(model.peft_stages()):
        r = ranks[i]
        rs, ri = r // 2, r - r // 2
        for block in blocks:
            assert isinstance(block.depthwise_conv.colora, CoLoRAConv)
            assert block.depthwise_conv.colora.A.shape == (r, C, 1, 1)
            assert isinstance(block.pointwise_conv1.colora, CoLoRAPointwise)
            assert not block.pointwise_conv2._modules
            expected += r * C + 9 * C + 2 * rs * C + 2 * ri * (C + 4 * C)
            if r % 2 == 0:
                assert r * C + 9 * C + 2 * rs * C + 10 * ri * C \
                    == (7 * r + 9) * C
    assert _count(model) == expected


def test_initialisation_starts_from_the_frozen_model():
    model = ConvNeXt(peft=dict(type='CoLoRA', rank=4),
                     **tiny_convnext_kwargs())
    block = model.stages[3][0]
    conv, pair = block.depthwise_conv.colora, block.pointwise_conv1.colora
    for B in (conv.B, pair.shared_B, pair.B1, pair.B2):
        assert not B.any()
    bound = 1 / math.sqrt(128)  # kaiming_uniform_(a=sqrt(5)), fan_in C
    for A in (conv.A, pair.shared_A, pair.A1):
        assert 0 < A.abs().max() <= bound
    assert 0 < pair.A2.abs().max() <= 1 / math.sqrt(4 * 128)
    # nothing of the recursion is saved
    assert not any('last_delta' in k or 'window' in k
                   for k in model.state_dict())


def test_recursion_follows_host_forwards_and_checkpointing():
    """The second training iteration (non-zero W̄) gives the same gradients
    with checkpointed blocks."""
    kwargs = tiny_convnext_kwargs(drop_path_rate=0.)
    models = []
    for with_cp in (False, True):
        torch.manual_seed(0)
        models.append(ConvNeXt(peft=dict(type='CoLoRA', rank=4),
                               with_cp=with_cp, **kwargs))
    torch.manual_seed(1)
    with torch.no_grad():
        for p in models[0].parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    models[1].load_state_dict(models[0].state_dict())
    x = torch.randn(2, 3, 64, 48)
    for step in range(2):
        for m in models:
            m.zero_grad()
            sum(o.square().mean() for o in m(x)).backward()
        pair = models[0].stages[1][0].pointwise_conv1.colora
        assert (pair.last_delta1 is None) == (step == 0)
    for (n, p), q in zip(models[0].named_parameters(),
                         models[1].parameters()):
        if p.requires_grad:
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6)
    for m in models:
        for module in m.modules():
            if isinstance(module, CoLoRAPointwise):
                module.reset_parameters()
                assert module.last_delta1 is None


@pytest.mark.parametrize('host, cls, kwargs, why', [
    ('Swin', Swin, tiny_swin_kwargs(), "layer aliases ['dwconv', 'fc1'"),
    ('VMamba', VMamba, VMAMBA, "('in_proj', 'out_proj', 'dwconv'"),
])
def test_other_hosts_are_refused(host, cls, kwargs, why):
    with pytest.raises(ValueError) as info:
        cls(peft=dict(type='CoLoRA', rank=4), **kwargs)
    message = str(info.value)
    assert message.startswith(f'CoLoRA cannot adapt {host}: ')
    assert why in message
    assert "capability 'depthwise_pointwise_blocks' (blocks of a depthwise " \
        'conv followed by two channel-last pointwise linears' in message


@pytest.mark.parametrize('peft, match', [
    (dict(rank=0), 'CoLoRA: rank must be a positive integer'),
    (dict(rank='8'), 'CoLoRA: rank must be a positive integer'),
    (dict(rank=[4, 0, 4, 4]), 'CoLoRA: rank must be'),
    (dict(rank=[4, 4]), r'CoLoRA: rank=\(4, 4\) gives 2 values for 4 stages'),
    (dict(rank=[4] * 5), r'CoLoRA: rank=\(4, 4, 4, 4, 4\) gives 5 values '
     'for 4 stages; give one value per stage'),
    (dict(rank=3), 'CoLoRA rank 3 of stage 0 of ConvNeXt must divide its '
     'width 16'),
    (dict(share_ratio=1.5),
     r'CoLoRA: share_ratio must be a number in \[0, 1\], got 1.5'),
    (dict(filter_size=4), 'CoLoRA: filter_size must be an odd'),
    (dict(filter_sigma=0), 'CoLoRA: filter_sigma must be a positive number'),
    (dict(filter_scale=-1), 'CoLoRA: filter_scale must be a positive number'),
])
def test_bad_arguments_fail_at_build(peft, match):
    with pytest.raises(ValueError, match=match):
        ConvNeXt(peft=dict(type='CoLoRA', **peft), **tiny_convnext_kwargs())


@pytest.mark.parametrize('share_ratio', [0., 1.])
def test_all_shared_or_all_independent(share_ratio):
    model = ConvNeXt(peft=dict(type='CoLoRA', rank=2, share_ratio=share_ratio,
                               use_filter=False), **tiny_convnext_kwargs())
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    out = model(torch.randn(1, 3, 32, 32))
    sum(o.sum() for o in out).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters()
               if p.requires_grad and p.numel())
