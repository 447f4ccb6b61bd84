from typing import Optional

import torch

from mmparax.peft import ParaX
from mmparax.registry import MODELS
from .vmamba import VMamba


@MODELS.register_module()
class ParaXVMamba(VMamba):
    """VMamba with ParaX adapters, for mmseg and mmdet.

    Every block gets two adapters on its residual stream, ``adapter1`` after
    the SS2D residual and ``adapter2`` after the MLP residual, both routing
    into the expert centers of their stage (``layers.<i>.expert_centers``).
    The adapters see the channel-first map as tokens [B, H*W, C].
    Trainable: adapters, expert centers and the output norms
    ``outnorm<i>``; every other parameter is frozen at construction and
    keeps its official name.

    Args:
        parax (dict, optional): Arguments of :class:`mmparax.peft.ParaX`.
        **kwargs: Arguments of :class:`VMamba`.

    Returns (forward): tuple of [B, dims[i], H / 2^(i+2), W / 2^(i+2)].
    """

    def __init__(self, parax: Optional[dict] = None, **kwargs):
        super().__init__(**kwargs)
        self.parax = ParaX(**(parax or {}))
        for i, stage in enumerate(self.layers):
            dim, depth = self.dims[i], len(stage.blocks)
            stage.expert_centers = self.parax.build_centers(dim, depth, i)
            for j, block in enumerate(stage.blocks):
                center = self._center(i, j)
                block.adapter1 = self.parax.build_adapter(dim, center)
                block.adapter2 = self.parax.build_adapter(dim, center)
        self.freeze_for_peft()

    def _center(self, stage: int, block: int):
        centers = self.layers[stage].expert_centers
        depth = len(self.layers[stage].blocks)
        return centers[self.parax.center_index(block, depth, stage)]

    @staticmethod
    def _adapt(adapter, x, center):
        """Adapter on a channel-first map: [B, C, H, W] -> [B, C, H, W]."""
        B, C, H, W = x.shape
        tokens = adapter(x.flatten(2).transpose(1, 2), (H, W), center)
        out = tokens.transpose(1, 2).reshape(B, C, H, W)
        if out.stride() != x.stride():
            # keep the stream's memory layout: the frozen convs that follow
            # then round exactly as in the plain backbone
            out = torch.empty_like(x).copy_(out)
        return out

    def block_forward(self, stage: int, block: int,
                      x: torch.Tensor) -> torch.Tensor:
        blk = self.layers[stage].blocks[block]
        center = self._center(stage, block)
        x = self._adapt(blk.adapter1, blk.forward_ssm(x), center)
        return self._adapt(blk.adapter2, blk.forward_mlp(x), center)
