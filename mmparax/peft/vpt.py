r"""VPT-deep: learnable prompt tokens in every block (Jia et al., ECCV 2022).

Each block owns ``p`` prompt tokens ``P`` [p, C], the module at the host's
``attn_tokens`` site: every token's attention sees them as extra keys and
values. On Swin they join the shifted-window attention: the block's
``norm1`` normalises them like the tokens, and every window of N = w*w
normalised tokens ``X`` attends to ``Z = [norm1(P); X]``:

.. math::

    \mathrm{Attn}(X) = \mathrm{softmax}\Big(\frac{X W_q (Z W_k)^\top}
    {\sqrt{d}} + [\,0 \mid B\,] + [\,0 \mid M\,]\Big)\, Z W_v

with ``B`` the window's relative position bias and ``M`` the shifted-window
mask (both N x N): prompts get no position bias and are never masked, and
every window, padded ones included, sees the same prompts.

On a plain ViT they are ordinary tokens: before each block the prompts are
inserted after the class token, ``[x_cls; P; X]``, the block runs on the
longer sequence, and their outputs are dropped after it (the next block
gets its own). The hosts compute this (``attn_tokens``); the method owns
the prompts.
"""
import math
from typing import Optional, Tuple

import torch
import torch.nn as nn

from mmparax.registry import PEFT_METHODS
from .base import (
    PEFTMethod,
    PEFTModule,
    check_fraction,
    check_positive,
    check_positive_int,
)


class Prompts(PEFTModule):
    """``p`` learnable prompt tokens of width ``C``, shared by the batch.

    Initialised uniformly in ``[-bound, bound]``. Dropout acts on the
    [p, C] set before the batch shares it (the official deep prompts of
    Swin), or with ``per_sample`` on [B, p, C], one mask per sample (the
    official prompts of Swin's first block and of every ViT block). Called
    at the host's ``attn_tokens`` site.

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

    def forward(self, x: torch.Tensor,
                hw_shape: Tuple[int, int]) -> torch.Tensor:
        """The prompts for the block input ``x`` [B, L, C]: :meth:`tokens`
        of its batch."""
        return self.tokens(x.shape[0])


@PEFT_METHODS.register_module()
class VPT(PEFTMethod):
    """Visual Prompt Tuning, deep: a fresh set of p prompts per block.

    Placement: one :class:`Prompts` [p, C] per block at the ``attn_tokens``
    site of hosts with attention (Swin: they join every attention window,
    see the module docstring; ViT: prepended after the class token, removed
    after the block). ConvNeXt and VMamba have no attention over tokens and
    raise. Trainable: p * C per block.

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

    default_sites = ('attn_tokens', )

    def __init__(self,
                 num_tokens: int = 10,
                 dropout: float = 0.,
                 init_bound: Optional[float] = None):
        super().__init__()
        check_positive_int(self.name, 'num_tokens', num_tokens)
        check_fraction(self.name, 'dropout', dropout)
        if init_bound is not None:
            check_positive(self.name, 'init_bound', init_bound, ' or None')
        self.num_tokens, self.dropout = num_tokens, float(dropout)
        self.init_bound = init_bound

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
        bound = self.init_bound or self.official_bound(host)
        # the official deep prompts of a windowed attention are dropped out
        # once per batch, shared by every window; those of a ViT per sample
        per_sample = 'window_attention' not in host.capabilities
        self.add_site_modules(
            host, lambda channels, *_: Prompts(
                self.num_tokens, channels, bound, self.dropout, per_sample))
        # the official first Swin block takes the prompts prepended to the
        # patch embedding, dropped out per sample
        first = host.peft_stages()[0][1][0]
        first._modules[host.block_sites['attn_tokens']].per_sample = True
