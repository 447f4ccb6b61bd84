"""Layer methods on 1x1 convolutions and on layers named by pattern.

A tiny PoolFormer-like host (:class:`TinyConvHost`: a BatchNorm, a
depthwise token mixer and an MLP of two 1x1 convs per block) next to its
twin whose MLP is two channels-last linears: LoRA and SNELL on the convs
compute what they compute on the linears, merge into the conv weights and
unmerge exactly.
"""
import warnings

import pytest
import torch

from mmparax.registry import PEFT_METHODS
from mmparax.testing.peft import METHODS, build_pair, hosts_of, perturb
from mmparax.testing.tiny_host import TinyConvHost

LAYER_METHODS = dict(
    LoRA=dict(type='LoRA', rank=3, alpha=2.),
    SNELL=dict(type='SNELL', rank=4, sparsity=0.5, with_cp=False))
#: methods that fold into 1x1 convs: the layer updates, and RepAdapter's
#: adapter at mlp_in into fc1
MERGING = dict(
    LAYER_METHODS,
    RepAdapter=dict(type='RepAdapter', hidden_dim=4, dropout=0.,
                    sites=['mlp_in']))


def toy_pair(peft, dtype=torch.float64):
    """(1x1-conv host, linear host) with equal weights, both perturbed."""
    torch.manual_seed(0)
    conv = TinyConvHost(True, peft=peft).to(dtype)
    linear = TinyConvHost(False, peft=peft).to(dtype)
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


@pytest.mark.parametrize('method', MERGING)
def test_an_update_of_a_1x1_conv_is_the_update_of_the_linear(method):
    conv, linear = toy_pair(MERGING[method])
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


@pytest.mark.parametrize('method', MERGING)
def test_an_update_of_a_1x1_conv_merges_and_unmerges_exactly(method):
    conv, _ = toy_pair(MERGING[method])
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
    assert changed and all('.mlp.fc' in n for n in changed)
    folded = [n for n in changed if n.endswith('.weight')]
    assert folded and all(conv.get_parameter(n).shape[2:] == (1, 1)
                          for n in folded)
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
        TinyConvHost(True, peft=peft)


MLP = r're:stages\.\d+\.\d+\.mlp\.fc\d'


@pytest.mark.parametrize('method', LAYER_METHODS)
def test_a_pattern_names_the_layers_its_aliases_name(method):
    by_alias = TinyConvHost(peft=dict(LAYER_METHODS[method],
                                 targets=['fc1', 'fc2']))
    by_pattern = TinyConvHost(peft=dict(LAYER_METHODS[method], targets=[MLP]))
    assert by_alias.peft.targets == ('fc1', 'fc2')
    names = list(trainable(by_alias))
    assert names and list(trainable(by_pattern)) == names
    x = inputs(torch.float32)
    perturb(by_alias)
    by_pattern.load_state_dict(by_alias.state_dict())
    for a, b in zip(by_alias.eval()(x), by_pattern.eval()(x)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_pattern_matches_whole_names():
    model = TinyConvHost(
        peft=dict(type='LoRA', targets=[r're:stages\.1\..*fc2']))
    assert sorted(n for n in trainable(model)) == [
        f'stages.1.{j}.mlp.fc2.lora.{p}' for j in (0, 1) for p in 'AB']
    with pytest.raises(ValueError, match='matches no module'):
        # not a search
        TinyConvHost(peft=dict(type='LoRA', targets=['re:fc2']))


def test_a_pattern_that_matches_nothing_names_the_candidates():
    with pytest.raises(ValueError) as error:
        TinyConvHost(peft=dict(type='LoRA', targets=[r're:.*\.ffn\.fc\d']))
    message = str(error.value)
    assert r"'re:.*\.ffn\.fc\d' matches no module of TinyConvHost" in message
    assert 'downs.0, stages.0.0.mlp.fc1, stages.0.0.mlp.fc2' in message
    assert 'stages.0.1.mlp.fc1' not in message  # one per kind of name


def test_a_pattern_that_matches_a_module_that_is_not_linear_is_refused():
    with pytest.raises(ValueError,
                       match=r'LoRA cannot update stages\.0\.0\.mlp '
                       r"\(re:.*\): it is a Sequential, not a linear layer"):
        TinyConvHost(peft=dict(type='LoRA', targets=[r're:.*\.mlp(\.fc\d)?']))


def test_a_pattern_that_is_no_regular_expression_is_refused():
    with pytest.raises(ValueError,
                       match=r"layer pattern 're:\.\*\(' is not a regular "
                       'expression'):
        TinyConvHost(peft=dict(type='LoRA', targets=['re:.*(']))


def test_a_layer_named_twice_is_refused():
    with pytest.raises(ValueError,
                       match=r'stages\.0\.0\.mlp\.fc1 is named by two '
                       r"targets, 'fc1' and 're:.*fc1'"):
        TinyConvHost(peft=dict(type='LoRA', targets=['fc1', 're:.*fc1']))



def test_a_width_larger_than_a_stage_warns_naming_it():
    with pytest.warns(UserWarning) as record:
        TinyConvHost(peft=dict(type='LoRA', rank=12))  # stages of 8, 16
    messages = [str(w.message) for w in record]
    assert len(messages) == 1
    assert messages[0].startswith('LoRA: rank=12 is larger than the 8 '
                                  'channels of stage 0 of TinyConvHost')
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        TinyConvHost(peft=dict(type='LoRA', rank=8))


@pytest.mark.parametrize(
    'method', [m for m, cls in PEFT_METHODS.module_dict.items()
               if cls.width_setting is not None])
def test_every_method_with_a_width_warns_on_a_narrow_stage(method):
    host = hosts_of(method)[0]
    setting = PEFT_METHODS.get(method).width_setting
    channels = build_pair(host).peft_stages()[0][0]
    peft = dict(METHODS[method], **{setting: 2 * channels})
    with pytest.warns(UserWarning,
                      match=rf'{method}: {setting}={2 * channels} is larger '
                      rf'than the {channels} channels of stage 0'):
        try:
            build_pair(host, peft)
        except ValueError as error:  # CoLoRA: r must divide C
            assert 'must divide' in str(error)


def test_only_vpt_has_no_width():
    assert [m for m, cls in PEFT_METHODS.module_dict.items()
            if cls.width_setting is None] == ['VPT']
