from typing import Optional

import torch

from mmparax.registry import MODELS
from .parax_host import ParaXHostMixin
from .vmamba import VMamba


@MODELS.register_module()
class ParaXVMamba(ParaXHostMixin, VMamba):
    """VMamba with ParaX adapters, for mmseg and mmdet.

    Every block gets two adapters on its residual stream, ``adapter1`` after
    the SS2D residual and ``adapter2`` after the MLP residual, both routing
    into the expert centers of their stage (``expert_centers.<i>``).
    The adapters see the channel-first map as tokens [B, H*W, C].
    Trainable: adapters, expert centers and the output norms
    ``outnorm<i>``; every other parameter is frozen at construction and
    keeps its official name.

    Args:
        parax (dict, optional): Arguments of :class:`mmparax.peft.ParaX`.
        **kwargs: Arguments of :class:`VMamba`.

    Returns (forward): tuple of [B, dims[i], H / 2^(i+2), W / 2^(i+2)].
    """

    adapter_sites = ('adapter1', 'adapter2')

    def __init__(self, parax: Optional[dict] = None, **kwargs):
        super().__init__(**kwargs)
        self.insert_parax(parax, [stage.blocks for stage in self.layers],
                          self.dims)

    def block_forward(self, stage: int, block: int,
                      x: torch.Tensor) -> torch.Tensor:
        blk = self.layers[stage].blocks[block]
        x = self.adapt_map(blk.adapter1, blk.forward_ssm(x), stage, block)
        return self.adapt_map(blk.adapter2, blk.forward_mlp(x), stage, block)
