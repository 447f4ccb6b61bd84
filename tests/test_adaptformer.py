"""AdaptFormer: the published formula, the official initialisation and
dropout placement, the parallel placement per host and the trainable count
``2Cd + d + C`` per block."""
import math

import pytest
import torch

from mmparax.models import ConvNeXt, Swin, VMamba
from mmparax.peft.adaptformer import AdaptFormer, AdaptFormerAdapter
from mmparax.testing import tiny_convnext_kwargs, tiny_swin_kwargs

DEPTHS = (2, 2, 3, 2)
WIDTHS = (16, 32, 64, 128)


def build(host, **peft):
    torch.manual_seed(0)
    peft = dict(dict(type='AdaptFormer', hidden_dim=8), **peft)
    if host == 'Swin':
        return Swin(peft=peft, **tiny_swin_kwargs(depths=DEPTHS))
    if host == 'ConvNeXt':
        return ConvNeXt(
            peft=peft,
            **tiny_convnext_kwargs(
                arch=dict(depths=list(DEPTHS), channels=list(WIDTHS))))
    return VMamba(peft=peft,
                  arch=dict(dims=16, depths=DEPTHS, ssm_ratio=2.0))


def randomise(module, std=0.3):
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.normal_(std=std)
    return module


def test_matches_the_formula_in_float64():
    """s * (W_up dropout(ReLU(W_down x + b_down)) + b_up), dropout off."""
    adapter = randomise(AdaptFormerAdapter(6, 4, scale=0.1)).double().eval()
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    Wd, bd = adapter.down.weight, adapter.down.bias
    Wu, bu = adapter.up.weight, adapter.up.bias
    expected = 0.1 * (torch.clamp(x @ Wd.T + bd, min=0) @ Wu.T + bu)
    torch.testing.assert_close(adapter(x, (1, 5)), expected,
                               rtol=1e-12, atol=1e-12)
    adapter.parallel = False  # a sequential site: x + delta
    torch.testing.assert_close(adapter(x, (1, 5)), x + expected,
                               rtol=1e-12, atol=1e-12)


def test_official_initialisation_and_reset():
    """down: Kaiming-uniform a=sqrt(5) (bound 1/sqrt(C)); up and both
    biases zero; reset_parameters brings it back."""
    torch.manual_seed(0)
    adapter = AdaptFormerAdapter(256, 64)
    for _ in range(2):
        bound = 1 / math.sqrt(256)
        w = adapter.down.weight.detach()
        assert w.abs().max() <= bound and w.abs().max() > 0.95 * bound
        assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)
        for p in (adapter.down.bias, adapter.up.weight, adapter.up.bias):
            assert not p.any()
        x = torch.randn(3, 256)
        assert not adapter(x).any()  # a zero delta: the frozen model
        randomise(adapter)
        adapter.reset_parameters()
    randomise(adapter)
    adapter.switch_off()
    assert not adapter(torch.randn(3, 256)).any()


def test_dropout_sits_after_the_relu():
    adapter = randomise(AdaptFormerAdapter(8, 6, dropout=0.5)).train()
    seen = {}
    adapter.dropout.register_forward_hook(
        lambda m, args, out: seen.update(inp=args[0], out=out))
    adapter.up.register_forward_pre_hook(
        lambda m, args: seen.update(up=args[0]))
    x = torch.randn(4, 8)
    adapter(x)
    torch.testing.assert_close(seen['inp'], torch.relu(adapter.down(x)))
    assert seen['up'] is seen['out']
    zeroed = (seen['out'] == 0) & (seen['inp'] > 0)
    assert zeroed.any()  # the dropout acts in train mode
    torch.testing.assert_close(seen['out'][~zeroed & (seen['inp'] > 0)],
                               2 * seen['inp'][~zeroed & (seen['inp'] > 0)])


@pytest.mark.parametrize('host, attr', [('Swin', 'mlp_adapter'),
                                        ('ConvNeXt', 'parallel_adapter'),
                                        ('VMamba', 'mlp_adapter')])
def test_one_parallel_adapter_per_block_and_its_count(host, attr):
    d = 8
    model = build(host, hidden_dim=d)
    adapters = 0
    for dim, blocks in model.peft_stages():
        for block in blocks:
            found = [m for m in block.children()
                     if isinstance(m, AdaptFormerAdapter)]
            assert len(found) == 1 and found[0] is block._modules[attr]
            assert found[0].parallel
            n = sum(p.numel() for p in found[0].parameters())
            assert n == 2 * dim * d + d + dim
            adapters += n
    assert adapters == sum(
        (2 * c * d + d + c) * n for c, n in zip(WIDTHS, DEPTHS))
    groups = model.peft_components()
    assert sum(dict(model.named_parameters())[n].numel()
               for n in groups['adapters']) == adapters


def test_swin_block_adds_the_delta_of_the_stream_before_norm2():
    """out = x1 + MLP(LN(x1)) + s * up(relu(down(x1))), x1 after the
    attention residual (official ``Block.forward``, ffn_option parallel)."""
    model = randomise(build('Swin', dropout=0.)).double().eval()
    block = model.stages[1].blocks[1]
    adapter = block.mlp_adapter
    x = torch.randn(2, 30, 32, dtype=torch.float64)
    hw = (6, 5)
    with torch.no_grad():
        out = model.forward_block(block, x, hw)
        x1 = x + block.attn(block.norm1(x), hw)
        delta = 0.1 * (torch.relu(x1 @ adapter.down.weight.T +
                                  adapter.down.bias) @ adapter.up.weight.T +
                       adapter.up.bias)
        expected = block.ffn(block.norm2(x1), identity=x1) + delta
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_convnext_block_adds_the_delta_of_the_block_input():
    model = randomise(build('ConvNeXt', dropout=0.)).double().eval()
    block = model.stages[1][0]
    adapter = block.parallel_adapter
    x = torch.randn(2, 32, 6, 5, dtype=torch.float64)
    with torch.no_grad():
        out = model.forward_block(block, x)
        tokens = x.permute(0, 2, 3, 1)
        delta = 0.1 * (torch.relu(tokens @ adapter.down.weight.T +
                                  adapter.down.bias) @ adapter.up.weight.T +
                       adapter.up.bias)
        expected = block(x) + delta.permute(0, 3, 1, 2)  # the frozen block
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_vmamba_block_adds_the_delta_of_the_stream_before_norm2():
    model = randomise(build('VMamba', dropout=0.)).eval()
    block = model.layers[1].blocks[0]
    adapter = block.mlp_adapter
    x = torch.randn(2, 32, 6, 5)
    with torch.no_grad():
        out = model.forward_block(block, x)
        x1 = block.forward_ssm(x)
        tokens = x1.permute(0, 2, 3, 1)
        delta = 0.1 * (torch.relu(tokens @ adapter.down.weight.T +
                                  adapter.down.bias) @ adapter.up.weight.T +
                       adapter.up.bias)
        expected = block.forward_mlp(x1) + delta.permute(0, 3, 1, 2)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_defaults_are_the_official_recipe():
    method = AdaptFormer()
    assert (method.hidden_dim, method.scale, method.dropout) == (64, 0.1, 0.1)
    model = build('Swin')
    adapter = model.stages[0].blocks[0].mlp_adapter
    assert adapter.scale == 0.1 and adapter.dropout.p == 0.1


def test_a_sequential_site_adds_the_delta_to_its_input():
    model = randomise(build('Swin', sites=['post_mlp'], dropout=0.))
    model = model.double().eval()
    block = model.stages[1].blocks[0]
    adapter = block.adapter2
    assert not adapter.parallel and 'mlp_adapter' not in block._modules
    x = torch.randn(2, 30, 32, dtype=torch.float64)
    with torch.no_grad():
        out = model.forward_block(block, x, (6, 5))
        y = block(x, (6, 5))  # the frozen block alone
        delta = 0.1 * (torch.relu(y @ adapter.down.weight.T +
                                  adapter.down.bias) @ adapter.up.weight.T +
                       adapter.up.bias)
    torch.testing.assert_close(out, y + delta, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('kwargs, match', [
    (dict(hidden_dim=0), 'AdaptFormer: hidden_dim must be a positive integer'),
    (dict(hidden_dim=8.0), 'hidden_dim must be a positive integer, got 8.0'),
    (dict(hidden_dim=True), 'hidden_dim must be a positive integer'),
    (dict(scale='0.1'), "AdaptFormer: scale must be a number.*'0.1'"),
    (dict(dropout=1.0), r'AdaptFormer: dropout must be a number in \[0, 1\)'),
    (dict(dropout=-0.1), r'dropout must be .*got -0.1'),
    (dict(sites='mlp_parallel'), 'AdaptFormer: sites must be a list'),
])
def test_bad_arguments_fail_at_construction(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        AdaptFormer(**kwargs)


def test_a_site_the_host_lacks_names_method_host_and_offer():
    with pytest.raises(ValueError) as info:
        build('ConvNeXt', sites=['mlp_parallel'])
    message = str(info.value)
    assert 'AdaptFormer' in message and 'ConvNeXt' in message
    assert "'block_parallel'" in message
