r"""RepAdapter: a linear adapter that folds into the frozen layer it feeds.

Luo et al., "Towards Efficient Visual Adaption via Structural
Re-parameterization", arXiv 2302.08106, 2023; official code
https://github.com/luogen1996/RepAdapter (``repadapter.py``).

.. math::

    y = x + s\,\big(W_B\,\mathrm{dropout}(W_A x + b_A) + b_B\big),\qquad
    W_A \in \mathbb{R}^{r \times C},\
    W_B = \mathrm{blockdiag}(W_B^{(1)}, \dots, W_B^{(g)}),\
    W_B^{(k)} \in \mathbb{R}^{\frac{C}{g} \times \frac{r}{g}}

``W_A`` is a 1x1 projection C -> r with bias, ``W_B`` a grouped (g groups)
1x1 projection r -> C with bias. ``W_A`` starts from Xavier-uniform, ``b_A``,
``W_B`` and ``b_B`` from zero. ``1.5 C r + r + C`` parameters per adapter
(g = 2). With dropout off (eval) the adapter is the affine map
``y = M x + m``, ``M = I + s W_B W_A``, ``m = s (W_B b_A + b_B)``; a frozen
linear layer ``z = W y + b`` that reads ``y`` becomes
``z = (W M) x + (W m + b)`` (:meth:`RepAdapter.merge`).
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmparax.registry import PEFT_METHODS
from .base import (
    PEFTMethod,
    PEFTModule,
    check_fraction,
    check_number,
    check_positive_int,
    not_linear,
)


class RepAdapterModule(PEFTModule):
    """``x + s * up(dropout(down(x)))`` on tokens, ``up`` grouped.

    Args:
        dim (int): Channels C.
        hidden_dim (int): Width r.
        groups (int): Groups g of the up projection; divides C and r.
            Default: 2.
        scale (float): s. Default: 1.0.
        dropout (float): Dropout between the projections. Default: 0.1.

    Parameters: ``down`` (weight [r, C], bias [r]), ``up_weight``
    [C, r / g] (rows ``k C/g ... (k+1) C/g - 1`` read hidden channels
    ``k r/g ... (k+1) r/g - 1``, as ``nn.Conv1d(r, C, 1, groups=g)``),
    ``up_bias`` [C].
    """

    def __init__(self,
                 dim: int,
                 hidden_dim: int,
                 groups: int = 2,
                 scale: float = 1.0,
                 dropout: float = 0.1):
        super().__init__()
        self.groups, self.scale = groups, float(scale)
        self.down = nn.Linear(dim, hidden_dim)
        self.dropout = nn.Dropout(dropout)
        self.up_weight = nn.Parameter(torch.empty(dim, hidden_dim // groups))
        self.up_bias = nn.Parameter(torch.empty(dim))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        nn.init.xavier_uniform_(self.down.weight)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up_weight)
        nn.init.zeros_(self.up_bias)

    @torch.no_grad()
    def switch_off(self):
        self.up_weight.zero_()
        self.up_bias.zero_()

    def dense_up_weight(self) -> torch.Tensor:
        """The grouped up projection as a block-diagonal [C, r] matrix."""
        return torch.block_diag(*self.up_weight.chunk(self.groups, dim=0))

    def up(self, h: torch.Tensor) -> torch.Tensor:
        """[..., r] -> [..., C], group by group."""
        g = self.groups
        w = self.up_weight.unflatten(0, (g, -1))  # [g, C/g, r/g]
        out = torch.einsum('...gr,gcr->...gc', h.unflatten(-1, (g, -1)), w)
        return out.flatten(-2) + self.up_bias

    def forward(self, x: torch.Tensor,
                hw_shape: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """x: [B, N, C] -> [B, N, C]."""
        return x + self.up(self.dropout(self.down(x))) * self.scale

    @torch.no_grad()
    def affine(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(M [C, C], m [C])`` with ``forward(x) = x M^T + m`` in eval."""
        up = self.dense_up_weight()
        matrix = torch.eye(up.shape[0], dtype=up.dtype, device=up.device)
        matrix = matrix + self.scale * (up @ self.down.weight)
        return matrix, self.scale * (up @ self.down.bias + self.up_bias)

    @torch.no_grad()
    def fold_into(self, layer: nn.Module) -> bool:
        """Make ``layer(x)`` compute ``layer(self(x))`` (eval), for a linear
        layer or a 1x1 conv (weight [out, in, 1, 1]); returns whether a bias
        had to be created (the layer had none)."""
        matrix, shift = self.affine()
        weight = layer.weight.flatten(1)  # a view: [out, in]
        bias = F.linear(shift.to(weight.dtype), weight)
        created = layer.bias is None
        if created:
            layer.bias = nn.Parameter(bias, requires_grad=False)
        else:
            layer.bias.add_(bias)
        weight.copy_(weight @ matrix.to(weight.dtype))
        return created

    def extra_repr(self):
        return f'groups={self.groups}, scale={self.scale}'


@PEFT_METHODS.register_module()
class RepAdapter(PEFTMethod):
    """RepAdapter: a :class:`RepAdapterModule` on the normalised input of
    every token mixer and MLP.

    Placement, as the official Swin code (``set_RepAdapter(method=
    'repblock')``: ``attn(adapter_attn(norm1(x)))``,
    ``mlp(adapter_mlp(norm2(x)))``): sites ``attn_in`` and ``mlp_in`` on
    Swin, ``ssm_in`` and ``mlp_in`` on VMamba (2 per block); on ConvNeXt the
    branch input before the depthwise conv, ``pre_dwconv`` (1 per block; the
    official ``repblock`` ConvNeXt code adds a second one before the MLP,
    left out here as in the paper's parameter budget).

    Defaults: r = 8, dropout 0.1 and groups 2, as the official module;
    scale 1.0, the official class default and the value its segmentation
    code uses (the VTAB recipes search s per data set). The VMamba placement
    is ours; ``configs/repadapter`` uses the widths that give the ParaX
    paper's # P (r = 160 Swin, 224 ConvNeXt, 174 VMamba-B).

    Args:
        hidden_dim (int): Width r. Default: 8.
        groups (int): Groups of the up projection. Default: 2.
        scale (float): s. Default: 1.0.
        dropout (float): Dropout between the projections. Default: 0.1.
        sites (Sequence[str], optional): Block sites; None: the first of
            ``('attn_in', 'mlp_in')``, ``('ssm_in', 'mlp_in')``,
            ``('pre_dwconv',)`` the host offers.
    """

    # every token, the class token included, as the official code
    # (repadapter.py, forward_vit_block_adapter): the layer that reads a
    # site then reads only adapted tokens, and merging stays exact
    adapts_class_token = True
    width_setting = 'hidden_dim'
    default_sites = (('attn_in', 'mlp_in'), ('ssm_in', 'mlp_in'),
                     ('pre_dwconv', ))

    def __init__(self,
                 hidden_dim: int = 8,
                 groups: int = 2,
                 scale: float = 1.0,
                 dropout: float = 0.1,
                 sites: Optional[Sequence[str]] = None):
        super().__init__(sites)
        check_positive_int(self.name, 'hidden_dim', hidden_dim)
        check_positive_int(self.name, 'groups', groups)
        if hidden_dim % groups:
            raise ValueError(f'RepAdapter: hidden_dim={hidden_dim} is not a '
                             f'multiple of groups={groups}')
        check_number(self.name, 'scale', scale)
        check_fraction(self.name, 'dropout', dropout)
        self.hidden_dim, self.groups = hidden_dim, groups
        self.scale, self.dropout = scale, dropout
        #: what merge() changed, for unmerge(): (block name, attribute,
        #: position in the block, adapter, layer name, its weight and bias
        #: before; None: the bias was created)
        self._folded = []

    def attach(self, host) -> None:

        def build(dim, site, stage):
            if dim % self.groups:
                raise ValueError(
                    f'RepAdapter: groups={self.groups} does not divide the '
                    f'{dim} channels of stage {stage} of '
                    f'{type(host).__name__}')
            return RepAdapterModule(dim, self.hidden_dim, self.groups,
                                    self.scale, self.dropout)

        self.add_site_modules(host, build)

    # -- re-parameterisation ------------------------------------------------
    def _merge_plan(self, host) -> List[Tuple[nn.Module, str, str, str]]:
        """``(block, attribute, site, name of the reading layer)`` of every
        adapter; raises, changing nothing, when one cannot be folded."""
        names = {id(m): n for n, m in host.named_modules()}
        layer_names: Dict[str, List[str]] = {}
        plan = []
        for _, blocks in host.peft_stages():
            for block in blocks:
                prefix = names[id(block)] + '.'
                for site, attr in host.block_sites.items():
                    if not isinstance(block._modules.get(attr),
                                      RepAdapterModule):
                        continue
                    alias = host.site_readers.get(site)
                    if alias is None:
                        raise ValueError(self._unmergeable(
                            host, site, 'no frozen layer reads its output '
                            'directly'))
                    if alias not in layer_names:
                        layer_names[alias] = list(host.named_layers(alias))
                    found = [
                        n for n in layer_names[alias] if n.startswith(prefix)
                    ]
                    if len(found) != 1:
                        raise ValueError(
                            f'RepAdapter: expected one {alias!r} layer in '
                            f'{prefix[:-1]} of {type(host).__name__}, found '
                            f'{found}')
                    why = self._not_linear(host.get_submodule(found[0]))
                    if why:
                        raise ValueError(
                            self._unmergeable(
                                host, site,
                                f'it feeds {found[0]} ({alias}), {why}'))
                    plan.append((block, attr, site, found[0]))
        return plan

    @staticmethod
    def _not_linear(layer: nn.Module) -> str:
        """Why ``layer`` cannot take in an affine map of its input ('' when
        it can: a linear layer or a 1x1 conv, see ``not_linear``)."""
        if isinstance(layer, nn.Conv2d) and layer.groups > 1 \
                and layer.groups == layer.in_channels:
            return ('a depthwise conv with zero padding: it cannot take in '
                    'the channel mixing (a depthwise kernel mixes no '
                    'channels), and the bias would reach the border pixels '
                    'through the padding differently')
        return not_linear(layer)

    def _unmergeable(self, host, site: str, why: str) -> str:
        mergeable = tuple(
            s for s, alias in host.site_readers.items() if not any(
                map(self._not_linear, host.named_layers(alias).values())))
        return (f'RepAdapter cannot be merged exactly on '
                f'{type(host).__name__}: the adapter at {site!r} cannot be '
                f'folded, {why}. Mergeable sites of {type(host).__name__}: '
                f'{mergeable}.')

    def merge(self, host) -> None:
        """Fold every adapter into the frozen layer that reads its output
        and remove it from its site; the model then computes what it
        computed in eval mode.

        The host names that layer (``site_readers``: Swin and ViT
        ``attn_in`` -> ``qkv``, VMamba ``ssm_in`` -> ``in_proj``, all
        ``mlp_in`` -> ``fc1``); it must be linear. A layer without a bias
        (VMamba's ``in_proj``) gets one, frozen: its state dict gains
        ``<layer>.bias``. On ConvNeXt (``pre_dwconv`` feeds a depthwise
        conv) this raises, as does any site without a reader.

        On Swin with maps that are not multiples of the window size (e.g.
        the 128 x 128 map of a 512 x 512 crop with window 7), mmseg pads the
        normalised tokens with zeros inside the attention, after the
        ``attn_in`` adapter: the padded tokens then give ``qkv``'s bias
        before merging and ``qkv(adapter(0))`` after, and the outputs differ
        unless the adapters' biases are zero. VMamba pads after ``in_proj``:
        exact at every size.

        :meth:`unmerge` undoes it; the weights before are kept until then.
        """
        plan = self._merge_plan(host)
        if not plan:
            merged = ' (it is merged: unmerge(host) first)' \
                if self.is_merged(host) else ''
            raise ValueError(f'RepAdapter: {type(host).__name__} holds no '
                             f'RepAdapter module to merge{merged}')
        names = {id(m): n for n, m in host.named_modules()}
        created = []
        for block, attr, _, layer_name in plan:
            layer = host.get_submodule(layer_name)
            bias = None if layer.bias is None else layer.bias.detach().clone()
            adapter = block._modules[attr]
            self._folded.append(
                (names[id(block)], attr, list(block._modules).index(attr),
                 adapter, layer_name, layer.weight.detach().clone(), bias))
            if adapter.fold_into(layer):
                created.append(layer_name + '.bias')
            del block._modules[attr]
        host.add_frozen_parameters(created)

    def is_merged(self, host) -> bool:
        return bool(self._folded)

    @torch.no_grad()
    def unmerge(self, host) -> None:
        """Undo :meth:`merge`: the frozen layers' weights and biases as they
        were (bit for bit; a created bias goes) and the adapters back at
        their sites."""
        if not self._folded:
            raise ValueError(
                f'RepAdapter is not merged into {type(host).__name__}')
        for block_name, attr, index, adapter, layer_name, weight, bias in \
                reversed(self._folded):
            layer = host.get_submodule(layer_name)
            layer.weight.copy_(weight)
            if bias is None:
                layer.register_parameter('bias', None)
            else:
                layer.bias.copy_(bias)
            modules = host.get_submodule(block_name)._modules
            items = list(modules.items())
            items.insert(index, (attr, adapter))
            modules.clear()
            modules.update(items)
        self._folded = []
