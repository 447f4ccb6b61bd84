"""Plain Vision Transformer (classification and SETR), with strict loading.

Key layouts it loads (ViT-L/16 shown: C = 1024, 24 blocks, 14 x 14 patches
at 224)::

    timm / Google (``jx_vit_large_p16_224-4ee7a4dc.pth``,
    ``vit_large_patch16_224.augreg_in21k``: a bare state dict)
        cls_token                    [1, 1, C]
        pos_embed                    [1, 1 + 14*14, C]
        patch_embed.proj.weight      [C, 3, 16, 16]
        blocks.i.norm1.weight        [C]
        blocks.i.attn.qkv.weight     [3C, C]   (q, k, v thirds)
        blocks.i.attn.proj.weight    [C, C]
        blocks.i.norm2.weight        [C]
        blocks.i.mlp.fc1.weight      [4C, C]
        blocks.i.mlp.fc2.weight      [C, 4C]
        norm.weight                  [C]       final norm
        head.weight                  [classes, C]  (21843 for IN-21K;
                                                    pre_logits.fc.* in some)

    MAE (``mae_pretrain_vit_base.pth``, weights under 'model'): the same
    keys without a head.

    mmpretrain (OpenMMLab-converted files, optionally under ``backbone.``)
        cls_token, pos_embed, patch_embed.projection.*,
        layers.i.ln1.*, layers.i.attn.qkv.*, layers.i.attn.proj.*,
        layers.i.ln2.*, layers.i.ffn.layers.0.0.* (fc1),
        layers.i.ffn.layers.1.* (fc2), ln1.* (final norm)
"""
import math
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Union

import torch
from mmengine.logging import print_log
from mmpretrain.models.backbones import VisionTransformer
from mmpretrain.models.utils import resize_pos_embed

from mmparax.registry import MODELS
from .host import PEFTHostMixin, mixer_mlp_sites

_BLOCKS = 'layers.*.'
_TIMM_BLOCK_KEY = re.compile(r'^blocks\.(\d+)\.(.*)$')
# timm / Google names inside a block -> mmpretrain's
_TIMM_BLOCK_NAMES = (
    ('norm1.', 'ln1.'),
    ('norm2.', 'ln2.'),
    ('attn.qkv.', 'attn.qkv.'),
    ('attn.proj.', 'attn.proj.'),
    ('mlp.fc1.', 'ffn.layers.0.0.'),
    ('mlp.fc2.', 'ffn.layers.1.'),
    ('ls1.gamma', 'attn.gamma1.weight'),
    ('ls2.gamma', 'ffn.gamma2.weight'),
)
_TIMM_TOP_NAMES = (
    ('patch_embed.proj.', 'patch_embed.projection.'),
    ('norm_pre.', 'pre_norm.'),
    ('norm.', 'ln1.'),
)
#: out types whose outputs are maps of patch tokens (blocks are grouped at
#: the output indices by default)
_DENSE_OUT_TYPES = ('featmap', 'raw')


def is_timm_layout(state_dict: Dict) -> bool:
    """Whether ``state_dict`` holds timm / Google / MAE-layout ViT blocks."""
    return any(k.startswith(('blocks.', 'patch_embed.proj.'))
               for k in state_dict)


def timm_to_mmpretrain(state_dict: Dict) -> 'OrderedDict':
    """timm / Google / MAE ViT state dict -> mmpretrain backbone layout.

    ``blocks.i.{norm1, norm2, mlp.fc1, mlp.fc2, ls1, ls2}`` become
    ``layers.i.{ln1, ln2, ffn.layers.0.0, ffn.layers.1, attn.gamma1,
    ffn.gamma2}``, ``patch_embed.proj`` ``patch_embed.projection``, the final
    ``norm`` ``ln1`` and ``norm_pre`` ``pre_norm``; ``cls_token``,
    ``pos_embed`` and the classifier (``head.*``, ``pre_logits.*``) keep
    their names. Tensors are unchanged; other keys are kept as they are (the
    loader then names them).
    """
    out = OrderedDict()
    for key, value in state_dict.items():
        block = _TIMM_BLOCK_KEY.match(key)
        if block:
            index, name = block.groups()
            for old, new in _TIMM_BLOCK_NAMES:
                if name.startswith(old):
                    key = f'layers.{index}.{new}{name[len(old):]}'
                    break
        else:
            for old, new in _TIMM_TOP_NAMES:
                if key.startswith(old):
                    key = new + key[len(old):]
                    break
        out[key] = value
    return out


@MODELS.register_module()
class ViT(PEFTHostMixin, VisionTransformer):
    """mmpretrain's VisionTransformer as a PEFT host (mmpretrain, mmseg).

    One class for classification (``out_type='cls_token'``) and SETR
    (``out_type='featmap'``, ``out_indices=(9, 14, 19, 23)``: maps
    [B, C, H/16, W/16]). Switched off, it computes exactly mmpretrain's
    ``VisionTransformer``; parameter names are mmpretrain's.

    Sites: :func:`mixer_mlp_sites` of ``'attn'`` (``post_attn`` after the
    attention residual, ``post_mlp`` after the MLP residual, ...). Their
    modules see the patch tokens, [B, H*W, C] on the (H, W) patch grid, and
    the class token passes them unchanged (``mlp_parallel`` adds its delta
    to the patch tokens), unless the method adapts the class token
    (``PEFTMethod.adapts_class_token``, as its official ViT code): they then
    see every token, [B, 1 + H*W, C]. ``attn_tokens`` (held in
    ``prompts``): the extra tokens its module returns are inserted after
    the class token, take part in the block and are removed after it, so
    every token's attention sees them as keys and values (e.g. VPT-deep's
    prompts). Layers: ``qkv`` (fused, [3C, C]), ``proj``, ``fc1``, ``fc2``.
    New layers: none (the final norm ``ln1`` is pretrained and frozen),
    except ``ln2``, the norm of pooled features, with
    ``out_type='avg_featmap'``.

    :meth:`peft_stages` gives groups of consecutive blocks (``block_groups``;
    by default groups ending at the output blocks of a dense ``out_type``
    (``featmap``, ``raw``), e.g. (10, 5, 5, 4) for the 24 blocks of ViT-L
    with ``out_indices=(9, 14, 19, 23)``, else one group of all blocks):
    ParaX builds one expert center per group.

    Loads timm / Google checkpoints (e.g. the ViT-L/16 IN-21K release), the
    MAE release and OpenMMLab-converted files through
    ``init_cfg=dict(type='Pretrained', checkpoint=...)`` (see the module
    docstring), resizing the position embeddings to ``img_size`` with
    ``interpolate_mode``; the classifier (``head.*``, ``pre_logits.*``) is
    dropped; anything else that does not fit raises.

    Args:
        peft (dict, optional): The PEFT method, e.g.
            ``dict(type='ParaX', hidden_dim=128)``. Default: None (full
            fine-tuning).
        out_indices (int | Sequence[int]): Blocks whose outputs are
            returned. Default: -1.
        block_groups (Sequence[int], optional): Lengths of the groups of
            consecutive blocks, summing to the depth. Default: None (see
            above).
        with_cp (bool): Non-reentrant activation checkpointing per block
            (with its method modules). Default: False.
        **kwargs: Other arguments of mmpretrain's ``VisionTransformer``
            (``arch``, ``img_size``, ``patch_size``, ``out_type``,
            ``final_norm``, ``with_cls_token``, ``pre_norm``,
            ``interpolate_mode``, ``drop_path_rate``, ``init_cfg``, ...).

    Returns (forward): tuple, one per output block: [B, C] (``cls_token``,
    ``avg_featmap``), [B, C, H/p, W/p] (``featmap``) or [B, 1 + H*W/p^2, C]
    (``raw``).
    """

    block_sites = dict(mixer_mlp_sites('attn'), attn_tokens='prompts')
    token_mixer = 'global self-attention'
    site_readers = dict(attn_in='qkv', mlp_in='fc1')
    layer_aliases = dict(
        qkv=_BLOCKS + 'attn.qkv',
        proj=_BLOCKS + 'attn.proj',
        fc1=_BLOCKS + 'ffn.layers.0.0',
        fc2=_BLOCKS + 'ffn.layers.1')
    no_frozen_stages = 0  # mmpretrain freezes from frozen_stages=1 on

    def __init__(self,
                 peft: Optional[dict] = None,
                 out_indices: Union[int, Sequence[int]] = -1,
                 block_groups: Optional[Sequence[int]] = None,
                 with_cp: bool = False,
                 **kwargs):
        if not isinstance(out_indices, int):
            out_indices = list(out_indices)
        super().__init__(out_indices=out_indices, **kwargs)
        self.with_cp = with_cp
        self.block_groups = self._check_groups(block_groups)
        self.init_peft(peft)

    def _check_groups(self, groups) -> tuple:
        depth = self.num_layers
        if groups is None:
            if self.out_type not in _DENSE_OUT_TYPES:
                return (depth, )
            ends = sorted({i + 1 for i in self.out_indices if i < depth})
            if not ends or ends[-1] != depth:
                ends.append(depth)
            return tuple(b - a for a, b in zip([0] + ends[:-1], ends))
        if isinstance(groups, (str, bytes)) or not isinstance(
                groups, Sequence) or not groups or not all(
                    isinstance(g, int) and not isinstance(g, bool) and g > 0
                    for g in groups) or sum(groups) != depth:
            raise ValueError(
                f'{type(self).__name__}: block_groups must be a list of '
                f'positive integers summing to the depth {depth} (lengths of '
                'groups of consecutive blocks), or None, got '
                f'{groups!r}')
        return tuple(groups)

    # -- what the host offers ------------------------------------------------
    def peft_stages(self):
        blocks, start, stages = list(self.layers), 0, []
        for size in self.block_groups:
            stages.append((self.embed_dims, blocks[start:start + size]))
            start += size
        return stages

    def new_module_names(self) -> List[str]:
        # the norm of pooled features is not in pretrained checkpoints
        return ['ln2'] if self.out_type == 'avg_featmap' else []

    # -- pretrained weights --------------------------------------------------
    def convert_checkpoint(self, state_dict: Dict) -> Dict:
        if is_timm_layout(state_dict):
            print_log(f'{type(self).__name__}: converting a timm / Google / '
                      'MAE-layout checkpoint', logger='current')
            state_dict = timm_to_mmpretrain(state_dict)
        return state_dict

    def ignored_checkpoint_keys(self, key: str) -> bool:
        if key.startswith(('head.', 'pre_logits.')):  # ImageNet classifier
            return True
        if key.startswith('ln1.'):  # the final norm
            return not self.final_norm
        if key.startswith('ln2.'):  # the norm of pooled features
            return self.out_type != 'avg_featmap'
        return key == 'cls_token' and not self.with_cls_token

    def adapt_checkpoint(self, state_dict: Dict) -> Dict:
        """Resize ``pos_embed`` to the patch grid of ``img_size`` (dropping
        the class-token position when the model has no class token)."""
        pos = state_dict.get('pos_embed')
        own = self.pos_embed
        if pos is None or pos.dim() != 3 or pos.shape == own.shape:
            return state_dict
        extra = 1 if 'cls_token' in state_dict else 0
        if extra < self.num_extra_tokens:
            raise ValueError(
                f'pos_embed of the checkpoint {tuple(pos.shape)} has no '
                f'class-token position (no cls_token key); '
                f'{type(self).__name__} has a class token: set '
                'with_cls_token=False')
        shape = tuple(pos.shape)
        pos = pos[:, extra - self.num_extra_tokens:]
        grid = pos.shape[1] - self.num_extra_tokens
        side = math.isqrt(grid)
        if side * side != grid:
            raise ValueError(
                f'pos_embed of the checkpoint {shape}: {grid} patch '
                'positions are not a square grid')
        if pos.shape[2] == own.shape[2]:
            print_log(
                f'{type(self).__name__}: resizing pos_embed from a '
                f'{side}x{side} to a {self.patch_resolution[0]}x'
                f'{self.patch_resolution[1]} patch grid '
                f'({self.interpolate_mode})', logger='current')
            pos = resize_pos_embed(pos, (side, side), self.patch_resolution,
                                   self.interpolate_mode,
                                   self.num_extra_tokens)
        state_dict['pos_embed'] = pos
        return state_dict

    # -- forward -------------------------------------------------------------
    def patch_site(self, block, site: str, x: torch.Tensor, hw_shape,
                   skip: int) -> torch.Tensor:
        """:meth:`site` on the tokens ``x[:, skip:]``; the first ``skip``
        tokens (class token, prompts) pass unchanged."""
        if not self.has_site(block, site):
            return x
        patches = self.site(block, site, x[:, skip:], hw_shape)
        return torch.cat((x[:, :skip], patches), dim=1) if skip else patches

    def forward_block(self, block, x, hw_shape):
        """mmpretrain's ``TransformerEncoderLayer`` with the method's sites;
        x: [B, extra + H*W, C] -> same (extra: the class token)."""
        skip = self.num_extra_tokens
        extra = self.extra_tokens(block, x, hw_shape)
        if extra is not None:
            extra = extra.expand(x.shape[0], -1, -1).to(x.dtype)
            x = torch.cat((x[:, :skip], extra, x[:, skip:]), dim=1)
            skip += extra.shape[1]
        prompted = skip  # tokens before the patches
        if self.peft is not None and self.peft.adapts_class_token:
            skip = 0
        h = self.patch_site(block, 'pre_attn', x, hw_shape, skip)
        h = self.patch_site(block, 'attn_in', block.ln1(h), hw_shape, skip)
        h = block.attn(h)  # drop path inside
        x = x + self.patch_site(block, 'attn_out', h, hw_shape, skip)
        x = self.patch_site(block, 'post_attn', x, hw_shape, skip)
        h = self.patch_site(block, 'pre_mlp', x, hw_shape, skip)
        h = self.patch_site(block, 'mlp_in', block.ln2(h), hw_shape, skip)
        if self.has_site(block, 'mlp_out'):
            h = block.ffn(h, identity=0)  # the branch alone, drop path in
            out = x + self.patch_site(block, 'mlp_out', h, hw_shape, skip)
        else:
            out = block.ffn(h, identity=x)
        if self.has_site(block, 'mlp_parallel'):
            delta = self.site(block, 'mlp_parallel', x[:, skip:], hw_shape)
            out = torch.cat((out[:, :skip], out[:, skip:] + delta), dim=1)
        out = self.patch_site(block, 'post_mlp', out, hw_shape, skip)
        if extra is not None:
            out = torch.cat(
                (out[:, :self.num_extra_tokens], out[:, prompted:]), dim=1)
        return out

    def forward(self, x):
        B = x.shape[0]
        x, hw_shape = self.patch_embed(x)
        if self.cls_token is not None:
            x = torch.cat((self.cls_token.expand(B, -1, -1), x), dim=1)
        x = x + resize_pos_embed(
            self.pos_embed,
            self.patch_resolution,
            hw_shape,
            mode=self.interpolate_mode,
            num_extra_tokens=self.num_extra_tokens)
        x = self.pre_norm(self.drop_after_pos(x))

        outs = []
        for i, layer in enumerate(self.layers):
            x = self.run_block(self.forward_block, layer, x, hw_shape)
            if i == len(self.layers) - 1 and self.final_norm:
                x = self.ln1(x)
            if i in self.out_indices:
                outs.append(self._format_output(x, hw_shape))
        return tuple(outs)
