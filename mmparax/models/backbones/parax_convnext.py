from typing import Optional

import torch
import torch.nn as nn

from mmparax.peft import ParaX
from mmparax.registry import MODELS
from .convnext import ConvNeXt


@MODELS.register_module()
class ParaXConvNeXt(ConvNeXt):
    """ConvNeXt with ParaX adapters, for mmseg and mmdet.

    Every block gets one adapter, ``stages.<i>.<j>.adapter``, on the output of
    the complete block (after ``input + drop_path(...)``), routing into the
    expert centers of its stage (``expert_centers.<i>``, M = stage depth by
    default). Trainable: adapters, expert centers and the per-output norms
    ``norm<i>``; every other parameter is frozen and keeps its mmpretrain
    name. The adapters' Linear and Conv layers are initialised with a
    truncated normal (std 0.02), as in the reference ConvNeXt, unless
    ``parax`` sets ``layer_init``.

    Loads official Facebook and OpenMMLab-converted checkpoints strictly,
    like :class:`ConvNeXt`.

    Args:
        parax (dict, optional): Arguments of :class:`mmparax.peft.ParaX`.
        **kwargs: Arguments of :class:`ConvNeXt`.

    Returns (forward): tuple of [B, C_i, H/2^(i+2), W/2^(i+2)] feature maps.
    """

    def __init__(self, parax: Optional[dict] = None, **kwargs):
        if kwargs.get('frozen_stages', 0):
            raise ValueError(
                'ParaXConvNeXt freezes every pretrained parameter already; '
                'frozen_stages would also freeze the adapters of those stages '
                'and switch off their drop path. Leave frozen_stages at 0.')
        super().__init__(**kwargs)
        self.parax = ParaX(**dict(dict(layer_init='trunc_normal'),
                                  **(parax or {})))
        self.expert_centers = nn.ModuleList()
        for i, stage in enumerate(self.stages):
            dim, depth = self.channels[i], len(stage)
            self.expert_centers.append(
                self.parax.build_centers(dim, depth, i))
            for j, block in enumerate(stage):
                block.adapter = self.parax.build_adapter(
                    dim, self._center(i, j))
        self.freeze_for_peft()

    def _center(self, stage: int, block: int):
        depth = len(self.stages[stage])
        index = self.parax.center_index(block, depth, stage)
        return self.expert_centers[stage][index]

    def _block_forward(self, x: torch.Tensor, stage: int,
                       index: int) -> torch.Tensor:
        """Block then adapter; x: [B, C, H, W] -> same."""
        block = self.stages[stage][index]
        x = block(x)
        B, C, H, W = x.shape
        tokens = block.adapter(
            x.flatten(2).transpose(1, 2), (H, W), self._center(stage, index))
        return tokens.transpose(1, 2).reshape(B, C, H, W)
