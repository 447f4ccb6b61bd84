from typing import Optional

import torch

from mmparax.registry import MODELS
from .convnext import ConvNeXt
from .parax_host import ParaXHostMixin


@MODELS.register_module()
class ParaXConvNeXt(ParaXHostMixin, ConvNeXt):
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
        self.insert_parax(parax, list(self.stages), self.channels,
                          defaults=dict(layer_init='trunc_normal'))

    def _block_forward(self, x: torch.Tensor, stage: int,
                       index: int) -> torch.Tensor:
        """Block then adapter; x: [B, C, H, W] -> same."""
        block = self.stages[stage][index]
        return self.adapt_map(block.adapter, block(x), stage, index)
