"""Random checkpoints of the generic hosts' families in their official key
layouts: sail-sg PoolFormer, torchvision ResNet and timm models."""
from collections import OrderedDict
from typing import Dict

import torch
from mmengine.registry import MODELS

from mmparax.models.backbones.generic import upstream_class


def official_state_dict(backbone: dict, num_classes: int = 1000,
                        seed: int = 0) -> 'OrderedDict[str, torch.Tensor]':
    """Random weights of the backbone a config dict names, in its official
    release's layout, classifier included.

    * ``PoolFormer`` (sail-sg ``poolformer_s12.pth.tar``): the blocks under
      their mmpretrain names, no output norms ``norm<i>``, the classifier
      norm ``norm.*`` [C] and ``head.*`` [classes, C];
    * ``ResNet`` (torchvision ``resnet50-*.pth``): mmpretrain's names, and
      ``fc.*`` [classes, 4 x 512];
    * ``TIMMBackbone``: the timm model's own state dict (``stem.0``,
      ``stages.0.blocks...``, ``head.*``).
    """
    torch.manual_seed(seed)
    kind = upstream_class(backbone).__name__
    if kind == 'TIMMBackbone':
        import timm
        kwargs = {k: v for k, v in backbone.items()
                  if k not in ('type', 'model_name', 'features_only',
                               'out_indices', 'init_cfg')}
        model = timm.create_model(backbone['model_name'],
                                  num_classes=num_classes, **kwargs)
        return OrderedDict(model.state_dict())
    model = MODELS.build(dict(backbone, type=upstream_class(backbone)))
    state: Dict[str, torch.Tensor] = OrderedDict(
        (k, v.clone()) for k, v in model.state_dict().items())
    if kind == 'PoolFormer':
        state = OrderedDict((k, v) for k, v in state.items()
                            if not k.split('.')[0].startswith('norm'))
        width = model.network[-1][-1].norm1.num_channels
        state['norm.weight'] = torch.ones(width)
        state['norm.bias'] = torch.zeros(width)
        state['head.weight'] = torch.randn(num_classes, width) * 0.02
        state['head.bias'] = torch.zeros(num_classes)
    elif kind.startswith('ResNet'):
        width = model.feat_dim
        state['fc.weight'] = torch.randn(num_classes, width) * 0.02
        state['fc.bias'] = torch.zeros(num_classes)
    else:
        raise ValueError(f'no official layout known for {kind}')
    return state
