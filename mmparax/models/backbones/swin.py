from collections import OrderedDict
from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.models.backbones.swin import swin_converter
from mmengine.logging import print_log
from mmseg.models.backbones import SwinTransformer

from mmparax.registry import MODELS
from .host import PEFTHostMixin, mixer_mlp_sites

_BLOCKS = 'stages.*.blocks.*.'


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


def window_attention(w_msa: nn.Module,
                     x: torch.Tensor,
                     extra: torch.Tensor,
                     mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """mmseg's ``WindowMSA`` with extra tokens as further keys and values,
    without position bias or mask.

    Args:
        w_msa (nn.Module): The frozen ``WindowMSA``.
        x (Tensor): Windows, [B*nW, N, C].
        extra (Tensor): Normalised extra tokens, [p, C], the same in every
            window, or [B, p, C], those of each sample's windows.
        mask (Tensor, optional): Shift mask [nW, N, N] of the tokens.

    Returns:
        Tensor: The tokens' outputs, [B*nW, N, C].
    """
    Bw, N, C = x.shape
    p, heads = extra.shape[-2], w_msa.num_heads
    q, k, v = w_msa.qkv(x).reshape(Bw, N, 3, heads,
                                   C // heads).permute(2, 0, 3, 1, 4)
    # the extra keys and values: [1 or B, heads, p, C / heads]
    extra = extra.view(-1, p, C)
    _, ek, ev = w_msa.qkv(extra).reshape(-1, p, 3, heads,
                                         C // heads).permute(2, 0, 3, 1, 4)
    if ek.shape[0] > 1:  # windows are sample-major
        ek, ev = (t.repeat_interleave(Bw // t.shape[0], dim=0)
                  for t in (ek, ev))
    k = torch.cat((ek.expand(Bw, -1, -1, -1), k), dim=2)
    v = torch.cat((ev.expand(Bw, -1, -1, -1), v), dim=2)
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


@MODELS.register_module()
class Swin(PEFTHostMixin, SwinTransformer):
    """mmseg's Swin Transformer as a PEFT host (mmseg and mmdet).

    Sites: :func:`mixer_mlp_sites` of ``'attn'`` (``post_attn`` after the
    attention residual, ``post_mlp`` after the MLP residual, ...), and
    ``attn_tokens`` (held in ``attn_prompts``): extra tokens that every
    window's attention sees as keys and values (:meth:`attention_branch`),
    e.g. VPT's prompts. Capability: ``window_attention``. Layers: ``qkv``,
    ``proj``, ``fc1``, ``fc2``. New layers: the output norms ``norm<i>``.

    Loads official Microsoft checkpoints (``layers.*`` keys, converted on
    load) and OpenMMLab-converted ones (``stages.*``) through
    ``init_cfg=dict(type='Pretrained', checkpoint=...)``, resizing relative
    position tables to the window size; anything that does not fit raises.

    Args:
        peft (dict, optional): The PEFT method, e.g.
            ``dict(type='ParaX', hidden_dim=128)``. Default: None.
        with_cp (bool): Non-reentrant activation checkpointing per block
            (with its method modules). Default: False.
        **kwargs: Arguments of ``mmseg.models.backbones.SwinTransformer``.

    Returns (forward): list of [B, C_i, H/2^(i+2), W/2^(i+2)] feature maps.
    """

    block_sites = dict(mixer_mlp_sites('attn'), attn_tokens='attn_prompts')
    capabilities = ('window_attention', )
    token_mixer = 'shifted-window self-attention'
    site_readers = dict(attn_in='qkv', mlp_in='fc1')
    layer_aliases = dict(
        qkv=_BLOCKS + 'attn.w_msa.qkv',
        proj=_BLOCKS + 'attn.w_msa.proj',
        fc1=_BLOCKS + 'ffn.layers.0.0',
        fc2=_BLOCKS + 'ffn.layers.1')

    def __init__(self, peft: Optional[dict] = None, with_cp=False, **kwargs):
        super().__init__(**kwargs)
        self.with_cp = with_cp  # here, not in the (reentrant) blocks
        self.init_peft(peft)

    def peft_stages(self):
        return [(dim, stage.blocks)
                for dim, stage in zip(self.num_features, self.stages)]

    def convert_checkpoint(self, state_dict: Dict) -> Dict:
        if any(k.startswith('layers.') for k in state_dict):
            print_log(f'{type(self).__name__}: converting a Microsoft-layout '
                      'checkpoint', logger='current')
            state_dict = OrderedDict(
                (k[len('backbone.'):], v)
                for k, v in swin_converter(state_dict).items())
        return state_dict

    def ignored_checkpoint_keys(self, key: str) -> bool:
        # ImageNet classifier norm and head; precomputed shift masks.
        return key.startswith(('norm.', 'head.')) or key.endswith('attn_mask')

    def adapt_checkpoint(self, state_dict: Dict) -> Dict:
        own = self.state_dict()
        pos = state_dict.get('absolute_pos_embed')
        if pos is not None and pos.dim() == 3 and 'absolute_pos_embed' in own \
                and own['absolute_pos_embed'].dim() == 4:
            N, C, H, W = own['absolute_pos_embed'].shape
            state_dict['absolute_pos_embed'] = pos.view(N, H, W, C).permute(
                0, 3, 1, 2)
        for key, table in list(state_dict.items()):
            if key.endswith('relative_position_index') and key in own \
                    and table.shape != own[key].shape:
                # depends only on the window size: keep the model's own
                state_dict[key] = own[key]
                continue
            if not key.endswith('relative_position_bias_table') \
                    or key not in own:
                continue
            (L1, heads1), (L2, heads2) = table.shape, own[key].shape
            if L1 != L2 and heads1 == heads2:
                # another window size: resize the (2w-1)^2 table bicubically
                s1, s2 = int(L1**0.5), int(L2**0.5)
                grid = table.permute(1, 0).reshape(1, heads1, s1, s1)
                grid = F.interpolate(grid, size=(s2, s2), mode='bicubic')
                state_dict[key] = grid.reshape(heads2, L2).permute(1, 0)
        return state_dict

    # -- forward -----------------------------------------------------------
    def attention_branch(self, block, x, hw_shape, extra=None):
        """The attention branch of ``block`` (mmseg's ``ShiftWindowMSA``,
        drop path included) on its normalised input x [B, H*W, C] -> same.

        ``extra`` [p, C] or [B, p, C] (block-input tokens, e.g. from
        :meth:`extra_tokens`), normalised by ``norm1``, joins the keys and
        values of every window, padded ones included, with no position
        bias and no shift mask. Their own outputs are not computed: the
        official VPT averages them over the windows and passes them on, but
        the next block replaces them and patch merging ignores them.
        """
        if extra is None:
            return block.attn(x, hw_shape)
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
        out = window_attention(attn.w_msa, windows, block.norm1(extra), mask)
        x = attn.window_reverse(out.view(-1, size, size, C), Hp, Wp)
        if shift > 0:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        x = x[:, :H, :W].contiguous().view(B, H * W, C)
        return attn.drop(x)

    def forward_block(self, block, x, hw_shape):
        """One block with the method's sites; x: [B, H*W, C] -> same."""
        extra = self.extra_tokens(block, x, hw_shape)
        h = self.site(block, 'pre_attn', x, hw_shape)
        h = self.site(block, 'attn_in', block.norm1(h), hw_shape)
        h = self.attention_branch(block, h, hw_shape, extra)
        x = x + self.site(block, 'attn_out', h, hw_shape)
        x = self.site(block, 'post_attn', x, hw_shape)
        h = self.site(block, 'pre_mlp', x, hw_shape)
        h = self.site(block, 'mlp_in', block.norm2(h), hw_shape)
        if self.has_site(block, 'mlp_out'):
            ffn = block.ffn  # mmcv's FFN without its identity add
            h = ffn.dropout_layer(ffn.gamma2(ffn.layers(h)))
            out = x + self.site(block, 'mlp_out', h, hw_shape)
        else:
            out = block.ffn(h, identity=x)
        if self.has_site(block, 'mlp_parallel'):
            out = out + self.site(block, 'mlp_parallel', x, hw_shape)
        return self.site(block, 'post_mlp', out, hw_shape)

    def forward(self, x):
        x, hw_shape = self.patch_embed(x)
        if self.use_abs_pos_embed:
            x = x + self.absolute_pos_embed
        x = self.drop_after_pos(x)

        outs = []
        for i, stage in enumerate(self.stages):
            for block in stage.blocks:
                x = self.run_block(self.forward_block, block, x, hw_shape)
            out, out_hw_shape = x, hw_shape
            if stage.downsample:
                x, hw_shape = stage.downsample(x, hw_shape)
            if i in self.out_indices:
                out = getattr(self, f'norm{i}')(out)
                out = out.view(-1, *out_hw_shape, self.num_features[i])
                outs.append(out.permute(0, 3, 1, 2).contiguous())
        return outs
