"""ConvNeXt for dense prediction, with strict pretrained loading.

Key layouts it loads (weights of ``arch`` 'base' shown)::

    Facebook (``convnext_base_22k_224.pth``, weights under 'model')
        downsample_layers.0.0.weight   [128, 3, 4, 4]    stem conv
        downsample_layers.0.1.weight   [128]             stem LayerNorm
        downsample_layers.i.0 / .1     LayerNorm / 2x2 conv (i = 1..3)
        stages.i.j.dwconv.weight       [C, 1, 7, 7]
        stages.i.j.norm.weight         [C]
        stages.i.j.pwconv1.weight      [4C, C]
        stages.i.j.pwconv2.weight      [C, 4C]
        stages.i.j.gamma               [C]
        norm.weight                    [1024]            classifier norm
        head.weight                    [21841, 1024]     classifier

    mmpretrain (OpenMMLab-converted files, weights under 'state_dict')
        backbone.downsample_layers.*, backbone.stages.i.j.depthwise_conv.*,
        backbone.stages.i.j.pointwise_conv{1,2}.*, backbone.stages.i.j.gamma,
        backbone.norm3.*  (the classifier norm), head.fc.*
"""
import importlib.util
import os.path as osp
import re
from collections import OrderedDict
from typing import Callable, Dict, Optional

from mmengine.logging import print_log
from mmpretrain.models.backbones import ConvNeXt as MMPretrainConvNeXt

from mmparax.registry import MODELS
from .host import PEFTHostMixin

_FACEBOOK_BLOCK_KEY = re.compile(r'^stages\.\d+\.\d+\.(dwconv|pwconv[12])\.')
_OUTPUT_NORM_KEY = re.compile(r'^norm(\d+)\.')
_MMPRETRAIN_CONVERTER = osp.join('.mim', 'tools', 'model_converters',
                                 'convnext_to_mmpretrain.py')


def _mmpretrain_converter() -> Optional[Callable]:
    """``convert_convnext`` of mmpretrain's converter script, if installed.

    The script ships with the mmpretrain wheel (``.mim/tools``) but is not
    a module of the package, so it is loaded from its file.
    """
    import mmpretrain
    path = osp.join(osp.dirname(mmpretrain.__file__), _MMPRETRAIN_CONVERTER)
    if not osp.isfile(path):
        return None
    spec = importlib.util.spec_from_file_location(
        'mmparax._mmpretrain_convnext_converter', path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception:  # an incompatible script: use ours
        return None
    return getattr(module, 'convert_convnext', None)


def _facebook_to_mmpretrain_own(state_dict: Dict) -> 'OrderedDict':
    """Our mapping, identical to mmpretrain's script (see
    :func:`facebook_to_mmpretrain`)."""
    last = 1 + max((int(k.split('.')[1]) for k in state_dict
                    if k.startswith('stages.')), default=3)
    out = OrderedDict()
    for key, value in state_dict.items():
        if key.startswith('head.'):
            out['head.fc.' + key[len('head.'):]] = value
            continue
        if key.startswith('stages.'):
            key = key.replace('.dwconv.', '.depthwise_conv.')
            key = key.replace('.pwconv1.', '.pointwise_conv1.')
            key = key.replace('.pwconv2.', '.pointwise_conv2.')
        elif key.startswith('norm.'):
            key = f'norm{last - 1}.' + key[len('norm.'):]
        out['backbone.' + key] = value
    return out


def facebook_to_mmpretrain(state_dict: Dict,
                           use_mmpretrain: bool = True) -> 'OrderedDict':
    """Facebook ConvNeXt state dict -> mmpretrain classifier layout.

    ``dwconv`` / ``pwconv1`` / ``pwconv2`` become ``depthwise_conv`` /
    ``pointwise_conv1`` / ``pointwise_conv2``, the classifier norm ``norm``
    becomes ``norm3``, every backbone key gets ``backbone.`` and ``head.*``
    becomes ``head.fc.*``; tensors are unchanged.

    Args:
        state_dict (dict): Facebook-layout tensors.
        use_mmpretrain (bool): Use mmpretrain's own converter
            (``convnext_to_mmpretrain.py``) when installed. Default: True.

    Returns:
        OrderedDict: mmpretrain-layout tensors.
    """
    convert = _mmpretrain_converter() if use_mmpretrain else None
    if convert is None:
        return _facebook_to_mmpretrain_own(state_dict)
    return OrderedDict(convert(OrderedDict(state_dict)))


def is_facebook_layout(state_dict: Dict) -> bool:
    """Whether ``state_dict`` holds Facebook-layout ConvNeXt blocks."""
    return any(_FACEBOOK_BLOCK_KEY.match(k) for k in state_dict)


@MODELS.register_module()
class ConvNeXt(PEFTHostMixin, MMPretrainConvNeXt):
    """mmpretrain's ConvNeXt as a PEFT host (mmseg and mmdet).

    Sites: ``pre_dwconv``, the input of the block's branch (the shortcut
    keeps the stream); ``block_parallel``, reads the block's input, its
    output is added to the block's output; ``post_block`` (held in
    ``adapter``), after the complete block (``input + drop_path(...)``).
    Layers: ``dwconv``, ``fc1``, ``fc2``. Capability:
    ``depthwise_pointwise_blocks``. New layers: the output norms ``norm<i>``.

    Loads official Facebook checkpoints (converted on load) and
    OpenMMLab-converted ones through
    ``init_cfg=dict(type='Pretrained', checkpoint=...)``; anything that does
    not fit raises. The classifier's final norm (Facebook ``norm.*``,
    mmpretrain ``norm3.*`` alone) normalises pooled features: it is dropped,
    and the per-output norms ``norm<i>`` start fresh, as in the reference.

    Args:
        peft (dict, optional): The PEFT method. Default: None.
        out_indices (Sequence[int]): Stages whose normalised maps are
            returned. Default: (0, 1, 2, 3).
        gap_before_final_norm (bool): Pool before the output norms
            (classification). Default: False.
        with_cp (bool): Non-reentrant activation checkpointing per block
            (with its method modules). Default: False.
        **kwargs: Other arguments of ``mmpretrain.models.ConvNeXt`` (``arch``,
            ``drop_path_rate``, ``layer_scale_init_value``, ``init_cfg``, ...).

    Returns (forward): tuple of [B, C_i, H/2^(i+2), W/2^(i+2)] feature maps.
    """

    block_sites = dict(
        pre_dwconv='pre_dwconv_adapter',
        block_parallel='parallel_adapter',
        post_block='adapter')
    capabilities = ('depthwise_pointwise_blocks', )
    token_mixer = 'depthwise convolutions, not attention'
    site_readers = dict(pre_dwconv='dwconv')
    layer_aliases = dict(
        dwconv='stages.*.*.depthwise_conv',
        fc1='stages.*.*.pointwise_conv1',
        fc2='stages.*.*.pointwise_conv2')
    no_frozen_stages = 0
    output_norm = 'norm{}'

    def __init__(self,
                 peft: Optional[dict] = None,
                 out_indices=(0, 1, 2, 3),
                 gap_before_final_norm: bool = False,
                 with_cp: bool = False,
                 **kwargs):
        super().__init__(
            out_indices=list(out_indices),
            gap_before_final_norm=gap_before_final_norm,
            **kwargs)
        self.with_cp = with_cp  # here, not in the (reentrant) blocks
        self.init_peft(peft)

    def peft_stages(self):
        return list(zip(self.channels, self.stages))

    def ignored_checkpoint_keys(self, key: str) -> bool:
        return key.startswith('head.')  # ImageNet classifier

    def convert_checkpoint(self, state_dict: Dict) -> Dict:
        if is_facebook_layout(state_dict):
            print_log(f'{type(self).__name__}: converting a Facebook-layout '
                      'checkpoint', logger='current')
            state_dict = OrderedDict(
                (k[len('backbone.'):], v)
                for k, v in facebook_to_mmpretrain(state_dict).items()
                if k.startswith('backbone.'))
        norms = {
            int(m.group(1))
            for m in map(_OUTPUT_NORM_KEY.match, state_dict) if m
        }
        if norms == {self.num_stages - 1}:
            print_log(f'{type(self).__name__}: dropping the classifier norm '
                      f'norm{self.num_stages - 1}.* of the checkpoint (output '
                      'norms are trained from scratch)', logger='current')
            state_dict = OrderedDict(
                (k, v) for k, v in state_dict.items()
                if not _OUTPUT_NORM_KEY.match(k))
        return state_dict

    # -- forward -----------------------------------------------------------
    def forward_block(self, block, x):
        """mmpretrain's ``ConvNeXtBlock`` with the method's sites;
        x: [B, C, H, W] -> same."""
        h = block.depthwise_conv(self.site_map(block, 'pre_dwconv', x))
        if block.linear_pw_conv:
            h = block.norm(h.permute(0, 2, 3, 1), data_format='channel_last')
            h = block.act(block.pointwise_conv1(h))
            if block.grn is not None:
                h = block.grn(h, data_format='channel_last')
            h = block.pointwise_conv2(h).permute(0, 3, 1, 2)
        else:
            h = block.norm(h, data_format='channel_first')
            h = block.act(block.pointwise_conv1(h))
            if block.grn is not None:
                h = block.grn(h, data_format='channel_first')
            h = block.pointwise_conv2(h)
        if block.gamma is not None:
            h = h.mul(block.gamma.view(1, -1, 1, 1))
        out = x + block.drop_path(h)
        if self.has_site(block, 'block_parallel'):
            out = out + self.site_map(block, 'block_parallel', x)
        return self.site_map(block, 'post_block', out)

    def forward(self, x):
        outs = []
        for i, stage in enumerate(self.stages):
            x = self.downsample_layers[i](x)
            for block in stage:
                x = self.run_block(self.forward_block, block, x)
            if i in self.out_indices:
                norm = getattr(self, f'norm{i}')
                if self.gap_before_final_norm:
                    pooled = x.mean([-2, -1], keepdim=True)
                    outs.append(norm(pooled).flatten(1))
                else:
                    outs.append(norm(x))
        return tuple(outs)
