"""Mona: the published formula, the official initialisation, placement per
host, the per-adapter count 2Cr + 5C + r^2 + 88r and argument checks."""
import math

import pytest
import torch
import torch.nn as nn

from mmparax.models import ConvNeXt, Swin, VMamba
from mmparax.peft.mona import Mona, MonaAdapter, MonaOp
from mmparax.testing import tiny_convnext_kwargs, tiny_swin_kwargs

VMAMBA = dict(arch=dict(dims=16, depths=(2, 2, 2, 2), ssm_ratio=2.0))


def build(host, **peft):
    torch.manual_seed(0)
    peft = dict(dict(type='Mona', hidden_dim=8, dropout=0.), **peft)
    if host == 'Swin':
        return Swin(peft=peft, **tiny_swin_kwargs())
    if host == 'ConvNeXt':
        return ConvNeXt(peft=peft, **tiny_convnext_kwargs())
    return VMamba(peft=peft, **VMAMBA)


def randomise(module):
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return module


def depthwise(z, weight, bias):
    """Depthwise k x k conv, zero padding k // 2, as sums over offsets.

    z [B, r, H, W], weight [r, 1, k, k], bias [r].
    """
    k = weight.shape[-1]
    H, W = z.shape[-2:]
    padded = torch.zeros(*z.shape[:2], H + k - 1, W + k - 1, dtype=z.dtype)
    padded[..., k // 2:k // 2 + H, k // 2:k // 2 + W] = z
    out = bias.view(1, -1, 1, 1).expand_as(z).clone()
    for u in range(k):
        for v in range(k):
            out += weight[:, 0, u, v].view(1, -1, 1, 1) * \
                padded[..., u:u + H, v:v + W]
    return out


def test_matches_the_published_formula_in_float64():
    C, r, (H, W) = 6, 4, (3, 5)
    adapter = randomise(MonaAdapter(C, r, dropout=0.)).double()
    x = torch.randn(2, H * W, C, dtype=torch.float64)
    a = adapter
    # gamma * LN(x) + gamma_x * x
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean)**2).mean(-1, keepdim=True)
    ln = (x - mean) / torch.sqrt(var + 1e-5) * a.norm.weight + a.norm.bias
    xh = ln * a.gamma + x * a.gammax
    z = xh @ a.project1.weight.T + a.project1.bias  # [B, HW, r]
    grid = z.transpose(1, 2).reshape(2, r, H, W)
    ops = a.adapter_conv
    grid = grid + (depthwise(grid, ops.conv1.weight, ops.conv1.bias) +
                   depthwise(grid, ops.conv2.weight, ops.conv2.bias) +
                   depthwise(grid, ops.conv3.weight, ops.conv3.bias)) / 3
    proj = torch.einsum('oc,bchw->bohw', ops.projector.weight[:, :, 0, 0],
                        grid) + ops.projector.bias.view(1, -1, 1, 1)
    grid = grid + proj
    z = grid.reshape(2, r, H * W).transpose(1, 2)
    gelu = 0.5 * z * (1 + torch.erf(z / math.sqrt(2)))
    expected = x + gelu @ a.project2.weight.T + a.project2.bias
    torch.testing.assert_close(adapter(x, (H, W)), expected)
    # at a parallel site: the delta only
    adapter.parallel = True
    torch.testing.assert_close(adapter(x, (H, W)), expected - x)


def test_official_initialisation_and_reset():
    adapter = MonaAdapter(32, 16)
    assert torch.all(adapter.gamma == 1e-6) and torch.all(adapter.gammax == 1)
    for linear in (adapter.project1, adapter.project2):
        assert torch.all(linear.bias == 0)
        assert 0.015 < linear.weight.std() < 0.025  # timm's std 0.02
    assert torch.all(adapter.norm.weight == 1)
    assert torch.all(adapter.norm.bias == 0)
    assert [m.kernel_size for m in adapter.adapter_conv.children()] == \
        [(3, 3), (5, 5), (7, 7), (1, 1)]
    assert adapter.adapter_conv.conv3.groups == 16
    assert isinstance(adapter.dropout, nn.Dropout) \
        and adapter.dropout.p == 0.1
    randomise(adapter)
    adapter.reset_parameters()
    assert torch.all(adapter.gamma == 1e-6) and torch.all(adapter.gammax == 1)
    assert torch.all(adapter.project2.bias == 0)


def test_switched_off_is_exactly_the_identity():
    adapter = randomise(MonaAdapter(8, 4)).train()
    adapter.switch_off()
    x = torch.randn(2, 12, 8)
    assert torch.equal(adapter(x, (3, 4)), x)


def test_monaop_residuals():
    op = randomise(MonaOp(3)).double()
    z = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        for m in op.children():
            m.weight.zero_()
            m.bias.zero_()
    torch.testing.assert_close(op(z), z)  # both residuals are identities


def per_adapter(C, r):
    return 2 * C * r + 5 * C + r**2 + 88 * r


@pytest.mark.parametrize('host, sites', [
    ('Swin', ('adapter1', 'adapter2')),
    ('VMamba', ('adapter1', 'adapter2')),
    ('ConvNeXt', ('adapter', )),
])
def test_placement_and_count_per_block(host, sites):
    """After each residual add: post_attn / post_ssm and post_mlp on Swin and
    VMamba, post_block on ConvNeXt (one per block)."""
    r = 8
    model = build(host)
    for dim, blocks in model.peft_stages():
        for block in blocks:
            own = {n for n, m in block.named_children()
                   if isinstance(m, MonaAdapter)}
            assert own == set(sites)
            count = sum(p.numel() for n in own
                        for p in getattr(block, n).parameters())
            assert count == len(sites) * per_adapter(dim, r)
            assert all(p.requires_grad for n in own
                       for p in getattr(block, n).parameters())


def test_adapters_sit_after_the_residual_adds_on_swin():
    model = build('Swin').eval()
    randomise(model.stages[1].blocks[0].adapter1)
    block = model.stages[1].blocks[0]
    x, hw = torch.randn(2, 30, 32), (6, 5)
    with torch.no_grad():
        out = model.forward_block(block, x, hw)
        s1 = block.adapter1(x + block.attn(block.norm1(x), hw), hw)
        s2 = block.ffn(block.norm2(s1), identity=s1)
        torch.testing.assert_close(out, block.adapter2(s2, hw))


def test_closed_form_gives_the_papers_counts():
    """Swin-B / L at r = 90 / 91 (2 per block) and ConvNeXt-B / L at
    r = 144 (1 per block), the output norms frozen: 5.2 / 7.5 and 6.5 /
    9.1M."""
    base, large = (128, 256, 512, 1024), (192, 384, 768, 1536)

    def total(dims, depths, r, per_block):
        return sum(per_block * n * per_adapter(d, r)
                   for d, n in zip(dims, depths))

    assert total(base, (2, 2, 18, 2), 90, 2) == 5_220_800
    assert total(large, (2, 2, 18, 2), 91, 2) == 7_531_824
    assert total(base, (3, 3, 27, 3), 144, 1) == 6_490_752
    assert total(large, (3, 3, 27, 3), 144, 1) == 9_134_784


@pytest.mark.parametrize('kwargs, match', [
    (dict(hidden_dim=0), 'Mona: hidden_dim must be a positive integer'),
    (dict(hidden_dim=8.0), 'Mona: hidden_dim must be a positive integer'),
    (dict(hidden_dim=True), 'Mona: hidden_dim'),
    (dict(dropout=1.0), r'Mona: dropout must be a number in \[0, 1\)'),
    (dict(dropout=-0.1), 'Mona: dropout'),
    (dict(dropout='0.1'), 'Mona: dropout'),
    (dict(sites='post_attn'), 'Mona: sites must be a list'),
])
def test_bad_arguments_fail_at_build(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        Mona(**kwargs)


def test_a_missing_site_names_method_and_host():
    with pytest.raises(ValueError, match="Mona needs site.*'post_attn'.*"
                       'ConvNeXt'):
        build('ConvNeXt', sites=['post_attn'])
