from typing import Optional

import torch
import torch.utils.checkpoint as cp

from mmparax.registry import MODELS
from .parax_host import ParaXHostMixin
from .swin import Swin


@MODELS.register_module()
class ParaXSwin(ParaXHostMixin, Swin):
    """Swin Transformer with ParaX adapters, for mmseg and mmdet.

    Every block gets two adapters on its residual stream, ``adapter1`` after
    the attention residual and ``adapter2`` after the MLP residual, both
    routing into the expert centers of their stage
    (``expert_centers.<i>``). Trainable: adapters, expert centers and
    the per-output norms ``norm<i>``; every other parameter is frozen and
    keeps its OpenMMLab name.

    Loads official Microsoft and OpenMMLab-converted checkpoints strictly,
    like :class:`Swin`.

    Args:
        parax (dict, optional): Arguments of :class:`mmparax.peft.ParaX`.
        **kwargs: Arguments of ``mmseg.models.backbones.SwinTransformer``.

    Returns (forward): list of [B, C_i, H/2^(i+2), W/2^(i+2)] feature maps.
    """

    adapter_sites = ('adapter1', 'adapter2')

    def __init__(self, parax: Optional[dict] = None, **kwargs):
        super().__init__(**kwargs)
        self.insert_parax(parax, [stage.blocks for stage in self.stages],
                          self.num_features)

    @staticmethod
    def _block_forward(block, x, hw_shape, center):
        """One Swin block with its adapters; x: [B, H*W, C]."""

        def inner(x):
            x = x + block.attn(block.norm1(x), hw_shape)
            x = block.adapter1(x, hw_shape, center)
            x = block.ffn(block.norm2(x), identity=x)
            return block.adapter2(x, hw_shape, center)

        if block.with_cp and torch.is_grad_enabled():
            # Non-reentrant: adapters inside must get gradients even when
            # nothing entering the frozen block requires grad.
            return cp.checkpoint(inner, x, use_reentrant=False)
        return inner(x)

    def forward(self, x):
        x, hw_shape = self.patch_embed(x)
        if self.use_abs_pos_embed:
            x = x + self.absolute_pos_embed
        x = self.drop_after_pos(x)

        outs = []
        for i, stage in enumerate(self.stages):
            for j, block in enumerate(stage.blocks):
                x = self._block_forward(block, x, hw_shape, self.center(i, j))
            out, out_hw_shape = x, hw_shape
            if stage.downsample:
                x, hw_shape = stage.downsample(x, hw_shape)
            if i in self.out_indices:
                out = getattr(self, f'norm{i}')(out)
                out = out.view(-1, *out_hw_shape, self.num_features[i])
                outs.append(out.permute(0, 3, 1, 2).contiguous())
        return outs
