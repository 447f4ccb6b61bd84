"""LoRand: the published formula, the official initialisation, placement per
host, the per-adapter count 2ab(C + n) + 2ab^2 + n + C and argument
checks."""
import math

import pytest
import torch

from mmparax.models import ConvNeXt, Swin, VMamba
from mmparax.peft.lorand import LoRand, LoRandAdapter, LoRandProjection
from mmparax.testing import tiny_convnext_kwargs, tiny_swin_kwargs

VMAMBA = dict(arch=dict(dims=16, depths=(2, 2, 2, 2), ssm_ratio=2.0))


def build(host, **peft):
    torch.manual_seed(0)
    peft = dict(dict(type='LoRand', hidden_dim=8, num_branches=2,
                     branch_rank=2), **peft)
    if host == 'Swin':
        return Swin(peft=peft, **tiny_swin_kwargs())
    if host == 'ConvNeXt':
        return ConvNeXt(peft=peft, **tiny_convnext_kwargs())
    return VMamba(peft=peft, **VMAMBA)


def per_adapter(C, n, alpha, beta):
    return 2 * alpha * beta * (C + n) + 2 * alpha * beta**2 + n + C


def test_matches_the_published_formula_in_float64():
    C, n, alpha, beta = 6, 5, 3, 2
    torch.manual_seed(0)
    adapter = LoRandAdapter(C, n, alpha, beta).double()
    x = torch.randn(2, 7, C, dtype=torch.float64)

    def synthesise(proj):
        W = torch.zeros(proj.in_features, proj.out_features,
                        dtype=torch.float64)
        for i in range(alpha):
            W += proj.P[i] @ proj.K[i] @ proj.Q[i]
        return W

    down, up = adapter.down, adapter.up
    h = x @ synthesise(down) + down.bias
    gelu = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))
    expected = x + gelu @ synthesise(up) + up.bias
    torch.testing.assert_close(adapter(x, (7, 1)), expected)
    adapter.parallel = True
    torch.testing.assert_close(adapter(x), expected - x)


def test_synthesised_weight_has_rank_at_most_alpha_beta():
    proj = LoRandProjection(40, 30, num_branches=3, branch_rank=4)
    assert torch.linalg.matrix_rank(proj.weight().detach()) == 12


def test_official_initialisation_and_reset():
    """Each factor slice Kaiming-uniform (a = sqrt(5), fan_in = its second
    dimension) and the bias U(+-1/sqrt(in)), as the official code."""
    torch.manual_seed(0)
    alpha, beta, C, n = 3, 8, 64, 32
    proj = LoRandProjection(C, n, alpha, beta)
    assert proj.P.shape == (alpha, C, beta)
    assert proj.K.shape == (alpha, beta, beta)
    assert proj.Q.shape == (alpha, beta, n)
    for factor, fan_in in ((proj.P, beta), (proj.K, beta), (proj.Q, n)):
        bound = 1 / math.sqrt(fan_in)
        assert factor.abs().max() <= bound
        assert factor.abs().max() > 0.9 * bound  # uniform over the range
    assert proj.bias.abs().max() <= 1 / math.sqrt(C)
    with torch.no_grad():
        for p in proj.parameters():
            p.fill_(5.)
    proj.reset_parameters()
    assert proj.P.abs().max() <= 1 / math.sqrt(beta)
    assert proj.bias.abs().max() <= 1 / math.sqrt(C)


def test_no_factor_is_shared_between_down_and_up():
    adapter = LoRandAdapter(16, 8, 2, 4)
    down = {id(p) for p in adapter.down.parameters()}
    assert not down & {id(p) for p in adapter.up.parameters()}
    assert sum(p.numel() for p in adapter.parameters()) == \
        per_adapter(16, 8, 2, 4)


def test_switched_off_is_exactly_the_identity():
    torch.manual_seed(0)
    adapter = LoRandAdapter(8, 4, 2, 2)
    adapter.switch_off()
    x = torch.randn(2, 12, 8)
    assert torch.equal(adapter(x, (3, 4)), x)


@pytest.mark.parametrize('host, sites', [
    ('Swin', ('attn_out_adapter', 'mlp_out_adapter')),
    ('VMamba', ('ssm_out_adapter', 'mlp_out_adapter')),
    ('ConvNeXt', ('pre_dwconv_adapter', 'adapter')),
])
def test_placement_and_count_per_block(host, sites):
    """Two per block: on the mixer and the MLP branch outputs (Swin,
    VMamba); the branch input and after the block (ConvNeXt)."""
    model = build(host)
    for dim, blocks in model.peft_stages():
        for block in blocks:
            own = {n for n, m in block.named_children()
                   if isinstance(m, LoRandAdapter)}
            assert own == set(sites)
            count = sum(p.numel() for n in own
                        for p in getattr(block, n).parameters())
            assert count == len(sites) * per_adapter(dim, 8, 2, 2)


def test_hidden_dim_none_is_half_the_stage_width():
    model = build('Swin', hidden_dim=None)
    for dim, blocks in model.peft_stages():
        assert blocks[0].attn_out_adapter.down.out_features == dim // 2


def test_adapters_sit_where_the_docstring_says():
    swin = build('Swin').eval()
    block = swin.stages[1].blocks[0]
    x, hw = torch.randn(2, 30, 32), (6, 5)
    with torch.no_grad():
        out = swin.forward_block(block, x, hw)
        # the official block: x = s + A(branch(norm(s))) for both branches
        s1 = x + block.attn_out_adapter(block.attn(block.norm1(x), hw))
        ffn = block.ffn
        branch = ffn.dropout_layer(ffn.gamma2(ffn.layers(block.norm2(s1))))
        torch.testing.assert_close(out, s1 + block.mlp_out_adapter(branch))
    convnext = build('ConvNeXt').eval()
    block = convnext.stages[1][0]
    x = torch.randn(2, 32, 6, 5)

    def tokens(t):
        return t.flatten(2).transpose(1, 2)

    with torch.no_grad():
        out = convnext.forward_block(block, x)
        a1 = block.pre_dwconv_adapter(tokens(x)).transpose(1, 2).reshape(
            x.shape)
        inner = block(a1) - a1  # mmpretrain's block minus its input
        expected = block.adapter(tokens(x + inner))
    torch.testing.assert_close(tokens(out), expected)


def test_closed_form_gives_the_papers_counts():
    """n = 128, beta = 8: alpha = 12 on Swin-B / L (5.9 / 8.2M), alpha = 9
    on ConvNeXt-B / L (6.7 / 9.3M), two adapters per block; the output
    norms stay frozen."""
    base, large = (128, 256, 512, 1024), (192, 384, 768, 1536)

    def total(dims, depths, alpha):
        return sum(2 * k * per_adapter(d, 128, alpha, 8)
                   for d, k in zip(dims, depths))

    assert total(base, (2, 2, 18, 2), 12) == 5_903_872
    assert total(large, (2, 2, 18, 2), 12) == 8_226_048
    assert total(base, (3, 3, 27, 3), 9) == 6_653_184
    assert total(large, (3, 3, 27, 3), 9) == 9_270_144


@pytest.mark.parametrize('kwargs, match', [
    (dict(hidden_dim=0), 'LoRand: hidden_dim must be a positive integer'),
    (dict(hidden_dim='128'), 'LoRand: hidden_dim'),
    (dict(num_branches=0), r'LoRand: num_branches \(alpha\) must be'),
    (dict(num_branches=2.5), 'LoRand: num_branches'),
    (dict(branch_rank=-1), r'LoRand: branch_rank \(beta\) must be'),
    (dict(branch_rank=True), 'LoRand: branch_rank'),
    (dict(sites='post_attn'), 'LoRand: sites must be a list'),
])
def test_bad_arguments_fail_at_build(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        LoRand(**kwargs)


def test_a_missing_site_names_method_and_host():
    with pytest.raises(ValueError, match="LoRand needs site.*'post_attn'.*"
                       'ConvNeXt'):
        build('ConvNeXt', sites=['post_attn'])
