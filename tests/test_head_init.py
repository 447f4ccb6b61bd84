"""``head_init``: how training initialises the heads and necks.

``'constructor'`` (the ParaX configs) runs only the backbone's
``init_weights()``: the backbone holds its checkpoint and every other tensor
keeps the value its constructor gave. ``'init_cfg'`` (the default) runs
``model.init_weights()``, which applies OpenMMLab's init_cfg to the heads.
"""
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope

from mmparax.apis.runner import PEFTRunner, init_model_weights
from mmparax.testing import (
    swin_to_microsoft,
    tiny_swin_kwargs,
    tiny_swin_state_dict,
    write_checkpoint,
)

CONFIGS = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))),
                   'configs')
WIDTHS = [16, 32, 64, 128]
UPERNET = 'parax/parax_swin-b_upernet_8xb2-160k_ade20k-512x512.py'
MASK_RCNN = 'parax/parax_swin-b_mask-rcnn_fpn_8xb2-1x_coco.py'
PANOPTIC = 'parax/parax_swin-b_panoptic-fpn_8xb2-1x_coco-panoptic.py'
# modules whose init_cfg draws from another distribution than their
# constructor (or sets a constant), per model
INIT_CFG_MODULES = {
    UPERNET: {'decode_head.conv_seg', 'auxiliary_head.conv_seg'},
    MASK_RCNN: {
        *(f'neck.{kind}.{i}.conv' for kind in ('lateral_convs', 'fpn_convs')
          for i in range(4)),
        'rpn_head.rpn_conv', 'rpn_head.rpn_cls', 'rpn_head.rpn_reg',
        'roi_head.bbox_head.fc_cls', 'roi_head.bbox_head.fc_reg',
        'roi_head.bbox_head.shared_fcs.0', 'roi_head.bbox_head.shared_fcs.1',
        'roi_head.mask_head.upsample', 'roi_head.mask_head.conv_logits'
    },
}
INIT_CFG_MODULES[PANOPTIC] = INIT_CFG_MODULES[MASK_RCNN] | {
    'semantic_head.conv_logits'
}
SCOPES = {UPERNET: 'mmseg', MASK_RCNN: 'mmdet', PANOPTIC: 'mmdet'}


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory):
    """A tiny Swin checkpoint in the Microsoft layout, and the OpenMMLab
    tensors it must load as (without the output norms it lacks)."""
    state = tiny_swin_state_dict(seed=3)
    path = write_checkpoint(
        str(tmp_path_factory.mktemp('pretrain') / 'swin_tiny.pth'),
        swin_to_microsoft(state))
    expected = {
        k: v
        for k, v in state.items() if not re.match(r'norm\d\.', k)
    }
    return path, expected


def tiny_cfg(name, checkpoint):
    cfg = Config.fromfile(osp.join(CONFIGS, name))
    backbone = cfg.model.backbone
    for key in ('arch', 'embed_dims', 'depths', 'num_heads'):
        backbone.pop(key, None)
    backbone.update(tiny_swin_kwargs())
    backbone.peft.update(hidden_dim=8, router_hidden=4)
    backbone.init_cfg = dict(type='Pretrained', checkpoint=checkpoint)
    if 'neck' in cfg.model:
        cfg.model.neck.in_channels = WIDTHS
    else:
        cfg.model.decode_head.in_channels = WIDTHS
        cfg.model.auxiliary_head.in_channels = WIDTHS[2]
    return cfg


def build(cfg, scope):
    init_default_scope(scope)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    constructed = {k: v.clone() for k, v in model.state_dict().items()}
    return model, constructed


def changed(model, constructed):
    return {
        k
        for k, v in model.state_dict().items()
        if not torch.equal(v, constructed[k])
    }


def assert_backbone_loaded(model, expected):
    state = model.backbone.state_dict()
    for key, value in expected.items():
        assert torch.equal(state[key], value), key


def test_paper_configs_keep_constructor_heads():
    for name in (UPERNET, MASK_RCNN, PANOPTIC):
        assert Config.fromfile(osp.join(CONFIGS, name)).head_init == \
            'constructor'


@pytest.mark.slow
@pytest.mark.parametrize('name', [UPERNET, MASK_RCNN, PANOPTIC])
def test_constructor_vs_init_cfg(name, pretrained):
    checkpoint, expected = pretrained
    cfg = tiny_cfg(name, checkpoint)

    model, constructed = build(cfg, SCOPES[name])
    init_model_weights(model, 'constructor')
    assert_backbone_loaded(model, expected)
    assert not {k for k in changed(model, constructed)
                if not k.startswith('backbone.')}

    model, constructed = build(cfg, SCOPES[name])
    init_model_weights(model, 'init_cfg')
    assert_backbone_loaded(model, expected)
    heads = {k for k in changed(model, constructed)
             if not k.startswith('backbone.')}
    modules = {k.rsplit('.', 1)[0] for k in heads}
    # every module whose init rule differs is redrawn; besides them, only
    # mmcv ConvModules the init_weights walk reaches again (same Kaiming
    # rule, new draws)
    assert INIT_CFG_MODULES[name] <= modules
    assert all(m.endswith('.conv') for m in modules - INIT_CFG_MODULES[name])
    if name == UPERNET:
        weight = model.decode_head.conv_seg.weight
        assert 0.008 < weight.std().item() < 0.012  # normal(0, 0.01)
        assert not model.decode_head.conv_seg.bias.any()


def test_runner_uses_head_init(pretrained, tmp_path):
    checkpoint, expected = pretrained
    model, constructed = build(tiny_cfg(UPERNET, checkpoint), 'mmseg')
    runner = PEFTRunner(
        model=model,
        work_dir=str(tmp_path),
        default_scope='mmseg',
        experiment_name='head_init_constructor',
        cfg=dict(head_init='constructor'))
    assert runner.head_init == 'constructor'
    runner._init_model_weights()
    assert_backbone_loaded(model, expected)
    assert not {k for k in changed(model, constructed)
                if not k.startswith('backbone.')}


def test_bad_head_init_is_refused(tmp_path):
    with pytest.raises(ValueError, match="head_init='heads'.*'init_cfg'"):
        PEFTRunner(
            model=torch.nn.Linear(2, 2),
            work_dir=str(tmp_path),
            cfg=dict(head_init='heads'))
    with pytest.raises(ValueError, match='no backbone'):
        init_model_weights(torch.nn.Linear(2, 2), 'constructor')
