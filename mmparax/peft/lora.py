r"""LoRA: low-rank updates of frozen linear layers (Hu et al., ICLR 2022).

.. math::

    y = W_0 x + b_0 + \frac{\alpha}{r} B A\,\mathrm{dropout}(x),\qquad
    A \in \mathbb{R}^{r \times C_{in}},\ B \in \mathbb{R}^{C_{out} \times r}

``A`` starts from Kaiming-uniform (a = sqrt(5)) and ``B`` from zero, so the
adapted model starts as the frozen one. An update may cover a slice of the
outputs: on Swin's fused ``qkv`` layer, the ``q`` and ``v`` thirds get one
update each. The frozen layer keeps its name and its weights; the update is
its child (``...attn.w_msa.qkv.lora_q.A``) and adds its output through a
forward hook, until ``merge`` folds it into the weight (``unmerge`` takes it
out again, ``unload`` removes it).
"""
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmparax.registry import PEFT_METHODS
from .base import (
    LinearUpdate,
    LowRankInit,
    PEFTMethod,
    check_fraction,
    check_positive,
    check_positive_int,
)

#: paper placements, the first that the host offers: attention q and v
#: (Swin), the SS2D in/out projections (VMamba), the pointwise linears
#: (ConvNeXt)
DEFAULT_TARGETS = (('qkv:qv', ), ('in_proj', 'out_proj'), ('fc1', 'fc2'))


class LoRAUpdate(LowRankInit, LinearUpdate):
    """``alpha / rank * B A x`` added to outputs ``[start, stop)`` of a
    frozen linear layer.

    Args:
        in_features (int): Inputs of the frozen layer.
        out_features (int): Outputs of the slice the update covers.
        rank (int): r.
        alpha (float): Scaling numerator; the update is scaled by alpha / r.
        start (int): First output of the slice. Default: 0.
        dropout (float): Dropout on the update's input. Default: 0.
    """

    def __init__(self,
                 in_features: int,
                 out_features: int,
                 rank: int,
                 alpha: float,
                 start: int = 0,
                 dropout: float = 0.):
        super().__init__(out_features, (start, ))
        self.rank, self.scale, self.start = rank, alpha / rank, start
        self.A = nn.Parameter(torch.empty(rank, in_features))
        self.B = nn.Parameter(torch.empty(out_features, rank))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.reset_parameters()

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """[..., in] -> [..., 1, out]."""
        y = F.linear(F.linear(self.dropout(x), self.A), self.B) * self.scale
        return y.unsqueeze(-2)

    def weight_slices(self) -> torch.Tensor:
        """[1, out, in]: ``alpha / rank * B A``."""
        return ((self.B @ self.A) * self.scale).unsqueeze(0)


@PEFT_METHODS.register_module()
class LoRA(PEFTMethod):
    """LoRA on frozen linear layers named by the host's layer aliases.

    Args:
        rank (int): r. Default: 8.
        alpha (float): Scaling numerator: the update is scaled by
            alpha / r. Default: 1 (loralib's ``lora_alpha=1``, kept by the
            Mona repository's dense-prediction Swin LoRA, and mmpretrain's
            ``LoRAModel``: scale 1/r).
        dropout (float): Dropout on the updates' input. Default: 0.
        targets (Sequence[str], optional): Layer aliases of the host (on a
            fused ``qkv`` alias ``'qkv:qv'`` picks the q and v thirds), or
            ``'re:<regex>'`` patterns over module names (see
            ``PEFTMethod.linear_targets``). None: the first of
            ``('qkv:qv',)``, ``('in_proj', 'out_proj')``, ``('fc1', 'fc2')``
            the host offers.
    """

    default_targets = DEFAULT_TARGETS
    width_setting = 'rank'

    def __init__(self,
                 rank: int = 8,
                 alpha: float = 1.,
                 dropout: float = 0.,
                 targets: Optional[Sequence[str]] = None):
        super().__init__(sites=())
        check_positive_int(self.name, 'rank', rank)
        check_positive(self.name, 'alpha', alpha, ' (scale alpha / rank)')
        check_fraction(self.name, 'dropout', dropout)
        self.rank, self.dropout = rank, dropout
        self.alpha = float(alpha)
        self.targets = self.check_targets(targets)

    def attach(self, host) -> None:
        for _, layer, _, parts, channels_first in self.linear_targets(host):
            out_features, in_features = layer.weight.shape[:2]
            slices = [('lora', 0, out_features)] if parts is None else [
                (f'lora_{p}', start, width) for p, start, width in parts
            ]
            for child, start, width in slices:
                LoRAUpdate(in_features, width, self.rank, self.alpha, start,
                           self.dropout).hook_into(layer, child,
                                                   channels_first)
