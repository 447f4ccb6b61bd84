"""RepAdapter: the published formula (grouped up projection as the official
``nn.Conv1d(groups=2)``), the official initialisation, placement and count
``1.5Cr + r + C`` per adapter, and the structural re-parameterisation."""
import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmparax.models import ConvNeXt, Swin, VMamba
from mmparax.peft.repadapter import RepAdapter, RepAdapterModule
from mmparax.testing import switch_off, tiny_convnext_kwargs, tiny_swin_kwargs

DEPTHS = (2, 2, 3, 2)
WIDTHS = (16, 32, 64, 128)
SITES = {
    'Swin': ('attn_in_adapter', 'mlp_in_adapter'),
    'ConvNeXt': ('pre_dwconv_adapter', ),
    'VMamba': ('ssm_in_adapter', 'mlp_in_adapter'),
}


def build(host, **kwargs):
    peft = dict(type='RepAdapter', hidden_dim=8)
    peft.update({k: kwargs.pop(k) for k in list(kwargs) if k in (
        'hidden_dim', 'groups', 'scale', 'dropout', 'sites')})
    torch.manual_seed(0)
    if host == 'Swin':
        return Swin(peft=peft, **tiny_swin_kwargs(depths=DEPTHS, **kwargs))
    if host == 'ConvNeXt':
        return ConvNeXt(
            peft=peft,
            **tiny_convnext_kwargs(
                arch=dict(depths=list(DEPTHS), channels=list(WIDTHS)),
                **kwargs))
    return VMamba(
        peft=peft, arch=dict(dims=16, depths=DEPTHS, ssm_ratio=2.0), **kwargs)


def randomise(module, std=0.2, frozen=False):
    """Random values for the method's (and with ``frozen`` every)
    parameters; Swin's relative position tables start at 0 otherwise."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad or frozen:
                p.normal_(std=std)
    return module


def literal(x, Wa, ba, Wb, bb, groups, scale):
    """x + s * (W_B (W_A x + b_A) + b_B) with W_B [C, r/g] a grouped 1x1:
    output channel o (group o // (C/g)) reads hidden channels
    k r/g ... (k+1) r/g - 1 of its group k."""
    C, rg = Wb.shape
    h = x @ Wa.T + ba
    out = torch.empty_like(x)
    for o in range(C):
        k = o // (C // groups)
        out[..., o] = h[..., k * rg:(k + 1) * rg] @ Wb[o] + bb[o]
    return x + scale * out


def test_matches_the_formula_in_float64():
    adapter = randomise(RepAdapterModule(12, 6, groups=2, scale=0.7))
    adapter = adapter.double().eval()
    x = torch.randn(2, 5, 12, dtype=torch.float64)
    expected = literal(x, adapter.down.weight, adapter.down.bias,
                       adapter.up_weight, adapter.up_bias, 2, 0.7)
    torch.testing.assert_close(adapter(x, (1, 5)), expected,
                               rtol=1e-12, atol=1e-12)


def test_the_grouped_up_projection_is_the_official_grouped_conv():
    """The official conv_A / conv_B: nn.Conv1d(C, r, 1) and
    nn.Conv1d(r, C, 1, groups=g) on [B, C, N]; same weights, same output."""
    adapter = randomise(RepAdapterModule(12, 6, groups=3, scale=0.5))
    adapter = adapter.double().eval()
    x = torch.randn(2, 5, 12, dtype=torch.float64)
    t = x.transpose(1, 2)
    h = F.conv1d(t, adapter.down.weight[..., None], adapter.down.bias)
    up = F.conv1d(h, adapter.up_weight[..., None], adapter.up_bias, groups=3)
    expected = (up * 0.5 + t).transpose(1, 2)
    torch.testing.assert_close(adapter(x), expected, rtol=1e-12, atol=1e-12)
    dense = adapter.dense_up_weight()
    assert dense.shape == (12, 6) and not dense[:4, 2:].any()


def test_official_initialisation_and_reset():
    """conv_A: Xavier-uniform weight (bound sqrt(6 / (C + r))), zero bias;
    conv_B: zero weight and bias."""
    torch.manual_seed(0)
    adapter = RepAdapterModule(256, 64)
    for _ in range(2):
        w = adapter.down.weight.detach()
        bound = math.sqrt(6 / (256 + 64))
        assert w.abs().max() <= bound and w.abs().max() > 0.95 * bound
        for p in (adapter.down.bias, adapter.up_weight, adapter.up_bias):
            assert not p.any()
        x = torch.randn(3, 256)
        assert torch.equal(adapter.eval()(x), x)
        randomise(adapter)
        adapter.reset_parameters()
    randomise(adapter)
    adapter.switch_off()
    x = torch.randn(3, 256)
    assert torch.equal(adapter(x), x)


def test_dropout_sits_between_the_projections():
    adapter = randomise(RepAdapterModule(8, 4, dropout=0.5)).train()
    assert adapter.dropout.p == 0.5
    seen = {}
    adapter.dropout.register_forward_hook(
        lambda m, args, out: seen.update(inp=args[0], out=out))
    x = torch.randn(16, 8)
    y = adapter(x)
    torch.testing.assert_close(seen['inp'], adapter.down(x))
    torch.testing.assert_close(y, x + adapter.up(seen['out']))
    assert (seen['out'] == 0).any()


@pytest.mark.parametrize('host', list(SITES))
def test_placement_and_count(host):
    r = 8
    model = build(host, hidden_dim=r)
    total = 0
    for dim, blocks in model.peft_stages():
        for block in blocks:
            found = {n for n, m in block.named_children()
                     if isinstance(m, RepAdapterModule)}
            assert found == set(SITES[host])
            for name in found:
                n = sum(p.numel() for p in block._modules[name].parameters())
                assert n == 1.5 * dim * r + r + dim
                total += n
    per_block = len(SITES[host])
    assert total == per_block * sum(
        (1.5 * c * r + r + c) * n for c, n in zip(WIDTHS, DEPTHS))


def test_defaults_are_the_official_module():
    method = RepAdapter()
    assert (method.hidden_dim, method.groups, method.scale,
            method.dropout) == (8, 2, 1.0, 0.1)


@pytest.mark.parametrize('kwargs, match', [
    (dict(hidden_dim=0), 'RepAdapter: hidden_dim must be a positive integer'),
    (dict(hidden_dim=8.0), 'hidden_dim must be a positive integer, got 8.0'),
    (dict(groups=0), 'RepAdapter: groups must be a positive integer, got 0'),
    (dict(hidden_dim=9), 'hidden_dim=9 is not a multiple of groups=2'),
    (dict(scale=None), 'RepAdapter: scale must be a number, got None'),
    (dict(dropout=1), r'RepAdapter: dropout must be a number in \[0, 1\)'),
    (dict(sites='attn_in'), 'RepAdapter: sites must be a list'),
])
def test_bad_arguments_fail_at_construction(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        RepAdapter(**kwargs)


def test_groups_must_divide_every_stage_width():
    with pytest.raises(ValueError, match='RepAdapter: groups=3 does not '
                       'divide the 16 channels of stage 0 of Swin'):
        build('Swin', hidden_dim=6, groups=3)


def test_a_site_the_host_lacks_names_method_host_and_offer():
    with pytest.raises(ValueError) as info:
        build('ConvNeXt', sites=['attn_in'])
    message = str(info.value)
    assert 'RepAdapter' in message and 'ConvNeXt' in message
    assert "'pre_dwconv'" in message


# -- re-parameterisation -------------------------------------------------
def merge_and_compare(model, shape, dtype=torch.float64, tol=1e-10):
    """Outputs of ``model`` in eval before and after merging."""
    model = model.to(dtype).eval()
    x = torch.randn(*shape, dtype=dtype)
    with torch.no_grad():
        before = model(x)
        plain = switch_off(copy.deepcopy(model))(x)
        assert not torch.allclose(before[-1], plain[-1], atol=1e-3)
        model.peft.merge(model)
        after = model(x)
    for a, b in zip(after, before):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    return before, after


def test_swin_merges_exactly_without_window_padding():
    """224 x 224 on window 7: maps of 56, 28, 14 and 7, no padding."""
    model = randomise(build('Swin', dropout=0.1), frozen=True)
    frozen = {n: p.clone() for n, p in model.named_parameters()
              if not p.requires_grad}
    keys = set(model.state_dict())
    merge_and_compare(model, (1, 3, 224, 224))
    for _, blocks in model.peft_stages():
        for block in blocks:
            assert not any(isinstance(m, RepAdapterModule)
                           for m in block.modules())
    params = dict(model.named_parameters())
    changed = {n for n, p in frozen.items()
               if not torch.equal(params[n], p.to(params[n].dtype))}
    assert changed and all(
        n.endswith(('attn.w_msa.qkv.weight', 'attn.w_msa.qkv.bias',
                    'ffn.layers.0.0.weight', 'ffn.layers.0.0.bias'))
        for n in changed)
    # only the adapters' keys leave the state dict
    assert set(model.state_dict()) == {
        k for k in keys if 'in_adapter.' not in k}
    assert not any(p.requires_grad for n, p in model.named_parameters()
                   if not n.startswith('norm'))


def test_swin_with_window_padding():
    """mmseg pads the normalised tokens after the attn_in adapter: padded
    tokens read qkv's bias before merging and qkv(adapter(0)) after. The
    merge is exact when the adapters' biases are zero and not otherwise."""
    shape = (2, 3, 75, 90)  # 19 x 23 tokens: padded to 21 x 28
    model = randomise(build('Swin'), frozen=True)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, RepAdapterModule):
                m.down.bias.zero_()
                m.up_bias.zero_()
    merge_and_compare(model, shape)

    model = randomise(build('Swin'), frozen=True).double().eval()
    x = torch.randn(*shape, dtype=torch.float64)
    with torch.no_grad():
        before = model(x)
        model.peft.merge(model)
        after = model(x)
    assert not torch.allclose(after[0], before[0], atol=1e-6)


def test_swin_without_qkv_bias_gets_a_frozen_bias():
    model = randomise(build('Swin', qkv_bias=False), frozen=True)
    merge_and_compare(model, (1, 3, 224, 224))
    qkv = model.stages[0].blocks[0].attn.w_msa.qkv
    assert isinstance(qkv.bias, nn.Parameter) and not qkv.bias.requires_grad
    assert 'stages.0.blocks.0.attn.w_msa.qkv.bias' in model.peft_components(
    )['pretrained']


def test_vmamba_merges_exactly_and_in_proj_gains_a_bias():
    """VMamba's in_proj has no bias: the adapter's bias term needs one. The
    merged state dict has ``op.in_proj.bias`` keys (frozen, reported with
    the pretrained weights)."""
    model = randomise(build('VMamba'), frozen=True)
    with torch.no_grad():  # keep the scan stable with random weights
        for name, p in model.named_parameters():
            if name.endswith(('A_logs', 'dt_projs_bias')):
                p.fill_(-1.0)
    keys = set(model.state_dict())
    merge_and_compare(model, (2, 3, 64, 56), tol=1e-9)
    op = model.layers[2].blocks[1].op
    assert isinstance(op.in_proj.bias, nn.Parameter)
    assert not op.in_proj.bias.requires_grad
    added = set(model.state_dict()) - keys
    assert added == {f'layers.{i}.blocks.{j}.op.in_proj.bias'
                     for i in range(4) for j in range(DEPTHS[i])}
    groups = model.peft_components()
    assert added <= set(groups['pretrained'])
    assert not groups.get('adapters')
    # the output norms stay at their init (RepAdapter's official setting)
    assert model.peft_trainable_names() == []
    assert not any(p.requires_grad for n, p in model.named_parameters()
                   if n.startswith('outnorm'))


def test_convnext_cannot_be_merged_and_stays_as_it_was():
    model = randomise(build('ConvNeXt'))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError,
                       match='RepAdapter cannot be merged exactly on '
                       "ConvNeXt: the adapter at 'pre_dwconv'.*depthwise "
                       'conv with zero padding'):
        model.peft.merge(model)
    assert all(torch.equal(v, state[k])
               for k, v in model.state_dict().items())
    assert set(model.state_dict()) == set(state)


def test_an_unmergeable_site_changes_nothing():
    """All adapters are checked before any is folded."""
    model = randomise(build('Swin', sites=['attn_in', 'post_mlp']))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="at 'post_mlp' cannot be folded"):
        model.peft.merge(model)
    assert set(model.state_dict()) == set(state)
    assert all(torch.equal(v, state[k])
               for k, v in model.state_dict().items())


def test_merging_twice_raises():
    model = build('Swin')
    model.peft.merge(model)
    with pytest.raises(ValueError, match='holds no RepAdapter module'):
        model.peft.merge(model)
