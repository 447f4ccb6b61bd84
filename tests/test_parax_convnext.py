"""ConvNeXt and ParaXConvNeXt: equivalence with mmpretrain's ConvNeXt, strict
loading of Facebook and OpenMMLab checkpoints, counts and the freeze."""
import re

import pytest
import torch
from mmpretrain.models.backbones import ConvNeXt as MMPretrainConvNeXt

from mmparax.models import ConvNeXt, ParaXConvNeXt
from mmparax.models.backbones.convnext import (
    _facebook_to_mmpretrain_own,
    _mmpretrain_converter,
    facebook_to_mmpretrain,
)
from mmparax.testing import (
    convnext_to_facebook,
    swin_to_microsoft,
    switch_off,
    tiny_convnext_kwargs,
    tiny_convnext_state_dict,
    tiny_swin_state_dict,
    write_checkpoint,
)

PARAX = dict(hidden_dim=8, router_hidden=4)
OUTPUT_NORM = re.compile(r'^norm\d+\.')


def build(cls=ParaXConvNeXt, checkpoint=None, **overrides):
    kwargs = tiny_convnext_kwargs(**overrides)
    if cls is ParaXConvNeXt:
        kwargs.setdefault('parax', PARAX)
    if checkpoint is not None:
        kwargs['init_cfg'] = dict(
            type='Pretrained', checkpoint=str(checkpoint))
    torch.manual_seed(0)
    return cls(**kwargs)


@pytest.fixture(scope='module')
def source():
    """mmpretrain-layout tiny ConvNeXt weights, every tensor random."""
    return tiny_convnext_state_dict(seed=1, random_all=True)


def imagenet_part(state_dict):
    """What an ImageNet checkpoint provides: no per-output norms."""
    return {k: v for k, v in state_dict.items() if not OUTPUT_NORM.match(k)}


def test_switched_off_equals_plain_mmpretrain_convnext(source):
    kwargs = tiny_convnext_kwargs()
    plain = MMPretrainConvNeXt(
        arch=kwargs['arch'],
        out_indices=[0, 1, 2, 3],
        gap_before_final_norm=False,
        drop_path_rate=kwargs['drop_path_rate'])
    plain.eval()  # mmpretrain's train() returns None
    plain.load_state_dict(source)
    adapted = build().eval()
    missing, unexpected = adapted.load_state_dict(source, strict=False)
    assert not unexpected
    assert missing and all('.adapter.' in k or k.startswith('expert_centers.')
                           for k in missing)
    switch_off(adapted)
    x = torch.randn(2, 3, 70, 90)
    with torch.no_grad():
        expected = plain(x)
        outs = adapted(x)
        assert len(outs) == 4
        for a, b in zip(outs, expected):
            assert a.shape == b.shape
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        # switched on, the adapters change the output
        adapted.stages[0][0].adapter.layer_scale.fill_(1.0)
        assert not torch.allclose(adapted(x)[0], expected[0])


def test_adapter_after_the_complete_block():
    """Block j's adapter sees the output of block j (residual included), as
    mmpretrain's block computes it from the block's input."""
    model = build(drop_path_rate=0.0).eval()
    block = model.stages[1][1]
    seen = {}

    def grab(name):
        def hook(module, args):
            seen[name] = args[0].detach().clone()
        return hook

    block.adapter.register_forward_pre_hook(grab('adapter_in'))
    block.depthwise_conv.register_forward_pre_hook(grab('block_in'))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
        block_out = block(seen['block_in'])  # mmpretrain's forward
    torch.testing.assert_close(
        seen['adapter_in'], block_out.flatten(2).transpose(1, 2),
        rtol=0, atol=0)


# -- checkpoints --------------------------------------------------------------
def test_converters(source):
    facebook = convnext_to_facebook(source, num_classes=10)
    assert 'stages.0.0.dwconv.weight' in facebook
    assert 'stages.3.1.pwconv2.weight' in facebook
    assert 'downsample_layers.0.0.weight' in facebook
    assert facebook['head.weight'].shape == (10, 128)
    assert facebook['norm.weight'].shape == (128, )
    assert not any(OUTPUT_NORM.match(k) for k in facebook)
    own = _facebook_to_mmpretrain_own(facebook)
    if _mmpretrain_converter() is not None:  # mmpretrain's script agrees
        theirs = facebook_to_mmpretrain(facebook)
        assert list(theirs) == list(own)
        assert all(theirs[k] is own[k] for k in own)
    back = {
        k[len('backbone.'):]: v
        for k, v in own.items() if k.startswith('backbone.')
    }
    for key, value in imagenet_part(source).items():
        assert torch.equal(back[key], value), key
    assert torch.equal(back['norm3.weight'], source['norm3.weight'])
    assert set(k for k in own if not k.startswith('backbone.')) == {
        'head.fc.weight', 'head.fc.bias'
    }


@pytest.mark.parametrize('cls', [ParaXConvNeXt, ConvNeXt])
def test_facebook_checkpoint_loads_exactly(tmp_path, source, cls):
    path = write_checkpoint(
        str(tmp_path / 'convnext_tiny_22k.pth'),
        convnext_to_facebook(source, num_classes=21841))
    model = build(cls, checkpoint=path)
    reference = build(cls)
    model.init_weights()
    own = model.state_dict()
    expected = imagenet_part(source)
    pretrained = set(model.peft_components()['pretrained'])
    assert pretrained == set(expected)
    for key, value in expected.items():
        assert torch.equal(own[key], value), key
    # the classifier norm is not loaded: output norms and ParaX parameters
    # keep their initialisation
    ref = reference.state_dict()
    for key in set(own) - set(expected):
        assert torch.equal(own[key], ref[key]), key


def test_openmmlab_checkpoint_loads_like_facebook(tmp_path, source):
    facebook = convnext_to_facebook(source)
    fb_path = write_checkpoint(str(tmp_path / 'fb.pth'), facebook)
    mm_path = write_checkpoint(
        str(tmp_path / 'mm.pth'),
        facebook_to_mmpretrain(facebook),
        wrapper='state_dict')
    models = [build(checkpoint=p) for p in (fb_path, mm_path)]
    for m in models:
        m.init_weights()
    a, b = (m.state_dict() for m in models)
    assert set(a) == set(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_mismatched_checkpoints_raise(tmp_path, source):
    facebook = convnext_to_facebook(source)
    # another width
    wider = tiny_convnext_state_dict(
        arch=dict(depths=[2, 2, 2, 2], channels=[16, 32, 64, 96]))
    cases = {
        'shape': convnext_to_facebook(wider),
        'missing': {
            k: v
            for k, v in facebook.items() if k != 'stages.2.1.pwconv1.weight'
        },
        'unknown': dict(facebook,
                        **{'stages.0.0.extra.weight': torch.ones(1)}),
        'swin': swin_to_microsoft(tiny_swin_state_dict()),
    }
    for name, state in cases.items():
        path = write_checkpoint(str(tmp_path / f'{name}.pth'), state)
        model = build(checkpoint=path)
        with pytest.raises(RuntimeError, match='does not fit'):
            model.init_weights()
    # deeper model than the checkpoint
    model = build(
        checkpoint=write_checkpoint(str(tmp_path / 'ok.pth'), facebook),
        arch=dict(depths=[2, 2, 3, 2], channels=[16, 32, 64, 128]))
    with pytest.raises(RuntimeError, match='missing'):
        model.init_weights()


# -- counts and freeze -------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize('arch, router_hidden, expected', [
    ('base', 16, 6_456_000),
    ('large', 16, 9_156_096),
    ('base', 24, 6_630_912),
    ('large', 24, 9_403_200),
])
def test_exact_trainable_counts(arch, router_hidden, expected):
    model = ParaXConvNeXt(
        arch=arch, parax=dict(router_hidden=router_hidden))
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    del model
    assert n == expected


def test_freeze_set():
    model = build()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    for name, _ in model.named_parameters():
        parts = name.split('.')
        is_peft = 'adapter' in parts or parts[0] == 'expert_centers'
        is_out_norm = parts[0] in ('norm0', 'norm1', 'norm2', 'norm3')
        assert (name in trainable) == (is_peft or is_out_norm), name
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert {n.split('.')[0] for n in frozen} == {'downsample_layers', 'stages'}
    assert 'stages.2.1.gamma' in frozen
    assert 'downsample_layers.0.1.weight' in frozen
    groups = model.peft_components()
    assert set(groups) == {
        'adapters', 'expert_centers', 'output_norms', 'pretrained'
    }
    assert set(groups['pretrained']) == frozen
    # frozen names are those of mmpretrain's ConvNeXt
    plain = MMPretrainConvNeXt(
        arch=tiny_convnext_kwargs()['arch'], out_indices=[0, 1, 2, 3])
    assert set(dict(plain.named_parameters())) - {
        f'norm{i}.{w}' for i in range(4) for w in ('weight', 'bias')
    } == frozen
    # train() keeps the freeze and drop path active in frozen blocks
    assert model.train() is model
    assert {n for n, p in model.named_parameters() if p.requires_grad} \
        == trainable
    assert model.stages[3][1].drop_path.training


def test_one_center_per_stage_and_reference_init():
    model = build()
    for i, stage in enumerate(model.stages):
        assert len(model.expert_centers[i]) == 1
        assert model.expert_centers[i][0].num_experts == len(stage)
        for block in stage:
            assert block.adapter.num_experts == len(stage)
    assert model.stages[0][0].adapter.layer_init == 'trunc_normal'
    assert build(parax=dict(PARAX, layer_init='kaiming_uniform')) \
        .stages[0][0].adapter.layer_init == 'kaiming_uniform'
    torch.manual_seed(0)
    model(torch.randn(1, 3, 32, 32))[3].square().sum().backward()
    for centers in model.expert_centers:
        assert centers[0].down.grad.abs().sum() > 0
    assert all(p.grad is None for n, p in model.named_parameters()
               if not p.requires_grad)


def test_frozen_stages_refused():
    with pytest.raises(ValueError, match='frozen_stages'):
        build(frozen_stages=1)
