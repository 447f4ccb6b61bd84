"""The same registered backbone classes build and run inside mmdet detectors
and mmseg segmentors, from the real configs (backbones shrunk)."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope

from mmparax.models import ConvNeXt, Swin
from mmparax.testing import tiny_convnext_kwargs, tiny_swin_kwargs

CONFIGS = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))),
                   'configs')
WIDTHS = [16, 32, 64, 128]
TINY = {Swin: tiny_swin_kwargs(), ConvNeXt: tiny_convnext_kwargs()}
TINY_PARAX = dict(hidden_dim=8, router_hidden=4)
ADE = 'upernet_8xb2-160k_ade20k-512x512.py'
MASK_RCNN = 'mask-rcnn_fpn_8xb2-1x_coco.py'
PANOPTIC = 'panoptic-fpn_8xb2-1x_coco-panoptic.py'
CASES = [
    (f'parax/parax_swin-b_{ADE}', Swin, 'mmseg', 'EncoderDecoder'),
    (f'full/full_swin-b_{ADE}', Swin, 'mmseg', 'EncoderDecoder'),
    (f'parax/parax_convnext-b_{ADE}', ConvNeXt, 'mmseg', 'EncoderDecoder'),
    (f'full/full_convnext-l_{ADE}', ConvNeXt, 'mmseg', 'EncoderDecoder'),
    (f'parax/parax_swin-b_{MASK_RCNN}', Swin, 'mmdet', 'MaskRCNN'),
    (f'full/full_swin-l_{MASK_RCNN}', Swin, 'mmdet', 'MaskRCNN'),
    (f'parax/parax_convnext-l_{MASK_RCNN}', ConvNeXt, 'mmdet', 'MaskRCNN'),
    (f'full/full_convnext-b_{MASK_RCNN}', ConvNeXt, 'mmdet', 'MaskRCNN'),
    (f'parax/parax_swin-l_{PANOPTIC}', Swin, 'mmdet', 'PanopticFPN'),
    (f'parax/parax_convnext-b_{PANOPTIC}', ConvNeXt, 'mmdet', 'PanopticFPN'),
    (f'full/full_convnext-l_{PANOPTIC}', ConvNeXt, 'mmdet', 'PanopticFPN'),
]


def tiny_model_cfg(name, cls):
    cfg = Config.fromfile(osp.join(CONFIGS, name))
    backbone = cfg.model.backbone
    for key in ('arch', 'embed_dims', 'depths', 'num_heads'):
        backbone.pop(key, None)
    backbone.update(TINY[cls])
    if 'peft' in backbone:
        backbone.peft.update(TINY_PARAX)
    backbone.init_cfg = None
    if 'neck' in cfg.model:
        cfg.model.neck.in_channels = WIDTHS
    else:
        cfg.model.decode_head.in_channels = WIDTHS
        cfg.model.auxiliary_head.in_channels = WIDTHS[2]
    return cfg


@pytest.mark.slow
@pytest.mark.parametrize('name, cls, scope, model_type', CASES)
def test_backbone_builds_in_both_scopes(name, cls, scope, model_type):
    cfg = tiny_model_cfg(name, cls)
    assert cfg.default_scope == scope
    assert cfg.model.backbone.type == f'mmparax.{cls.__name__}'
    init_default_scope(scope)
    assert MODELS.get(cfg.model.backbone.type) is cls
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    assert type(model).__name__ == model_type
    assert type(model.backbone) is cls
    model.eval()

    named = dict(model.backbone.named_parameters())
    trainable = {n for n, p in named.items() if p.requires_grad}
    if name.startswith('parax/'):
        assert trainable == set(model.backbone.peft_trainable_names())
        assert len(trainable) < len(named)
    else:
        assert trainable == set(named)
    assert all(p.requires_grad for n, p in model.named_parameters()
               if not n.startswith('backbone.'))

    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        feats = model.extract_feat(x)
    if scope == 'mmdet':  # FPN levels P2-P6
        assert [tuple(f.shape) for f in feats] == [
            (1, 256, 64 // s, 128 // s) for s in (4, 8, 16, 32, 64)
        ]
    else:
        assert [tuple(f.shape) for f in feats] == [
            (1, c, 64 // s, 128 // s) for c, s in zip(WIDTHS, (4, 8, 16, 32))
        ]
        with torch.no_grad():
            logits = model(x, mode='tensor')
        assert logits.shape == (1, 150, 16, 32)
