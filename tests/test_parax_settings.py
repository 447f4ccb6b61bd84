"""Every ParaX setting given in a config reaches the modules it builds."""
import math

import pytest
import torch
import torch.nn as nn

from mmparax.models import ConvNeXt, Swin, VMamba
from mmparax.peft import ExpertCenter, ParaXAdapter
from mmparax.testing import tiny_convnext_kwargs, tiny_swin_kwargs

DEPTHS = (2, 2, 4, 2)
BASE = dict(type='ParaX', hidden_dim=8, router_hidden=4)


def build(**settings):
    return Swin(
        peft=dict(BASE, **settings), **tiny_swin_kwargs(depths=DEPTHS))


def adapters(model):
    found = [m for m in model.modules() if isinstance(m, ParaXAdapter)]
    assert len(found) == 2 * sum(DEPTHS)
    return found


def centers(model):
    return [m for m in model.modules() if isinstance(m, ExpertCenter)]


# setting -> value -> what every adapter / center must show
CASES = {
    'hidden_dim': (12,
                   lambda a: a.hidden_dim == 12 and a.proj.in_features == 12,
                   lambda c: c.hidden_dim == 12 and c.down.shape[1] == 12),
    'kernel_sizes': ((5, 7, 9), lambda a: a.kernel_sizes == (5, 7, 9),
                     lambda c: set(c.kernels) == {'5x5', '7x7', '9x9'}),
    'with_conv': (False, lambda a: not a.with_conv and not hasattr(
        a, 'dwconv1') and a.scale_attn is None,
                  lambda c: len(c.kernels) == 0),
    'scale_attention': (False, lambda a: a.scale_attn is None, None),
    'layout': ('parallel',
               lambda a: a.layout == 'parallel' and a.cascade_scale is None,
               None),
    'router_hidden': (6, lambda a: a.router[0].out_features == 6, None),
    'router_act': ('sigmoid', lambda a: a.router_act == 'sigmoid', None),
    'top_k': (1, lambda a: a.top_k == 1, None),
    'num_experts': (3, lambda a: a.num_experts == 3,
                    lambda c: c.num_experts == 3),
    'expert_init': ('kaiming_normal', None,
                    lambda c: c.init == 'kaiming_normal'),
    'layer_init': ('trunc_normal', lambda a: a.layer_init == 'trunc_normal',
                   None),
    'layer_scale': (1e-5, lambda a: torch.all(a.layer_scale == 1e-5)
                    and torch.all(a.layer_bias == 0), None),
    'res_scale': (None, lambda a: not hasattr(a, 'res_scale')
                  and not hasattr(a, 'res_bias'), None),
}


@pytest.mark.parametrize('setting', list(CASES))
def test_setting_reaches_every_adapter_and_center(setting):
    value, adapter_check, center_check = CASES[setting]
    default = build()
    model = build(**{setting: value})
    if adapter_check is not None:
        assert all(adapter_check(a) for a in adapters(model)), setting
        assert not all(adapter_check(a) for a in adapters(default)), setting
    if center_check is not None:
        assert all(center_check(c) for c in centers(model)), setting
        assert not all(center_check(c) for c in centers(default)), setting


@pytest.mark.parametrize('ratio, blocks_per_center, experts', [
    (1.0, None, [[2], [2], [4], [2]]),
    (2.0, None, [[4], [4], [8], [4]]),
    (0.5, None, [[1], [1], [2], [1]]),
    (1.0, 2, [[2], [2], [2, 2], [2]]),
    (1.0, (None, None, 1, None), [[2], [2], [1, 1, 1, 1], [2]]),
])
def test_expert_ratio_and_center_scope(ratio, blocks_per_center, experts):
    model = build(expert_ratio=ratio, blocks_per_center=blocks_per_center)
    assert [[c.num_experts for c in stage] for stage in model.expert_centers
            ] == experts
    for i, stage in enumerate(model.stages):
        size = DEPTHS[i] // len(experts[i])
        for j, block in enumerate(stage.blocks):
            for adapter in (block.adapter1, block.adapter2):
                assert adapter.center_key == (i, j // size)
                assert adapter.num_experts == experts[i][j // size]


def test_rank_is_refused_naming_hidden_dim():
    """ParaX's bottleneck width is ``hidden_dim``; ``rank`` (the name of a
    low-rank update's rank) is refused with the fix."""
    settings = dict(BASE)
    settings['rank'] = settings.pop('hidden_dim')
    with pytest.raises(TypeError,
                       match=r'write hidden_dim=8 instead of rank=8'):
        Swin(peft=settings, **tiny_swin_kwargs(depths=DEPTHS))
    with pytest.raises(TypeError, match='hidden_dim=4 instead of rank=4'):
        ParaXAdapter(16, rank=4)


def test_sites_setting():
    model = build(sites=['post_mlp'])
    block = model.stages[0].blocks[0]
    assert isinstance(block.adapter2, ParaXAdapter)
    assert not hasattr(block, 'adapter1')


def test_trunc_normal_linear_init_of_the_reference_vmamba():
    """Linear layers from a truncated normal with zero biases, depthwise
    convs at PyTorch's default init (non-zero biases)."""
    torch.manual_seed(0)
    model = VMamba(
        arch=dict(dims=64, depths=(2, 2, 2, 2), ssm_ratio=2.0),
        peft=dict(BASE, hidden_dim=32, layer_init='trunc_normal_linear'))
    adapter = model.layers[3].blocks[0].adapter1
    assert adapter.proj.weight.std().item() == pytest.approx(0.02, rel=0.15)
    assert torch.all(adapter.proj.bias == 0)
    conv = adapter.dwconv1
    bound = 1 / math.sqrt(9)  # PyTorch's default for a 3x3 depthwise conv
    assert conv.weight.abs().max() <= bound
    assert conv.weight.std() > 0.1  # not std 0.02
    assert conv.bias.abs().max() > 0 and conv.bias.abs().max() <= bound


def test_reference_inits_per_host_recipe():
    """The ConvNeXt recipes ask for trunc_normal, the VMamba recipe for
    trunc_normal_linear; the Swin default is PyTorch's Kaiming with zero
    biases."""
    from mmengine.config import Config
    root = 'configs/parax/parax_'
    ade = '_upernet_8xb2-160k_ade20k-512x512.py'
    inits = {
        name: Config.fromfile(f'{root}{name}{ade}').model.backbone.peft.get(
            'layer_init', 'kaiming_uniform')
        for name in ('swin-b', 'convnext-b', 'vmamba-b')
    }
    assert inits == {
        'swin-b': 'kaiming_uniform',
        'convnext-b': 'trunc_normal',
        'vmamba-b': 'trunc_normal_linear'
    }
    torch.manual_seed(0)
    convnext = ConvNeXt(peft=dict(BASE, layer_init='trunc_normal'),
                        **tiny_convnext_kwargs())
    conv = convnext.stages[0][0].adapter.dwconv1
    assert torch.all(conv.bias == 0)
    assert conv.weight.std().item() == pytest.approx(0.02, rel=0.3)
    swin_conv = adapters(build())[0].dwconv1
    assert torch.all(swin_conv.bias == 0)
    assert isinstance(swin_conv, nn.Conv2d)
