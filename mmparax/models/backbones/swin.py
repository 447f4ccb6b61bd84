from collections import OrderedDict
from typing import Dict, Optional

import torch.nn.functional as F
from mmdet.models.backbones.swin import swin_converter
from mmengine.logging import print_log
from mmseg.models.backbones import SwinTransformer

from mmparax.registry import MODELS
from .host import PEFTHostMixin, mixer_mlp_sites

_BLOCKS = 'stages.*.blocks.*.'


@MODELS.register_module()
class Swin(PEFTHostMixin, SwinTransformer):
    """mmseg's Swin Transformer as a PEFT host (mmseg and mmdet).

    Sites: :func:`mixer_mlp_sites` of ``'attn'`` (``post_attn`` after the
    attention residual, ``post_mlp`` after the MLP residual, ...), and
    ``attn_prompts``: a module there takes part in the attention itself; it
    is called as ``module(block, x, hw_shape)`` with the normalised tokens
    in place of ``block.attn(x, hw_shape)`` and returns the attention branch
    (drop path included), e.g. VPT's prompt tokens in every window. Layers:
    ``qkv``, ``proj``, ``fc1``, ``fc2``. New layers: the output norms
    ``norm<i>``.

    Loads official Microsoft checkpoints (``layers.*`` keys, converted on
    load) and OpenMMLab-converted ones (``stages.*``) through
    ``init_cfg=dict(type='Pretrained', checkpoint=...)``, resizing relative
    position tables to the window size; anything that does not fit raises.

    Args:
        peft (dict, optional): The PEFT method, e.g.
            ``dict(type='ParaX', rank=128)``. Default: None.
        with_cp (bool): Non-reentrant activation checkpointing per block
            (with its method modules). Default: False.
        **kwargs: Arguments of ``mmseg.models.backbones.SwinTransformer``.

    Returns (forward): list of [B, C_i, H/2^(i+2), W/2^(i+2)] feature maps.
    """

    block_sites = dict(mixer_mlp_sites('attn'), attn_prompts='attn_prompts')
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
    def forward_block(self, block, x, hw_shape):
        """One block with the method's sites; x: [B, H*W, C] -> same."""
        h = self.site(block, 'pre_attn', x, hw_shape)
        h = self.site(block, 'attn_in', block.norm1(h), hw_shape)
        prompts = block._modules.get(self.block_sites['attn_prompts'])
        if prompts is None:
            h = block.attn(h, hw_shape)  # drop path inside
        else:
            h = prompts(block, h, hw_shape)
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
