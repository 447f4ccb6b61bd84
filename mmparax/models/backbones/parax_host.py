from typing import Optional, Sequence

import torch
import torch.nn as nn

from mmparax.peft import ExpertCenter, ParaX


class ParaXHostMixin:
    """Inserts ParaX into a host backbone.

    A ParaX backbone calls :meth:`insert_parax` at the end of ``__init__``
    with the blocks of each stage; every block gets one adapter per name in
    ``adapter_sites``, and stage ``i`` gets its expert centers in
    ``expert_centers[i]``. Its forward then calls
    ``getattr(block, site)(tokens, (H, W), self.center(i, j))`` where the
    adapters sit.
    """

    #: attribute names of the adapters of every block
    adapter_sites: Sequence[str] = ('adapter', )

    def insert_parax(self,
                     parax: Optional[dict],
                     stage_blocks: Sequence[Sequence[nn.Module]],
                     dims: Sequence[int],
                     defaults: Optional[dict] = None) -> None:
        """Build centers and adapters, then freeze everything else.

        Args:
            parax (dict, optional): Arguments of :class:`ParaX`.
            stage_blocks (Sequence[Sequence[nn.Module]]): Blocks per stage.
            dims (Sequence[int]): Channels per stage.
            defaults (dict, optional): ParaX arguments this backbone changes
                by default (``parax`` overrides them).
        """
        self.parax = ParaX(**dict(defaults or {}, **(parax or {})))
        self._stage_depths = [len(blocks) for blocks in stage_blocks]
        self.expert_centers = nn.ModuleList(
            self.parax.build_centers(dim, len(blocks), i)
            for i, (blocks, dim) in enumerate(zip(stage_blocks, dims)))
        for i, blocks in enumerate(stage_blocks):
            for j, block in enumerate(blocks):
                for site in self.adapter_sites:
                    setattr(block, site,
                            self.parax.build_adapter(dims[i], self.center(i, j)))
        self.freeze_for_peft()

    def center(self, stage: int, block: int) -> ExpertCenter:
        """The expert center block ``block`` of ``stage`` routes into."""
        index = self.parax.center_index(block, self._stage_depths[stage],
                                        stage)
        return self.expert_centers[stage][index]

    def adapt_map(self, adapter: nn.Module, x: torch.Tensor, stage: int,
                  block: int) -> torch.Tensor:
        """An adapter on a channel-first map: [B, C, H, W] -> same.

        The result keeps the memory layout of ``x``, so the frozen layers
        that follow compute exactly as in the plain backbone.
        """
        B, C, H, W = x.shape
        tokens = adapter(x.flatten(2).transpose(1, 2), (H, W),
                         self.center(stage, block))
        out = tokens.transpose(1, 2).reshape(B, C, H, W)
        if out.stride() != x.stride():
            out = torch.empty_like(x).copy_(out)
        return out
