from collections import OrderedDict
from typing import Dict, List

import torch.nn.functional as F
from mmdet.models.backbones.swin import swin_converter
from mmengine.logging import print_log
from mmseg.models.backbones import SwinTransformer

from mmparax.registry import MODELS
from .peft_backbone import PEFTBackboneMixin


@MODELS.register_module()
class Swin(PEFTBackboneMixin, SwinTransformer):
    """OpenMMLab Swin Transformer with strict pretrained loading.

    Fully trainable (the full fine-tuning baseline) and the base of the PEFT
    Swin backbones. Loads official Microsoft checkpoints (``layers.*`` keys,
    converted on load) and OpenMMLab-converted ones (``stages.*``) through
    ``init_cfg=dict(type='Pretrained', checkpoint=...)``, resizing relative
    position tables to the window size; anything that does not fit raises.

    Args: those of ``mmseg.models.backbones.SwinTransformer``.
    """

    def train(self, mode: bool = True):
        super().train(mode)
        return self  # the parent returns None

    def new_module_names(self) -> List[str]:
        return [f'norm{i}' for i in self.out_indices]

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
