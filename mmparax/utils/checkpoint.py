"""Strict loading of pretrained backbone checkpoints."""
from collections import OrderedDict
from typing import Callable, Dict, Iterable, List, Optional

import torch

from .restricted_load import load_weights_file

_WRAPPER_KEYS = ('state_dict', 'model', 'module')
_MAX_LISTED = 20


def unwrap_state_dict(checkpoint) -> 'OrderedDict[str, torch.Tensor]':
    """The tensor dict of a checkpoint, whatever it is wrapped in.

    Accepts a bare state dict or one under ``state_dict``, ``model`` or
    ``module`` (other top-level entries such as optimizer state are ignored),
    and strips a DataParallel ``module.`` prefix.
    """
    if not isinstance(checkpoint, dict):
        raise TypeError('a checkpoint must hold a dict, got '
                        f'{type(checkpoint).__name__}')
    for key in _WRAPPER_KEYS:
        if isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
            break
    state_dict = OrderedDict(
        (k, v) for k, v in checkpoint.items() if isinstance(v, torch.Tensor))
    if not state_dict:
        raise ValueError('the checkpoint holds no tensors (looked at the top '
                         f'level and under {_WRAPPER_KEYS})')
    if all(k.startswith('module.') for k in state_dict):
        state_dict = OrderedDict((k[7:], v) for k, v in state_dict.items())
    return state_dict


def select_prefix(state_dict: Dict, prefix: Optional[str]) -> Dict:
    """Keys under ``prefix`` with the prefix removed.

    With ``prefix=None``, a checkpoint of a whole detector or segmentor
    (keys under ``backbone.``) is reduced to its backbone.
    """
    if prefix is None:
        if not any(k.startswith('backbone.') for k in state_dict):
            return state_dict
        prefix = 'backbone.'
    if not prefix.endswith('.'):
        prefix += '.'
    out = OrderedDict(
        (k[len(prefix):], v) for k, v in state_dict.items()
        if k.startswith(prefix))
    if not out:
        raise KeyError(f'no checkpoint key starts with {prefix!r}; first keys '
                       f'are {list(state_dict)[:5]}')
    return out


def key_listing(keys, sort: bool = True) -> str:
    """Keys one per line (indented), at most 20 and a count of the rest."""
    keys = sorted(keys) if sort else list(keys)
    shown = '\n    '.join(keys[:_MAX_LISTED])
    more = f'\n    ... and {len(keys) - _MAX_LISTED} more' \
        if len(keys) > _MAX_LISTED else ''
    return f'\n    {shown}{more}'


def fit_problems(own: Dict, state_dict: Dict, required: Iterable[str],
                 accepted: Callable[[str], bool],
                 what: str = 'keys of the model') -> List[str]:
    """What keeps ``state_dict`` from loading exactly.

    Args:
        own (dict): The model's state dict (for shapes).
        required (Iterable[str]): Keys the checkpoint must hold.
        accepted (Callable[[str], bool]): Whether a checkpoint key may be
            there; the shapes of accepted keys the model has must agree.
        what (str): How the message calls the required keys.

    Returns:
        list[str]: One paragraph per kind of problem (missing, unexpected,
        mis-shaped keys), empty when the checkpoint fits.
    """
    missing = [k for k in required if k not in state_dict]
    unexpected = [k for k in state_dict if not accepted(k)]
    mismatched = [
        f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
        for k, v in state_dict.items() if k in own and accepted(k)
        and hasattr(v, 'shape') and tuple(v.shape) != tuple(own[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f'{len(missing)} {what} are missing from the '
                        f'checkpoint:{key_listing(missing)}')
    if unexpected:
        problems.append(f'{len(unexpected)} checkpoint keys match nothing '
                        f'the model loads:{key_listing(unexpected)}')
    if mismatched:
        problems.append(f'{len(mismatched)} shapes differ:'
                        f'{key_listing(mismatched)}')
    return problems


def check_fit(backbone, state_dict: Dict):
    """Raise unless ``state_dict`` holds every pretrained parameter of
    ``backbone`` with the right shape and nothing the backbone lacks."""
    own = backbone.state_dict()
    new = set(backbone.new_parameter_names())
    problems = fit_problems(
        own, state_dict,
        required=[k for k, _ in backbone.named_parameters()
                  if k not in new],
        accepted=lambda k: k in own or backbone.ignored_checkpoint_keys(k),
        what='pretrained parameters')
    if problems:
        raise RuntimeError(
            f'The checkpoint does not fit {type(backbone).__name__}: the '
            'backbone would keep random weights.\n' +
            '\n'.join(problems) +
            '\nCheck that the backbone settings (embed_dims, depths, '
            'num_heads, window_size, ...) match the checkpoint, and that the '
            'checkpoint is an ImageNet backbone in a supported key layout.')


def _naming(error: Exception, checkpoint: str) -> Exception:
    """``error`` again, its message starting with the checkpoint's name."""
    message = error.args[0] if len(error.args) == 1 and isinstance(
        error.args[0], str) else str(error)
    if checkpoint in message:
        return error
    try:
        return type(error)(f'Pretrained checkpoint {checkpoint}: {message}')
    except Exception:
        return RuntimeError(f'Pretrained checkpoint {checkpoint}: {message}')


def load_backbone_state_dict(backbone,
                             checkpoint: str,
                             prefix: Optional[str] = None):
    """Load ``checkpoint`` into a PEFT host backbone, strictly.

    The file is read for its tensors only (:func:`load_weights_file`: no
    code in it runs). It may be in any layout the backbone knows how to convert
    (``backbone.convert_checkpoint``); tensors are then resized by
    ``backbone.adapt_checkpoint`` and checked by :func:`check_fit`.
    PEFT parameters present in the checkpoint are loaded too.
    """
    raw = load_weights_file(checkpoint, map_location='cpu')
    try:
        state_dict = select_prefix(unwrap_state_dict(raw), prefix)
        state_dict = backbone.convert_checkpoint(state_dict)
        state_dict = backbone.adapt_checkpoint(state_dict)
        check_fit(backbone, state_dict)
    except (RuntimeError, KeyError, ValueError, TypeError) as error:
        named = _naming(error, checkpoint)
        if named is error:
            raise
        raise named from error
    own = backbone.state_dict()
    backbone.load_state_dict(
        OrderedDict((k, v) for k, v in state_dict.items() if k in own),
        strict=False)
