r"""LoRA: low-rank updates of frozen linear layers (Hu et al., ICLR 2022).

.. math::

    y = W_0 x + b_0 + \frac{\alpha}{r} B A\,\mathrm{dropout}(x),\qquad
    A \in \mathbb{R}^{r \times C_{in}},\ B \in \mathbb{R}^{C_{out} \times r}

``A`` starts from Kaiming-uniform (a = sqrt(5)) and ``B`` from zero, so the
adapted model starts as the frozen one. An update may cover a slice of the
outputs: on Swin's fused ``qkv`` layer, the ``q`` and ``v`` thirds get one
update each. The frozen layer keeps its name and its weights; the update is
its child (``...attn.w_msa.qkv.lora_q.A``) and adds its output through a
forward hook, until :meth:`LoRA.merge` folds it into the weight.
"""
import math
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmparax.registry import PEFT_METHODS
from .base import PEFTMethod, PEFTModule

#: paper placements, the first that the host offers: attention q and v
#: (Swin), the SS2D in/out projections (VMamba), the pointwise linears
#: (ConvNeXt)
DEFAULT_TARGETS = (('qkv:qv', ), ('in_proj', 'out_proj'), ('fc1', 'fc2'))
_FUSED = dict(q=0, k=1, v=2)


class LoRAUpdate(PEFTModule):
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
        super().__init__()
        self.rank, self.scale, self.start = rank, alpha / rank, start
        self.A = nn.Parameter(torch.empty(rank, in_features))
        self.B = nn.Parameter(torch.empty(out_features, rank))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        nn.init.zeros_(self.B)

    @torch.no_grad()
    def switch_off(self):
        self.B.zero_()

    def delta(self, x: torch.Tensor, total: int) -> torch.Tensor:
        """[..., in] -> [..., total]: the update, zero outside its slice."""
        y = F.linear(F.linear(self.dropout(x), self.A), self.B) * self.scale
        return F.pad(y, (self.start, total - self.start - y.shape[-1]))

    def hook(self, layer: nn.Module, args, output: torch.Tensor):
        """Forward hook of the frozen layer: adds the update."""
        x = args[0]
        if getattr(layer, 'channels_first', False):  # [B, C, H, W] maps
            d = self.delta(x.permute(0, 2, 3, 1), output.shape[1])
            return output + d.permute(0, 3, 1, 2)
        return output + self.delta(x, output.shape[-1])

    @torch.no_grad()
    def merge_into(self, layer: nn.Module) -> None:
        """Add the update to ``layer.weight`` and stop adding it at run
        time."""
        stop = self.start + self.B.shape[0]
        layer.weight[self.start:stop] += (self.B @ self.A) * self.scale
        for key, hook in list(layer._forward_hooks.items()):
            if getattr(hook, '__self__', None) is self:
                del layer._forward_hooks[key]


@PEFT_METHODS.register_module()
class LoRA(PEFTMethod):
    """LoRA on frozen linear layers named by the host's layer aliases.

    Args:
        rank (int): r. Default: 8.
        alpha (float, optional): Scaling numerator; None gives alpha = r
            (scale 1). Default: None.
        dropout (float): Dropout on the updates' input. Default: 0.
        targets (Sequence[str], optional): Layer aliases of the host; on a
            fused ``qkv`` alias ``'qkv:qv'`` picks the q and v thirds. None:
            the first of ``('qkv:qv',)``, ``('in_proj', 'out_proj')``,
            ``('fc1', 'fc2')`` the host offers.
    """

    def __init__(self,
                 rank: int = 8,
                 alpha: Optional[float] = None,
                 dropout: float = 0.,
                 targets: Optional[Sequence[str]] = None):
        super().__init__(sites=())
        if not isinstance(rank, int) or isinstance(rank, bool) or rank <= 0:
            raise ValueError(f'LoRA rank must be a positive integer, got '
                             f'{rank!r}')
        if alpha is not None and not alpha > 0:
            raise ValueError(f'LoRA alpha must be positive, got {alpha!r}')
        if not 0 <= dropout < 1:
            raise ValueError(f'LoRA dropout must be in [0, 1), got '
                             f'{dropout!r}')
        if isinstance(targets, str):
            raise TypeError("LoRA targets is a list of layer aliases such as "
                            f"['fc1', 'fc2'], got {targets!r}")
        self.rank, self.dropout = rank, dropout
        self.alpha = float(rank if alpha is None else alpha)
        self.targets = None if targets is None else tuple(targets)

    def _targets(self, host):
        if self.targets is not None:
            return self.targets
        for choice in DEFAULT_TARGETS:
            if all(t.split(':')[0] in host.layer_aliases for t in choice):
                return choice
        raise ValueError(
            f'LoRA has no default placement on {type(host).__name__} '
            f'(layer aliases {tuple(host.layer_aliases)}); give targets')

    def attach(self, host) -> None:
        for target in self._targets(host):
            alias, _, parts = target.partition(':')
            for name, layer in self.resolve_layers(host, alias).items():
                if not isinstance(getattr(layer, 'weight', None),
                                  torch.Tensor) or layer.weight.dim() != 2:
                    raise ValueError(f'LoRA: {name} ({alias}) is not a '
                                     'linear layer')
                out_features, in_features = layer.weight.shape
                slices = [('lora', 0, out_features)]
                if parts:
                    width = out_features // 3
                    bad = set(parts) - set(_FUSED)
                    if bad or out_features % 3:
                        raise ValueError(
                            f'LoRA target {target!r}: parts name thirds of a '
                            "fused qkv layer ('q', 'k', 'v'); got "
                            f'{parts!r} for {name} with {out_features} '
                            'outputs')
                    slices = [(f'lora_{p}', _FUSED[p] * width, width)
                              for p in parts]
                for child, start, width in slices:
                    update = LoRAUpdate(in_features, width, self.rank,
                                        self.alpha, start, self.dropout)
                    layer.add_module(child, update)
                    layer.register_forward_hook(update.hook)

    def merge(self, host) -> None:
        """Fold every update into its frozen layer; outputs are unchanged."""
        for name, module in list(host.named_modules()):
            if isinstance(module, LoRAUpdate):
                module.merge_into(host.get_submodule(name.rpartition('.')[0]))
