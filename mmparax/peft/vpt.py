r"""VPT-deep: learnable prompt tokens in every block (Jia et al., ECCV 2022).

Each block owns ``p`` prompt tokens ``P`` [p, C]. On Swin they join the
shifted-window attention: the block's ``norm1`` normalises them like the
tokens, and every window of N = w*w normalised tokens ``X`` attends to
``Z = [norm1(P); X]``:

.. math::

    \mathrm{Attn}(X) = \mathrm{softmax}\Big(\frac{X W_q (Z W_k)^\top}
    {\sqrt{d}} + [\,0 \mid B\,] + [\,0 \mid M\,]\Big)\, Z W_v

with ``B`` the window's relative position bias and ``M`` the shifted-window
mask (both N x N): prompts get no position bias and are never masked, and
every window, padded ones included, sees the same prompts.

On a plain ViT they are ordinary tokens: before each block the prompts are
inserted after the class token, ``[x_cls; P; X]``, the block runs on the
longer sequence, and their outputs are dropped after it (the next block
gets its own).
"""
import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmparax.registry import PEFT_METHODS
from .base import (PEFTMethod, PEFTModule, check_fraction, check_positive,
                   check_positive_int)

#: why VPT has no place in hosts without token attention
_NO_ATTENTION = dict(
    ConvNeXt='its blocks mix tokens with depthwise convolutions: there is no '
    'attention that prompt tokens could take part in',
    VMamba='its SS2D blocks mix tokens with selective scans along fixed '
    'spatial orders: there is no attention that prompt tokens could take '
    'part in')


class Prompts(PEFTModule):
    """``p`` learnable prompt tokens of width ``C``, shared by the batch.

    Initialised uniformly in ``[-bound, bound]``. Dropout acts on the
    [p, C] set before the batch shares it (the official deep prompts of
    Swin), or with ``per_sample`` on [B, p, C], one mask per sample (the
    official prompts of Swin's first block and of every ViT block).

    Args:
        num_tokens (int): p.
        channels (int): C.
        bound (float): Bound of the uniform initialisation.
        dropout (float): Dropout on the prompts. Default: 0.
        per_sample (bool): One dropout mask per sample. Default: False.
    """

    peft_component = 'prompts'

    def __init__(self,
                 num_tokens: int,
                 channels: int,
                 bound: float,
                 dropout: float = 0.,
                 per_sample: bool = False):
        super().__init__()
        self.bound, self.per_sample = bound, per_sample
        self.prompts = nn.Parameter(torch.empty(num_tokens, channels))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        nn.init.uniform_(self.prompts, -self.bound, self.bound)

    def switch_off(self):
        raise NotImplementedError(
            f'{type(self).__name__}: prompt tokens always add keys and values '
            'to the attention, whatever their value; VPT has no exact no-op')

    def tokens(self, batch: int = 1) -> torch.Tensor:
        """The prompts after dropout: [p, C], or [batch, p, C] with
        ``per_sample`` while dropout is active."""
        if self.per_sample and self.training and not isinstance(
                self.dropout, nn.Identity):
            return self.dropout(self.prompts.expand(batch, -1, -1))
        return self.dropout(self.prompts)


class WindowPrompts(Prompts):
    """Prompts prepended to every window of a Swin block's attention.

    Runs the block's mmseg ``ShiftWindowMSA`` (its padding to a multiple of
    the window, cyclic shift, frozen ``qkv`` / ``proj``, relative position
    bias, shift mask, attention dropout and drop path) with the prompts as
    extra keys and values in every window; see the module docstring. The
    official code also computes the prompts' own outputs, averages them over
    the windows and passes them on, but the next block replaces them with its
    own prompts and patch merging ignores them: they reach no feature map of
    a dense-prediction backbone, so they are not computed here.
    """

    def forward(self, block: nn.Module, x: torch.Tensor,
                hw_shape) -> torch.Tensor:
        """The attention branch of ``block`` on its normalised input.

        Args:
            block (nn.Module): An mmseg ``SwinBlock``.
            x (Tensor): Normalised tokens, [B, H*W, C].
            hw_shape (tuple[int, int]): (H, W).

        Returns:
            Tensor: [B, H*W, C], drop path included.
        """
        attn = block.attn
        size, shift = attn.window_size, attn.shift_size
        B, L, C = x.shape
        H, W = hw_shape
        x = x.view(B, H, W, C)
        x = F.pad(x, (0, 0, 0, (size - W % size) % size, 0,
                      (size - H % size) % size))
        Hp, Wp = x.shape[1], x.shape[2]
        mask = None
        if shift > 0:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
            mask = shift_window_mask(Hp, Wp, size, shift, x.device)
        windows = attn.window_partition(x).view(-1, size * size, C)
        prompts = block.norm1(self.tokens(B))
        out = window_attention(attn.w_msa, windows, prompts, mask)
        x = attn.window_reverse(out.view(-1, size, size, C), Hp, Wp)
        if shift > 0:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        x = x[:, :H, :W].contiguous().view(B, H * W, C)
        return attn.drop(x)


class PrependedPrompts(Prompts):
    """Prompts prepended to the tokens of a ViT block (after the class
    token).

    Called by the host before the block; the host removes the prompts'
    outputs after it. Dropout acts on the prompts of each sample (on
    [B, p, C]), as in the official ViT code.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **dict(kwargs, per_sample=True))

    @property
    def num_tokens(self) -> int:
        return self.prompts.shape[0]

    def forward(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """``x`` with the prompts inserted before token ``start``.

        Args:
            x (Tensor): Tokens [B, L, C] (class token first).
            start (int): Where the prompts go (1 after a class token).

        Returns:
            Tensor: [B, L + p, C].
        """
        prompts = self.tokens(x.shape[0]).expand(x.shape[0], -1, -1)
        return torch.cat((x[:, :start], prompts.to(x.dtype), x[:, start:]),
                         dim=1)


def shift_window_mask(H: int, W: int, size: int, shift: int,
                      device=None) -> torch.Tensor:
    """mmseg's shifted-window mask of an [H, W] map (multiples of ``size``)
    after a cyclic shift by ``shift``: [nW, N, N], -100 between tokens of
    different regions, else 0."""

    def regions(n):
        ids = torch.zeros(n, dtype=torch.long, device=device)
        ids[n - size:n - shift] = 1
        ids[n - shift:] = 2
        return ids

    ids = regions(H)[:, None] * 3 + regions(W)[None, :]
    ids = ids.view(H // size, size, W // size, size).transpose(1, 2)
    ids = ids.reshape(-1, size * size)
    mask = torch.zeros(ids.shape[0], size * size, size * size, device=device)
    return mask.masked_fill(ids[:, None, :] != ids[:, :, None], -100.0)


def window_attention(w_msa: nn.Module, x: torch.Tensor,
                     prompts: torch.Tensor,
                     mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """mmseg's ``WindowMSA`` with prompts as extra keys and values.

    Args:
        w_msa (nn.Module): The frozen ``WindowMSA``.
        x (Tensor): Windows, [B*nW, N, C].
        prompts (Tensor): Normalised prompts, [p, C], the same in every
            window, or [B, p, C], those of each sample's windows.
        mask (Tensor, optional): Shift mask [nW, N, N] of the tokens.

    Returns:
        Tensor: The tokens' outputs, [B*nW, N, C].
    """
    Bw, N, C = x.shape
    p, heads = prompts.shape[-2], w_msa.num_heads
    q, k, v = w_msa.qkv(x).reshape(Bw, N, 3, heads,
                                   C // heads).permute(2, 0, 3, 1, 4)
    # the prompts' keys and values: [1 or B, heads, p, C / heads]
    prompts = prompts.view(-1, p, C)
    _, pk, pv = w_msa.qkv(prompts).reshape(-1, p, 3, heads,
                                           C // heads).permute(2, 0, 3, 1, 4)
    if pk.shape[0] > 1:  # windows are sample-major
        pk, pv = (t.repeat_interleave(Bw // t.shape[0], dim=0)
                  for t in (pk, pv))
    k = torch.cat((pk.expand(Bw, -1, -1, -1), k), dim=2)
    v = torch.cat((pv.expand(Bw, -1, -1, -1), v), dim=2)
    attn = (q * w_msa.scale) @ k.transpose(-2, -1)  # [B*nW, heads, N, p+N]
    bias = w_msa.relative_position_bias_table[
        w_msa.relative_position_index.view(-1)].view(N, N, -1)
    attn = attn + F.pad(bias.permute(2, 0, 1), (p, 0)).unsqueeze(0)
    if mask is not None:
        nW = mask.shape[0]
        attn = attn.view(Bw // nW, nW, heads, N, p + N) + F.pad(
            mask, (p, 0)).unsqueeze(1).unsqueeze(0)
        attn = attn.view(Bw, heads, N, p + N)
    attn = w_msa.attn_drop(w_msa.softmax(attn))
    x = (attn @ v).transpose(1, 2).reshape(Bw, N, C)
    return w_msa.proj_drop(w_msa.proj(x))


@PEFT_METHODS.register_module()
class VPT(PEFTMethod):
    """Visual Prompt Tuning, deep: a fresh set of p prompts per block.

    Placement: Swin, one :class:`WindowPrompts` [p, C] per block at the
    ``attn_prompts`` site (prompts join every attention window; see the
    module docstring); ViT, one :class:`PrependedPrompts` [p, C] per block
    at the ``prompts`` site (prepended after the class token, removed after
    the block). ConvNeXt and VMamba have no attention over tokens and raise.
    Trainable: p * C per block.

    The prompts start uniform in ``[-v, v]``,
    ``v = sqrt(6 / (3 * patch_h * patch_w + C_0))`` with the host's patch
    size and first-stage width ``C_0`` (the same bound for every stage), as
    in the official code.

    Paper: M. Jia, L. Tang, B.-C. Chen, C. Cardie, S. Belongie,
    B. Hariharan, S.-N. Lim, "Visual Prompt Tuning", ECCV 2022. Code:
    https://github.com/KMnP/vpt (``PromptedSwinTransformer``,
    ``PromptedTransformer``). The official default is p = 5; p = 10 gives
    the ParaX paper's # P. On ViT the prompts' outputs reach no output:
    the official code reads the class token (as ``out_type='cls_token'``);
    its MAE variant by default averages patch and prompt tokens, while
    ``out_type='avg_featmap'`` averages the patch tokens only.

    Args:
        num_tokens (int): p, prompts per block. Default: 10.
        dropout (float): Dropout on the prompts, as the official code: one
            mask per sample in Swin's first block and in every ViT block,
            one per batch in Swin's other blocks. Default: 0.
        init_bound (float, optional): v; None: the official bound above.
            Default: None.
    """

    #: (site, module): the first placement the host offers is taken
    placements = (('attn_prompts', WindowPrompts),
                  ('prompts', PrependedPrompts))

    def __init__(self,
                 num_tokens: int = 10,
                 dropout: float = 0.,
                 init_bound: Optional[float] = None):
        super().__init__(sites=())
        check_positive_int(self.name, 'num_tokens', num_tokens)
        check_fraction(self.name, 'dropout', dropout)
        if init_bound is not None:
            check_positive(self.name, 'init_bound', init_bound, ' or None')
        self.num_tokens, self.dropout = num_tokens, float(dropout)
        self.init_bound = init_bound

    def _placement(self, host):
        for site, module in self.placements:
            if site in host.block_sites:
                return site, module
        name = type(host).__name__
        why = next((_NO_ATTENTION[c.__name__] for c in type(host).__mro__
                    if c.__name__ in _NO_ATTENTION),
                   'it offers no site where tokens can join its attention')
        raise ValueError(
            f'VPT prepends prompt tokens to the tokens of self-attention and '
            f'does not apply to {name}: {why} (sites it offers: '
            f'{tuple(host.block_sites)}; VPT needs one of '
            f'{tuple(s for s, _ in self.placements)})')

    def official_bound(self, host) -> float:
        """``sqrt(6 / (3 * patch_h * patch_w + C_0))`` of ``host``."""
        conv = getattr(getattr(host, 'patch_embed', None), 'projection', None)
        kernel = getattr(conv, 'kernel_size', None)
        if kernel is None:
            raise ValueError(f'VPT cannot find the patch size of '
                             f'{type(host).__name__} (patch_embed.projection) '
                             'for its initialisation bound; give init_bound')
        return math.sqrt(6. / (3 * math.prod(kernel) +
                               host.peft_stages()[0][0]))

    def attach(self, host) -> None:
        site, module = self._placement(host)
        bound = self.init_bound or self.official_bound(host)
        self.add_site_modules(
            host,
            lambda channels, *_: module(self.num_tokens, channels, bound,
                                        self.dropout),
            sites=(site, ))
        # the official first Swin block takes the prompts prepended to the
        # patch embedding, dropped out per sample
        first = host.peft_stages()[0][1][0]
        first._modules[host.block_sites[site]].per_sample = True
