r"""VMamba (v2): a visual state-space backbone.

Every block mixes tokens with SS2D: the feature map is read in four orders
(row-major, column-major and their reverses), each sequence runs through a
selective scan (:func:`mmparax.ops.selective_scan`), and the four outputs are
put back on the grid and summed:

.. math::

    x \leftarrow x + \mathrm{SS2D}(\mathrm{LN}(x)),\qquad
    x \leftarrow x + \mathrm{MLP}(\mathrm{LN}(x))

Feature maps are [B, C, H, W] (stored channels-last) with LayerNorms over
channels.
Module and parameter names are those of the official release, so its
ImageNet checkpoints (``vssm_base_0229_ckpt_epoch_237.pth`` etc., weights
under ``'model'``) load strictly.
"""
import math
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from timm.layers import DropPath, LayerNorm2d, trunc_normal_

from mmparax.ops import selective_scan
from mmparax.registry import MODELS
from .host import PEFTHostMixin, mixer_mlp_sites

NUM_DIRECTIONS = 4
_BLOCKS = 'layers.*.blocks.*.'
# 1x1 projections some releases store as 4-D conv weights [out, in, 1, 1]
_POINTWISE = ('op.in_proj.weight', 'op.out_proj.weight', 'mlp.fc1.weight',
              'mlp.fc2.weight')


def _norm(dim: int) -> nn.Module:
    """LayerNorm over the channels of [B, C, H, W] (PyTorch's eps 1e-5)."""
    return LayerNorm2d(dim, eps=1e-5)


def cross_scan(x: torch.Tensor) -> torch.Tensor:
    """The four scan orders of a feature map.

    Args:
        x (Tensor): [B, C, H, W].

    Returns:
        Tensor: [B, 4, C, H*W]: row-major, column-major, and the reverses of
        both; stored time-major ([B, H*W, 4, C] memory), as the selective
        scan reads it.
    """
    B, C, H, W = x.shape
    grid = x.permute(0, 2, 3, 1)  # [B, H, W, C]
    rows = grid.reshape(B, H * W, C)
    cols = grid.transpose(1, 2).reshape(B, H * W, C)
    xs = torch.stack([rows, cols, rows.flip(1), cols.flip(1)], dim=2)
    return xs.permute(0, 2, 3, 1)


def cross_merge(ys: torch.Tensor, hw_shape: Tuple[int, int]) -> torch.Tensor:
    """Undo each order of :func:`cross_scan` and sum the four.

    Args:
        ys (Tensor): [B, 4, C, H*W] sequences in the orders of
            :func:`cross_scan`.
        hw_shape (tuple[int, int]): (H, W).

    Returns:
        Tensor: [B, C, H, W].
    """
    H, W = hw_shape
    row, col, row_rev, col_rev = ys.unbind(1)
    rows = (row + row_rev.flip(-1)).unflatten(-1, (H, W))
    cols = (col + col_rev.flip(-1)).unflatten(-1, (W, H)).transpose(2, 3)
    return rows + cols


class Linear2d(nn.Linear):
    """Linear layer on the channels of [B, C, H, W]; weight [out, in].

    Runs as a matrix product over channels-last pixels; the output is stored
    channels-last.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.permute(0, 2, 3, 1), self.weight,
                        self.bias).permute(0, 3, 1, 2)


class SS2D(nn.Module):
    """2-D selective scan token mixer (VMamba v2, no gate).

    Args:
        dim (int): Channels C.
        d_state (int): State size N. Default: 1.
        ssm_ratio (float): Inner width E = ssm_ratio * C. Default: 2.0.
        dt_rank (int | str): Rank R of the step-size projection; 'auto' is
            ceil(C / 16). Default: 'auto'.
        d_conv (int): Depthwise conv kernel size. Default: 3.
        conv_bias (bool): Bias of the depthwise conv. Default: False.

    Parameters (K = 4 directions): ``x_proj_weight`` [K, R + 2N, E] (rows
    dt | B | C), ``dt_projs_weight`` [K, E, R], ``dt_projs_bias`` [K, E],
    ``A_logs`` [K*E, N] (A = -exp(A_logs)), ``Ds`` [K*E].
    """

    def __init__(self,
                 dim: int,
                 d_state: int = 1,
                 ssm_ratio: float = 2.0,
                 dt_rank: Union[int, str] = 'auto',
                 d_conv: int = 3,
                 conv_bias: bool = False):
        super().__init__()
        K = NUM_DIRECTIONS
        E = int(ssm_ratio * dim)
        R = math.ceil(dim / 16) if dt_rank == 'auto' else int(dt_rank)
        self.d_inner, self.d_state, self.dt_rank = E, d_state, R
        self.in_proj = Linear2d(dim, E, bias=False)
        self.conv2d = nn.Conv2d(
            E, E, d_conv, padding=(d_conv - 1) // 2, groups=E,
            bias=conv_bias)
        self.act = nn.SiLU()
        self.x_proj_weight = nn.Parameter(torch.empty(K, R + 2 * d_state, E))
        self.dt_projs_weight = nn.Parameter(torch.empty(K, E, R))
        self.dt_projs_bias = nn.Parameter(torch.empty(K, E))
        self.A_logs = nn.Parameter(torch.empty(K * E, d_state))
        self.Ds = nn.Parameter(torch.empty(K * E))
        self.out_norm = _norm(E)
        self.out_proj = Linear2d(E, dim, bias=False)
        self.reset_scan_parameters()

    @torch.no_grad()
    def reset_scan_parameters(self,
                              dt_min: float = 1e-3,
                              dt_max: float = 0.1,
                              dt_floor: float = 1e-4):
        """Mamba's init: step sizes log-uniform in [dt_min, dt_max] after
        softplus, A = -(1..N), D = 1."""
        E, R = self.d_inner, self.dt_rank
        bound = E**-0.5  # nn.Linear's default for the input projection
        self.x_proj_weight.uniform_(-bound, bound)
        self.dt_projs_weight.uniform_(-R**-0.5, R**-0.5)
        dt = torch.empty_like(self.dt_projs_bias).uniform_(
            math.log(dt_min), math.log(dt_max)).exp_().clamp_(min=dt_floor)
        self.dt_projs_bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        states = torch.arange(1, self.d_state + 1, dtype=torch.float32)
        self.A_logs.copy_(states.log().expand_as(self.A_logs))
        self.Ds.fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] -> [B, C, H, W]."""
        x = self.act(self.conv2d(self.in_proj(x)))
        Bsz, E, H, W = x.shape
        K, N, R, L = NUM_DIRECTIONS, self.d_state, self.dt_rank, H * W
        xs = cross_scan(x)  # [B, K, E, L], stored time-major
        # projections per time step: everything stays time-major, so the
        # scan reads its inputs without transposing them
        xs_t = xs.permute(0, 3, 1, 2)  # [B, L, K, E]
        x_dbl = torch.einsum('blke,kce->blkc', xs_t, self.x_proj_weight)
        dts, Bs, Cs = x_dbl.split([R, N, N], dim=3)
        dts = torch.einsum('blkr,ker->blke', dts, self.dt_projs_weight)
        ys = selective_scan(
            xs.reshape(Bsz, K * E, L),
            dts.reshape(Bsz, L, K * E).transpose(1, 2),
            -torch.exp(self.A_logs.float()),
            Bs.permute(0, 2, 3, 1),  # [B, K, N, L]
            Cs.permute(0, 2, 3, 1),
            self.Ds.float(),
            delta_bias=self.dt_projs_bias.float().view(-1),
            delta_softplus=True)
        y = cross_merge(ys.view(Bsz, K, E, L), (H, W))  # fp32
        y = self.out_norm(y.to(self.out_norm.weight.dtype))
        return self.out_proj(y.to(x.dtype))


class Mlp(nn.Module):
    """Channel MLP on [B, C, H, W]: fc1 (C -> hidden), GELU, fc2."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = Linear2d(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = Linear2d(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class VSSBlock(nn.Module):
    """VMamba block: SS2D residual, then MLP residual; x [B, C, H, W].

    Args:
        dim (int): Channels C.
        drop_path (float): Stochastic depth rate. Default: 0.
        mlp_ratio (float): MLP hidden width / C. Default: 4.0.
        **ss2d_kwargs: Arguments of :class:`SS2D`.
    """

    def __init__(self,
                 dim: int,
                 drop_path: float = 0.,
                 mlp_ratio: float = 4.0,
                 **ss2d_kwargs):
        super().__init__()
        self.norm = _norm(dim)
        self.op = SS2D(dim, **ss2d_kwargs)
        self.drop_path = DropPath(drop_path) if drop_path > 0 \
            else nn.Identity()
        self.norm2 = _norm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward_ssm(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.op(self.norm(x)))

    def forward_mlp(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_mlp(self.forward_ssm(x))


class VMambaStage(nn.Module):
    """``blocks`` of one resolution, then ``downsample`` (conv 3x3 s2, LN)."""

    def __init__(self, blocks: List[VSSBlock], dim: int,
                 out_dim: Optional[int]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        if out_dim is None:
            self.downsample = nn.Identity()
        else:
            # Identity slots keep the release's indices (.1 conv, .3 norm)
            self.downsample = nn.Sequential(
                nn.Identity(), nn.Conv2d(dim, out_dim, 3, 2, 1),
                nn.Identity(), _norm(out_dim))


@MODELS.register_module()
class VMamba(PEFTHostMixin, BaseModule):
    """VMamba v2 backbone for dense prediction, a PEFT host.

    Sites: :func:`mixer_mlp_sites` of ``'ssm'`` (``post_ssm`` after the
    SS2D residual, ``post_mlp`` after the MLP residual, ...). Layers:
    ``in_proj``, ``out_proj``, ``dwconv``, ``fc1``, ``fc2``. New layers: the
    output norms ``outnorm<i>``. Parameter names are the official ones.

    Loads the official ImageNet checkpoints strictly
    through ``init_cfg=dict(type='Pretrained', checkpoint=...)``: weights
    under ``'model'``, other entries (optimizer state, a yacs config object)
    are skipped without importing their classes; 4-D 1x1 projection weights
    are reshaped, ``classifier.*`` is dropped, anything else that does not
    fit raises.

    Args:
        peft (dict, optional): The PEFT method. Default: None.
        arch (str | dict): ``'tiny'`` (s1l8: dims 96, depths (2, 2, 8, 2),
            ssm_ratio 1), ``'small'`` (s2l15: dims 96, depths (2, 2, 15, 2),
            ssm_ratio 2) or ``'base'`` (s2l15: dims 128, depths
            (2, 2, 15, 2), ssm_ratio 2); or a dict with ``dims``, ``depths``
            and ``ssm_ratio``. Default: 'base'.
        dims (int | Sequence[int], optional): Overrides the arch's widths;
            an int C gives C * 2^i.
        depths (Sequence[int], optional): Overrides the arch's depths.
        ssm_ratio (float, optional): Overrides the arch's inner-width ratio.
        d_state (int): SSM state size N. Default: 1.
        dt_rank (int | str): Step-size projection rank. Default: 'auto'.
        d_conv (int): Depthwise conv kernel in SS2D. Default: 3.
        conv_bias (bool): Bias of that conv. Default: False.
        mlp_ratio (float): MLP width ratio. Default: 4.0.
        in_channels (int): Input channels. Default: 3.
        drop_path_rate (float): Stochastic depth, rising linearly over all
            blocks from 0 to this value. Default: 0.
        out_indices (Sequence[int]): Stages whose outputs are returned, each
            through a new LayerNorm ``outnorm<i>``. Default: (0, 1, 2, 3).
        frozen_stages (int): Freeze the stem and stages up to this index
            (-1: none). Default: -1.
        with_cp (bool): Non-reentrant activation checkpointing per block.
            Default: False.
        init_cfg (dict, optional): ``dict(type='Pretrained',
            checkpoint=...)`` to load ImageNet weights.

    Returns (forward): tuple of [B, dims[i], H / 2^(i+2), W / 2^(i+2)].
    """

    block_sites = mixer_mlp_sites('ssm')
    # the reference ParaX VMamba trains its adapters only
    # (``set_only_parax_trainable``), not the output norms
    output_norms_follow_method = False
    token_mixer = ('selective scans along fixed spatial orders, not '
                   'attention')
    site_readers = dict(ssm_in='in_proj', mlp_in='fc1')
    layer_aliases = dict(
        in_proj=_BLOCKS + 'op.in_proj',
        out_proj=_BLOCKS + 'op.out_proj',
        dwconv=_BLOCKS + 'op.conv2d',
        fc1=_BLOCKS + 'mlp.fc1',
        fc2=_BLOCKS + 'mlp.fc2')
    # Linear2d layers: [B, C, H, W] maps
    channels_first_layers = ('in_proj', 'out_proj', 'fc1', 'fc2')

    arch_zoo = {
        **dict.fromkeys(['t', 'tiny'],
                        dict(dims=96, depths=(2, 2, 8, 2), ssm_ratio=1.0)),
        **dict.fromkeys(['s', 'small'],
                        dict(dims=96, depths=(2, 2, 15, 2), ssm_ratio=2.0)),
        **dict.fromkeys(['b', 'base'],
                        dict(dims=128, depths=(2, 2, 15, 2), ssm_ratio=2.0)),
    }

    def __init__(self,
                 peft: Optional[dict] = None,
                 arch: Union[str, dict] = 'base',
                 dims: Union[int, Sequence[int], None] = None,
                 depths: Optional[Sequence[int]] = None,
                 ssm_ratio: Optional[float] = None,
                 d_state: int = 1,
                 dt_rank: Union[int, str] = 'auto',
                 d_conv: int = 3,
                 conv_bias: bool = False,
                 mlp_ratio: float = 4.0,
                 in_channels: int = 3,
                 drop_path_rate: float = 0.,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1,
                 with_cp: bool = False,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        arch = self._arch(arch, dims=dims, depths=depths,
                          ssm_ratio=ssm_ratio)
        depths = tuple(arch['depths'])
        dims = arch['dims']
        if isinstance(dims, int):
            dims = [dims * 2**i for i in range(len(depths))]
        if len(dims) != len(depths):
            raise ValueError(f'{len(dims)} dims for {len(depths)} stages: '
                             f'dims={tuple(dims)}, depths={depths}')
        self.dims, self.depths = tuple(dims), depths
        self.num_stages = len(depths)
        out_indices = tuple(
            i + self.num_stages if i < 0 else i for i in out_indices)
        for i in out_indices:
            if not 0 <= i < self.num_stages:
                raise ValueError(f'out_indices {out_indices} outside the '
                                 f'{self.num_stages} stages')
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.with_cp = with_cp

        stem = self.dims[0]
        self.patch_embed = nn.Sequential(
            nn.Conv2d(in_channels, stem // 2, 3, 2, 1), nn.Identity(),
            _norm(stem // 2), nn.Identity(), nn.GELU(),
            nn.Conv2d(stem // 2, stem, 3, 2, 1), nn.Identity(), _norm(stem))
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.layers = nn.ModuleList()
        for i, (dim, depth) in enumerate(zip(self.dims, depths)):
            blocks = [
                VSSBlock(
                    dim,
                    drop_path=rates[sum(depths[:i]) + j],
                    mlp_ratio=mlp_ratio,
                    d_state=d_state,
                    ssm_ratio=arch['ssm_ratio'],
                    dt_rank=dt_rank,
                    d_conv=d_conv,
                    conv_bias=conv_bias) for j in range(depth)
            ]
            out_dim = self.dims[i + 1] if i + 1 < self.num_stages else None
            self.layers.append(VMambaStage(blocks, dim, out_dim))
        for i in out_indices:
            self.add_module(f'outnorm{i}', _norm(self.dims[i]))
        self.apply(self._init_linear_and_norm)
        for module in self._frozen_modules():
            module.requires_grad_(False)
        self.init_peft(peft)

    def peft_stages(self):
        return [(dim, stage.blocks)
                for dim, stage in zip(self.dims, self.layers)]

    @classmethod
    def _arch(cls, arch, **overrides) -> dict:
        if isinstance(arch, str):
            if arch.lower() not in cls.arch_zoo:
                raise ValueError(f'unknown VMamba arch {arch!r}; choose one '
                                 f'of {sorted(set(cls.arch_zoo))} or give a '
                                 'dict with dims, depths and ssm_ratio')
            arch = dict(cls.arch_zoo[arch.lower()])
        else:
            arch = dict(arch)
        arch.update({k: v for k, v in overrides.items() if v is not None})
        missing = {'dims', 'depths', 'ssm_ratio'} - set(arch)
        if missing:
            raise ValueError(f'VMamba arch lacks {sorted(missing)}')
        return arch

    @staticmethod
    def _init_linear_and_norm(m: nn.Module):
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def _frozen_modules(self) -> List[nn.Module]:
        if self.frozen_stages < 0:
            return []
        return [self.patch_embed] + list(self.layers[:self.frozen_stages + 1])

    def train(self, mode: bool = True):
        super().train(mode)
        for module in self._frozen_modules():
            module.eval()  # no drop path in stages frozen by frozen_stages
        return self

    # -- checkpoints -------------------------------------------------------
    def new_module_names(self) -> List[str]:
        return [f'outnorm{i}' for i in self.out_indices]

    def ignored_checkpoint_keys(self, key: str) -> bool:
        return key.startswith('classifier.')  # ImageNet norm and head

    def convert_checkpoint(self, state_dict: Dict) -> Dict:
        """Reshape 1x1 projections stored as 4-D conv weights to 2-D."""
        out = OrderedDict()
        for key, value in state_dict.items():
            if key.endswith(_POINTWISE) and value.dim() == 4 \
                    and value.shape[2:] == (1, 1):
                value = value.flatten(1)
            out[key] = value
        return out

    # -- forward -----------------------------------------------------------
    def forward_block(self, block: VSSBlock, x: torch.Tensor) -> torch.Tensor:
        """One block with the method's sites; x: [B, C, H, W] -> same."""
        h = self.site_map(block, 'pre_ssm', x)
        h = self.site_map(block, 'ssm_in', block.norm(h))
        x = x + self.site_map(block, 'ssm_out', block.drop_path(block.op(h)))
        x = self.site_map(block, 'post_ssm', x)
        h = self.site_map(block, 'pre_mlp', x)
        h = self.site_map(block, 'mlp_in', block.norm2(h))
        h = self.site_map(block, 'mlp_out', block.drop_path(block.mlp(h)))
        out = x + h
        if self.has_site(block, 'mlp_parallel'):
            out = out + self.site_map(block, 'mlp_parallel', x)
        return self.site_map(block, 'post_mlp', out)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """x: [B, 3, H, W] -> tuple of [B, dims[i], H_i, W_i]."""
        x = self.patch_embed(x)
        outs = []
        for i, stage in enumerate(self.layers):
            for block in stage.blocks:
                x = self.run_block(self.forward_block, block, x)
            if i in self.out_indices:
                outs.append(getattr(self, f'outnorm{i}')(x).contiguous())
            x = stage.downsample(x)
        return tuple(outs)
