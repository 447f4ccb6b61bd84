"""Layer methods on 1x1 convolutions and on layers named by pattern.

A tiny PoolFormer-like host (a BatchNorm, a depthwise token mixer and an
MLP of two 1x1 convs per block) next to its twin whose MLP is two
channels-last linears: LoRA and SNELL on the convs compute what they
compute on the linears, merge into the conv weights and unmerge exactly.
"""
import pytest
import torch
import torch.nn as nn
from mmengine.model import BaseModule

from mmparax.models.backbones.host import PEFTHostMixin
from mmparax.testing.peft import perturb


class ToyBlock(nn.Module):

    def __init__(self, dim: int, conv: bool):
        super().__init__()
        self.conv = conv
        self.norm = nn.BatchNorm2d(dim)
        self.mixer = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        layer = (lambda i, o: nn.Conv2d(i, o, 1)) if conv else nn.Linear
        self.mlp = nn.Sequential()
        self.mlp.add_module('fc1', layer(dim, 2 * dim))
        self.mlp.add_module('act', nn.GELU())
        self.mlp.add_module('fc2', layer(2 * dim, dim))

    def forward(self, x):
        """[B, C, H, W] -> same."""
        x = x + self.mixer(self.norm(x))
        if self.conv:
            return x + self.mlp(x)
        return x + self.mlp(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ToyHost(PEFTHostMixin, BaseModule):
    """Two stages of two :class:`ToyBlock` each, widths ``dims``; the MLPs
    are 1x1 convs (``conv``) or linears. Returns the stages' maps."""

    layer_aliases = dict(fc1='stages.*.*.mlp.fc1', fc2='stages.*.*.mlp.fc2',
                         mixer='stages.*.*.mixer')
    out_indices = (0, 1)

    def __init__(self, conv=True, dims=(8, 16), peft=None):
        super().__init__()
        self.frozen_stages, self.with_cp = -1, False
        self.stem = nn.Conv2d(3, dims[0], 3, stride=2, padding=1)
        self.downs = nn.ModuleList(
            nn.Conv2d(a, b, 1) for a, b in zip(dims, dims[1:]))
        self.stages = nn.ModuleList(
            nn.Sequential(ToyBlock(d, conv), ToyBlock(d, conv)) for d in dims)
        self.init_peft(peft)

    def peft_stages(self):
        return [(stage[0].norm.num_features, list(stage))
                for stage in self.stages]

    def new_module_names(self):
        return []

    def forward(self, x):
        x, outs = self.stem(x), []
        for i, stage in enumerate(self.stages):
            if i:
                x = self.downs[i - 1](x)
            x = stage(x)
            outs.append(x)
        return tuple(outs)


LAYER_METHODS = dict(
    LoRA=dict(type='LoRA', rank=3, alpha=2.),
    SNELL=dict(type='SNELL', rank=4, sparsity=0.5, with_cp=False))


def toy_pair(peft, dtype=torch.float64):
    """(1x1-conv host, linear host) with equal weights, both perturbed."""
    torch.manual_seed(0)
    conv = ToyHost(True, peft=peft).to(dtype)
    linear = ToyHost(False, peft=peft).to(dtype)
    perturb(conv)
    shapes = {k: v.shape for k, v in linear.state_dict().items()}
    linear.load_state_dict(
        {k: v.reshape(shapes[k]) for k, v in conv.state_dict().items()})
    return conv, linear


def inputs(dtype=torch.float64):
    torch.manual_seed(3)
    return torch.randn(2, 3, 12, 12, dtype=dtype)


def trainable(model):
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize('method', LAYER_METHODS)
def test_an_update_of_a_1x1_conv_is_the_update_of_the_linear(method):
    conv, linear = toy_pair(LAYER_METHODS[method])
    x = inputs()
    out_conv, out_linear = conv.eval()(x), linear.eval()(x)
    for a, b in zip(out_conv, out_linear):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    sum(o.square().sum() for o in out_conv).backward()
    sum(o.square().sum() for o in out_linear).backward()
    grads = {n: p.grad for n, p in trainable(linear).items()}
    assert set(trainable(conv)) == set(grads) and grads
    for name, p in trainable(conv).items():
        torch.testing.assert_close(p.grad, grads[name], rtol=0, atol=1e-10)


@pytest.mark.parametrize('method', LAYER_METHODS)
def test_an_update_of_a_1x1_conv_merges_and_unmerges_exactly(method):
    conv, _ = toy_pair(LAYER_METHODS[method])
    conv.eval()
    x = inputs()
    weights = {n: p.clone() for n, p in conv.named_parameters()
               if not p.requires_grad}
    with torch.no_grad():
        before = conv(x)
        conv.peft.merge(conv)
        merged = conv(x)
    changed = [n for n, p in conv.named_parameters()
               if not p.requires_grad and not torch.equal(p, weights[n])]
    assert changed and all('.mlp.fc' in n and n.endswith('.weight')
                           for n in changed)
    assert all(conv.get_parameter(n).shape[2:] == (1, 1) for n in changed)
    for a, b in zip(merged, before):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    conv.peft.unmerge(conv)
    assert all(torch.equal(p, weights[n]) for n, p in conv.named_parameters()
               if not p.requires_grad)
    with torch.no_grad():
        for a, b in zip(conv(x), before):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize('method', LAYER_METHODS)
def test_the_updates_of_1x1_convs_are_counted_exactly(method):
    conv, linear = toy_pair(LAYER_METHODS[method])
    # per block: fc1 C -> 2C, fc2 2C -> C, for C = 8, 8, 16, 16
    shapes = [(c, 2 * c) for c in (8, 8, 16, 16) for _ in (0, 1)]
    if method == 'LoRA':  # A [3, in], B [out, 3]
        expected = sum(3 * (c + h) for c, h in shapes)
    else:  # A [1, in, 4], B [1, out, 4]
        expected = sum(4 * (c + h) for c, h in shapes)
    for model in (conv, linear):
        assert sum(p.numel() for p in trainable(model).values()) == expected
        assert set(trainable(model)) == set(model.peft_trainable_names())
        assert sum(len(v) for k, v in model.peft_components().items()
                   if k != 'pretrained') == 16


@pytest.mark.parametrize('method', LAYER_METHODS)
def test_a_conv_that_is_not_1x1_is_refused_naming_it(method):
    peft = dict(LAYER_METHODS[method], targets=['mixer'])
    with pytest.raises(ValueError,
                       match=r'stages\.0\.0\.mixer \(mixer\).*Conv2d with '
                       r'kernel \(3, 3\), padding \(1, 1\), groups 8.*1x1'):
        ToyHost(True, peft=peft)


MLP = r're:stages\.\d+\.\d+\.mlp\.fc\d'


@pytest.mark.parametrize('method', LAYER_METHODS)
def test_a_pattern_names_the_layers_its_aliases_name(method):
    by_alias = ToyHost(peft=dict(LAYER_METHODS[method],
                                 targets=['fc1', 'fc2']))
    by_pattern = ToyHost(peft=dict(LAYER_METHODS[method], targets=[MLP]))
    assert by_alias.peft.targets == ('fc1', 'fc2')
    names = list(trainable(by_alias))
    assert names and list(trainable(by_pattern)) == names
    x = inputs(torch.float32)
    perturb(by_alias)
    by_pattern.load_state_dict(by_alias.state_dict())
    for a, b in zip(by_alias.eval()(x), by_pattern.eval()(x)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_pattern_matches_whole_names():
    model = ToyHost(peft=dict(type='LoRA', targets=[r're:stages\.1\..*fc2']))
    assert sorted(n for n in trainable(model)) == [
        f'stages.1.{j}.mlp.fc2.lora.{p}' for j in (0, 1) for p in 'AB']
    with pytest.raises(ValueError, match='matches no module'):
        ToyHost(peft=dict(type='LoRA', targets=['re:fc2']))  # not a search


def test_a_pattern_that_matches_nothing_names_the_candidates():
    with pytest.raises(ValueError) as error:
        ToyHost(peft=dict(type='LoRA', targets=[r're:.*\.ffn\.fc\d']))
    message = str(error.value)
    assert r"'re:.*\.ffn\.fc\d' matches no module of ToyHost" in message
    assert 'downs.0, stages.0.0.mlp.fc1, stages.0.0.mlp.fc2' in message
    assert 'stages.0.1.mlp.fc1' not in message  # one per kind of name


def test_a_pattern_that_matches_a_module_that_is_not_linear_is_refused():
    with pytest.raises(ValueError,
                       match=r'LoRA cannot update stages\.0\.0\.mlp '
                       r"\(re:.*\): it is a Sequential, not a linear layer"):
        ToyHost(peft=dict(type='LoRA', targets=[r're:.*\.mlp(\.fc\d)?']))


def test_a_pattern_that_is_no_regular_expression_is_refused():
    with pytest.raises(ValueError,
                       match=r"layer pattern 're:\.\*\(' is not a regular "
                       'expression'):
        ToyHost(peft=dict(type='LoRA', targets=['re:.*(']))


def test_a_layer_named_twice_is_refused():
    with pytest.raises(ValueError,
                       match=r'stages\.0\.0\.mlp\.fc1 is named by two '
                       r"targets, 'fc1' and 're:.*fc1'"):
        ToyHost(peft=dict(type='LoRA', targets=['fc1', 're:.*fc1']))
