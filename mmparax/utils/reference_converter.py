"""Checkpoints of the ParaX reference code (OpenMMLab 1.x) -> mmparax.

The reference trains ParaX with mmseg 0.x / mmdet 2.x and its own backbone
classes. Its key layout, per backbone family (``<i>`` stage, ``<j>`` block,
``<k>`` kernel size)::

    expert tensors      peft_params.<i>.projA_params        [M, r, C]
                        peft_params.<i>.projB_params        [M, C, r]
                        peft_params.<i>.conv<k>x<k>_params  [M, r, 1, k, k]
    adapters            Swin, VMamba: layers.<i>.blocks.<j>.adapter{1,2}.*
                        ConvNeXt:     stages.<i>.<j>.adapter.*
    adapter parts       norm, norm_gamma, dwconv1, dwconv2, router.0,
                        router.2, attn.0 (scale attention), conv_res_scale,
                        proj, layer_scale, layer_bias, res_scale, res_bias,
                        logit_scale (a zero buffer)
    output norms        Swin extra_norm<i>, ConvNeXt extra_norm.<i>,
                        VMamba outnorm<i>
    frozen backbone     Swin: Microsoft layout; ConvNeXt: Facebook layout;
                        VMamba: the official layout (the same as ours)

mmparax names them ``expert_centers.<i>.0.{down,up,kernels.<k>x<k>}``, the
adapters' ``scale_attn`` and ``cascade_scale``, ``norm<i>`` (Swin, ConvNeXt)
and ``outnorm<i>`` (VMamba); the frozen parts are converted by the
converters the hosts use for official ImageNet files.

A whole segmentor or detector checkpoint (``backbone.`` keys) keeps its
other parts unchanged: the module names of UperNet / FCN heads (mmseg 0.x
-> 1.x) and of Mask R-CNN / Panoptic FPN (mmdet 2.x -> 3.x) did not change.

Dropped, each with a log line: ``logit_scale`` (must be all zero: the
reference's routing temperature is not supported), the unused scale
attention ``attn.0`` and the empty ``conv_res_scale`` of single-kernel
adapters, the ImageNet classifier (``head.*``, ``norm.*``, VMamba
``classifier.*``), Swin ``attn_mask`` buffers and the Swin
``relative_position_index`` buffers (rebuilt for our model, after checking
that they hold the same indices). Any other key that is not understood
raises, naming it.
"""
import math
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import torch
from mmengine.logging import print_log

from .checkpoint import key_listing, unwrap_state_dict

CONVERTER_NAME = 'parax_reference_to_mmparax'
CONVERTER_VERSION = 1
BACKBONES = ('swin', 'convnext', 'vmamba')
#: top-level modules of a whole mmseg 0.x / mmdet 2.x model kept as they are
HEAD_PREFIXES = ('decode_head.', 'auxiliary_head.', 'neck.', 'rpn_head.',
                 'roi_head.', 'bbox_head.', 'mask_head.', 'semantic_head.',
                 'panoptic_fusion_head.')

# -- adapters and experts ----------------------------------------------------
_ADAPTER_PARTS = {
    'norm.weight': 'norm.weight',
    'norm.bias': 'norm.bias',
    'norm_gamma': 'norm_gamma',
    'dwconv1.weight': 'dwconv1.weight',
    'dwconv1.bias': 'dwconv1.bias',
    'dwconv2.weight': 'dwconv2.weight',
    'dwconv2.bias': 'dwconv2.bias',
    'router.0.weight': 'router.0.weight',
    'router.0.bias': 'router.0.bias',
    'router.2.weight': 'router.2.weight',
    'router.2.bias': 'router.2.bias',
    'attn.0.weight': 'scale_attn.weight',
    'attn.0.bias': 'scale_attn.bias',
    'conv_res_scale': 'cascade_scale',
    'proj.weight': 'proj.weight',
    'proj.bias': 'proj.bias',
    'layer_scale': 'layer_scale',
    'layer_bias': 'layer_bias',
    'res_scale': 'res_scale',
    'res_bias': 'res_bias',
}
_EXPERT_KEY = re.compile(r'^peft_params\.(\d+)\.(.+)$')
_KERNEL_BANK = re.compile(r'^conv(\d+)x(\d+)_params$')

# -- per family --------------------------------------------------------------
_SWIN_ADAPTER = re.compile(r'^layers\.(\d+)\.blocks\.(\d+)\.(adapter[12])\.'
                           r'(.+)$')
_SWIN_NORM = re.compile(r'^extra_norm(\d+)\.(weight|bias)$')
_SWIN_FROZEN = re.compile(
    r'^(patch_embed\.(proj|norm)\.(weight|bias)'
    r'|absolute_pos_embed'
    r'|layers\.\d+\.blocks\.\d+\.(norm1|norm2|attn\.qkv|attn\.proj'
    r'|mlp\.fc1|mlp\.fc2)\.(weight|bias)'
    r'|layers\.\d+\.blocks\.\d+\.attn\.relative_position_bias_table'
    r'|layers\.\d+\.downsample\.(reduction|norm)\.(weight|bias))$')
_SWIN_INDEX = re.compile(r'^layers\.(\d+)\.blocks\.(\d+)\.attn\.'
                         r'relative_position_index$')
_SWIN_MASK = re.compile(r'^layers\.\d+\.blocks\.\d+\.attn_mask$')

_CONVNEXT_ADAPTER = re.compile(r'^stages\.(\d+)\.(\d+)\.adapter\.(.+)$')
_CONVNEXT_NORM = re.compile(r'^extra_norm\.(\d+)\.(weight|bias)$')
_CONVNEXT_FROZEN = re.compile(
    r'^(downsample_layers\.\d+\.[01]\.(weight|bias)'
    r'|stages\.\d+\.\d+\.(dwconv|norm|pwconv1|pwconv2)\.(weight|bias)'
    r'|stages\.\d+\.\d+\.gamma)$')

_VMAMBA_ADAPTER = _SWIN_ADAPTER
_VMAMBA_NORM = re.compile(r'^outnorm(\d+)\.(weight|bias)$')
_VMAMBA_FROZEN = re.compile(
    r'^(patch_embed\.\d+\.(weight|bias)'
    r'|layers\.\d+\.blocks\.\d+\.(norm|norm2)\.(weight|bias)'
    r'|layers\.\d+\.blocks\.\d+\.op\.(in_proj|conv2d|out_norm|out_proj)'
    r'\.(weight|bias)'
    r'|layers\.\d+\.blocks\.\d+\.op\.(x_proj_weight|dt_projs_weight'
    r'|dt_projs_bias|A_logs|Ds)'
    r'|layers\.\d+\.blocks\.\d+\.mlp\.(fc1|fc2)\.(weight|bias)'
    r'|layers\.\d+\.downsample\.\d+\.(weight|bias))$')
_VMAMBA_POINTWISE = ('op.in_proj.weight', 'op.out_proj.weight',
                     'mlp.fc1.weight', 'mlp.fc2.weight')

# keys that tell the families apart
_EVIDENCE = {
    'swin': re.compile(r'^(extra_norm\d+\.|patch_embed\.proj\.'
                       r'|layers\.\d+\.blocks\.\d+\.(attn\.|norm1\.))'),
    'convnext': re.compile(r'^(extra_norm\.\d+\.|downsample_layers\.'
                           r'|stages\.\d+\.\d+\.(dwconv|pwconv1|adapter)\.)'),
    'vmamba': re.compile(r'^(outnorm\d+\.|patch_embed\.\d+\.'
                         r'|layers\.\d+\.blocks\.\d+\.(op|norm)\.)'),
}
# keys of a checkpoint that is already in the mmparax layout
_OURS = re.compile(r'^(expert_centers\.|stages\.\d+\.blocks\.\d+\.'
                   r'|stages\.\d+\.\d+\.(depthwise_conv|pointwise_conv1)\.)')


def _strip(prefix: str, state_dict: Dict) -> 'OrderedDict':
    return OrderedDict((k[len(prefix):], v) for k, v in state_dict.items()
                       if k.startswith(prefix))


def detect_reference_backbone(state_dict: Dict) -> str:
    """The backbone family of a reference-layout state dict.

    Args:
        state_dict (dict): Backbone keys, or a whole model's (``backbone.``
            keys are looked at).

    Returns:
        str: ``'swin'``, ``'convnext'`` or ``'vmamba'``.

    Raises:
        ValueError: No family, or more than one, matches; the message names
            the keys that were seen.
    """
    if any(k.startswith('backbone.') for k in state_dict):
        state_dict = _strip('backbone.', state_dict)
    found = OrderedDict()
    for family, pattern in _EVIDENCE.items():
        keys = [k for k in state_dict if pattern.match(k)]
        if keys:
            found[family] = keys
    if len(found) == 1:
        return next(iter(found))
    if not found:
        ours = [k for k in state_dict if _OURS.match(k)]
        hint = (' They look like an mmparax checkpoint already (no '
                'conversion needed).') if ours else ''
        raise ValueError(
            'Cannot tell the backbone of this checkpoint: no key looks like '
            'a reference ParaX Swin, ConvNeXt or VMamba. First keys:'
            f'{key_listing(list(state_dict)[:10])}\n{hint}'.rstrip())
    evidence = '\n'.join(f'  {family}: {keys[:3]}'
                         for family, keys in found.items())
    raise ValueError('The checkpoint holds keys of more than one backbone '
                     f'family:\n{evidence}\nPass the family explicitly '
                     "(backbone='swin' | 'convnext' | 'vmamba', or "
                     '--backbone).')


class _Conversion:
    """State of one conversion: output, dropped keys (by reason), unknowns."""

    def __init__(self):
        self.out = OrderedDict()
        self.dropped: 'OrderedDict[str, List[str]]' = OrderedDict()
        self.unknown: List[str] = []

    def drop(self, reason: str, key: str):
        self.dropped.setdefault(reason, []).append(key)

    def put(self, key: str, value: torch.Tensor, source: str):
        if key in self.out:
            raise ValueError(f'{source} maps to {key}, which is already set')
        self.out[key] = value


_DROP_LOGIT_SCALE = ('logit_scale (zero routing temperature buffers of the '
                     'reference adapters)')
_DROP_SINGLE_ATTN = ('attn.0 (the unused Linear(hidden_dim, 1) scale '
                     'attention the reference builds in single-kernel '
                     'adapters)')
_DROP_EMPTY_CASCADE = ('conv_res_scale (empty [0] tensors of single-kernel '
                       'adapters)')
_DROP_CLASSIFIER = 'the ImageNet classifier (head.*, norm.*, classifier.*)'
_DROP_MASK = 'attn_mask (precomputed Swin shift masks)'
_DROP_INDEX = ('relative_position_index (rebuilt for the model; the '
               'checkpoint holds the same indices)')


def _convert_adapter(conv: _Conversion, source: str, prefix: str,
                     part: str, value: torch.Tensor):
    """One adapter tensor; ``prefix`` is our adapter's key prefix."""
    if part == 'logit_scale':
        if torch.count_nonzero(value).item():
            raise ValueError(
                f'{source} is not zero ({value.tolist()}): the checkpoint '
                'was trained with a routing temperature (use_temperature), '
                'which mmparax does not implement; it cannot be converted '
                'without changing the outputs')
        conv.drop(_DROP_LOGIT_SCALE, source)
        return
    if part in ('attn.0.weight', 'attn.0.bias') and value.shape[0] == 1:
        conv.drop(_DROP_SINGLE_ATTN, source)
        return
    if part == 'conv_res_scale' and value.numel() == 0:
        conv.drop(_DROP_EMPTY_CASCADE, source)
        return
    ours = _ADAPTER_PARTS.get(part)
    if ours is None:
        conv.unknown.append(source)
        return
    conv.put(prefix + ours, value, source)


def _convert_expert(conv: _Conversion, source: str, stage: str, name: str,
                    value: torch.Tensor):
    bank = _KERNEL_BANK.match(name)
    if name == 'projA_params':
        ours = 'down'
    elif name == 'projB_params':
        ours = 'up'
    elif bank and bank.group(1) == bank.group(2):
        ours = f'kernels.{bank.group(1)}x{bank.group(1)}'
    else:
        conv.unknown.append(source)
        return
    conv.put(f'expert_centers.{stage}.0.{ours}', value, source)


def _swin_index(window: int) -> torch.Tensor:
    """mmseg's ``relative_position_index`` of a square window."""
    from mmseg.models.backbones.swin import WindowMSA
    coords = WindowMSA.double_step_seq(2 * window - 1, window, 1, window)
    return (coords + coords.T).flip(1).contiguous()


def _swin(conv: _Conversion, state_dict: Dict):
    from mmdet.models.backbones.swin import swin_converter
    frozen = OrderedDict()
    indices = OrderedDict()
    for key, value in state_dict.items():
        adapter = _SWIN_ADAPTER.match(key)
        expert = _EXPERT_KEY.match(key)
        norm = _SWIN_NORM.match(key)
        if adapter:
            i, j, name, part = adapter.groups()
            _convert_adapter(conv, key, f'stages.{i}.blocks.{j}.{name}.',
                             part, value)
        elif expert:
            _convert_expert(conv, key, *expert.groups(), value)
        elif norm:
            conv.put(f'norm{norm.group(1)}.{norm.group(2)}', value, key)
        elif _SWIN_INDEX.match(key):
            indices[key] = value
        elif _SWIN_MASK.match(key):
            conv.drop(_DROP_MASK, key)
        elif key.startswith(('head.', 'norm.')):
            conv.drop(_DROP_CLASSIFIER, key)
        elif _SWIN_FROZEN.match(key):
            frozen[key] = value
        else:
            conv.unknown.append(key)
    if conv.unknown:
        return
    for key, value in swin_converter(frozen).items():
        key = key[len('backbone.'):]
        if key == 'absolute_pos_embed' and value.dim() == 4:
            # reference [1, C, H, W] -> mmseg [1, H*W, C] (row-major tokens)
            value = value.flatten(2).transpose(1, 2).contiguous()
        conv.put(key, value, key)
    # every attention gets mmseg's index, checked against the checkpoint's
    for key in list(conv.out):
        if not key.endswith('.attn.w_msa.relative_position_bias_table'):
            continue
        window = (math.isqrt(conv.out[key].shape[0]) + 1) // 2
        index = _swin_index(window)
        source = key.replace('stages.', 'layers.', 1).replace(
            'attn.w_msa.relative_position_bias_table',
            'attn.relative_position_index')
        theirs = indices.pop(source, None)
        if theirs is not None:
            if not torch.equal(theirs.to(index.dtype), index):
                raise ValueError(f'{source} differs from the index of a '
                                 f'{window}x{window} window')
            conv.drop(_DROP_INDEX, source)
        conv.put(key.replace('relative_position_bias_table',
                             'relative_position_index'), index, source)
    conv.unknown.extend(indices)  # indices of attentions without a table


def _convnext(conv: _Conversion, state_dict: Dict):
    from mmparax.models.backbones.convnext import facebook_to_mmpretrain
    frozen = OrderedDict()
    for key, value in state_dict.items():
        adapter = _CONVNEXT_ADAPTER.match(key)
        expert = _EXPERT_KEY.match(key)
        norm = _CONVNEXT_NORM.match(key)
        if adapter:
            i, j, part = adapter.groups()
            _convert_adapter(conv, key, f'stages.{i}.{j}.adapter.', part,
                             value)
        elif expert:
            _convert_expert(conv, key, *expert.groups(), value)
        elif norm:
            conv.put(f'norm{norm.group(1)}.{norm.group(2)}', value, key)
        elif key.startswith(('head.', 'norm.')):
            conv.drop(_DROP_CLASSIFIER, key)
        elif _CONVNEXT_FROZEN.match(key):
            frozen[key] = value
        else:
            conv.unknown.append(key)
    if conv.unknown or not frozen:
        return
    for key, value in facebook_to_mmpretrain(frozen).items():
        if not key.startswith('backbone.'):
            raise ValueError(f'unexpected key {key} from the Facebook -> '
                             'mmpretrain conversion')
        conv.put(key[len('backbone.'):], value, key)


def _vmamba(conv: _Conversion, state_dict: Dict):
    for key, value in state_dict.items():
        adapter = _VMAMBA_ADAPTER.match(key)
        expert = _EXPERT_KEY.match(key)
        norm = _VMAMBA_NORM.match(key)
        if adapter:
            i, j, name, part = adapter.groups()
            _convert_adapter(conv, key, f'layers.{i}.blocks.{j}.{name}.',
                             part, value)
        elif expert:
            _convert_expert(conv, key, *expert.groups(), value)
        elif norm:
            conv.put(key, value, key)
        elif key.startswith('classifier.'):
            conv.drop(_DROP_CLASSIFIER, key)
        elif _VMAMBA_FROZEN.match(key):
            if key.endswith(_VMAMBA_POINTWISE) and value.dim() == 4 \
                    and value.shape[2:] == (1, 1):
                value = value.flatten(1)  # 1x1 conv weight -> Linear
            conv.put(key, value, key)
        else:
            conv.unknown.append(key)


_CONVERTERS = dict(swin=_swin, convnext=_convnext, vmamba=_vmamba)


def _check_backbone(backbone: Optional[str]):
    if backbone is not None and backbone not in BACKBONES:
        raise ValueError(f'backbone={backbone!r}; choose one of {BACKBONES} '
                         'or None to detect it')


def convert_reference_state_dict(
        state_dict: Dict[str, torch.Tensor],
        backbone: Optional[str] = None,
        extra_prefixes: Sequence[str] = (),
        logger='current') -> 'OrderedDict[str, torch.Tensor]':
    """Reference ParaX state dict -> mmparax state dict.

    Args:
        state_dict (dict): A backbone's tensors, or a whole segmentor's /
            detector's (``backbone.`` keys next to heads such as
            ``decode_head.`` or ``roi_head.``).
        backbone (str, optional): ``'swin'``, ``'convnext'`` or
            ``'vmamba'``; None detects it (:func:`detect_reference_backbone`).
        extra_prefixes (Sequence[str]): More top-level modules of a whole
            model to keep unchanged, besides :data:`HEAD_PREFIXES`.
        logger: Where the drop summary goes (mmengine ``print_log``).

    Returns:
        OrderedDict: The same tensors (not copied) under mmparax's names;
        a whole model keeps its ``backbone.`` prefix and its heads.

    Raises:
        ValueError: Keys the converter does not understand (all named), a
            non-zero ``logit_scale``, or an undetectable backbone family.
    """
    _check_backbone(backbone)
    whole = any(k.startswith('backbone.') for k in state_dict)
    if backbone is None:
        backbone = detect_reference_backbone(state_dict)
    heads = tuple(HEAD_PREFIXES) + tuple(
        p if p.endswith('.') else p + '.' for p in extra_prefixes)
    conv = _Conversion()
    if whole:
        others = [k for k in state_dict if not k.startswith('backbone.')]
        conv.unknown.extend(k for k in others if not k.startswith(heads))
        body = _strip('backbone.', state_dict)
    else:
        others, body = [], state_dict
    _CONVERTERS[backbone](conv, body)
    if conv.unknown:
        raise ValueError(
            f'{len(conv.unknown)} keys of the checkpoint are not part of a '
            f'reference ParaX {backbone} model and were not converted:'
            f'{key_listing(conv.unknown)}\nCheck --backbone; top-level '
            'modules '
            f'of a whole model other than {", ".join(HEAD_PREFIXES)} can be '
            'kept with extra_prefixes (--keep-prefix).')
    out = OrderedDict()
    if whole:
        for key, value in conv.out.items():
            out['backbone.' + key] = value
        for key in others:
            out[key] = state_dict[key]
    else:
        out.update(conv.out)
    for reason, keys in conv.dropped.items():
        print_log(f'{CONVERTER_NAME}: dropped {len(keys)} keys: {reason}; '
                  f'e.g. {keys[0]}', logger=logger)
    print_log(f'{CONVERTER_NAME}: converted a reference ParaX {backbone} '
              f'{"model" if whole else "backbone"}: {len(state_dict)} keys '
              f'in, {len(out)} out', logger=logger)
    return out


def _plain(value) -> bool:
    """Whether ``value`` loads with ``torch.load(weights_only=True)``."""
    if value is None or type(value) in (bool, int, float, str):
        return True
    if type(value) in (list, tuple):
        return all(_plain(v) for v in value)
    if type(value) is dict:
        return all(type(k) is str and _plain(v) for k, v in value.items())
    return False


def reference_checkpoint_to_mmparax(checkpoint,
                                    backbone: Optional[str] = None,
                                    source: Optional[str] = None,
                                    extra_prefixes: Sequence[str] = (),
                                    logger='current') -> dict:
    """A loaded reference checkpoint -> an mmparax checkpoint dict.

    Args:
        checkpoint: What the file held: a state dict, or one under
            ``state_dict`` / ``model`` (mmseg 0.x / mmdet 2.x files also
            hold ``meta`` and ``optimizer``, which are not carried over).
        backbone, extra_prefixes, logger: See
            :func:`convert_reference_state_dict`.
        source (str, optional): Where it came from, recorded in the meta.

    Returns:
        dict: ``{'state_dict': ..., 'meta': {...}}`` holding tensors and
        plain Python only (it loads with ``torch.load(weights_only=True)``).
        The meta records the source, the family and the converter; the
        source's ``CLASSES`` / ``PALETTE`` become ``dataset_meta``.
    """
    state_dict = unwrap_state_dict(checkpoint)
    _check_backbone(backbone)
    family = backbone or detect_reference_backbone(state_dict)
    out = convert_reference_state_dict(
        state_dict, family, extra_prefixes=extra_prefixes, logger=logger)
    meta = dict(
        converted_from=source or 'a reference ParaX checkpoint',
        source_layout=f'ParaX reference (OpenMMLab 1.x), {family}',
        backbone=family,
        mmparax_converter=f'{CONVERTER_NAME} v{CONVERTER_VERSION}')
    old = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    if type(old) is dict:
        dataset_meta = {
            ours: old[theirs]
            for theirs, ours in (('CLASSES', 'classes'),
                                 ('PALETTE', 'palette'))
            if theirs in old and _plain(old[theirs])
        }
        if dataset_meta:
            meta['dataset_meta'] = {
                k: list(v) if isinstance(v, tuple) else v
                for k, v in dataset_meta.items()
            }
    return {'state_dict': out, 'meta': meta}
