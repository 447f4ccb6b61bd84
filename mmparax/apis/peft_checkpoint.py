"""What a checkpoint holds, and whether it fits a model.

Two kinds of checkpoint load into an mmparax model:

* a **full** checkpoint (what mmengine's Runner saves): every tensor of the
  model's state dict;
* a **PEFT** (adapter-only) checkpoint: every tensor except the frozen
  pretrained backbone, i.e. the method's modules, the backbone's new layers
  and the heads, plus ``meta['mmparax_peft']`` with the fingerprint of the
  pretrained backbone it was trained on. The frozen backbone comes from the
  config's pretrained checkpoint, and the fingerprint proves it is the same.
  It is a safetensors file (``*_peft.safetensors``, no code can run on
  loading), whose header records the method settings (``peft=dict(...)`` of
  the config, as JSON), the host type and architecture, the fingerprint,
  ``dataset_meta``, the mmparax version and the resolved config text, so a
  file says what it is and ``tools/test.py FILE`` rebuilds its model.
  The pickled ``*_peft.pth`` of older runs load weights-only.

:func:`checkpoint_problems` lists, for either kind, the keys that are missing,
unexpected or of another shape: loading is strict unless asked otherwise.
"""
import hashlib
import json
import os.path as osp
from collections import OrderedDict
from typing import Dict, List, Optional

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.model import is_model_wrapper

from mmparax.utils.checkpoint import fit_problems
from mmparax.utils.safetensors_file import SAFETENSORS_EXT as ADAPTER_EXT
from mmparax.utils.safetensors_file import read_safetensors, write_safetensors
from mmparax.version import __version__

PEFT_META = 'mmparax_peft'
PEFT_SUFFIX = '_peft'


def _model(model: nn.Module) -> nn.Module:
    return model.module if is_model_wrapper(model) else model


def _host(model: nn.Module) -> Optional[nn.Module]:
    backbone = getattr(_model(model), 'backbone', None)
    return backbone if hasattr(backbone, 'pretrained_state_keys') else None


def frozen_keys(model: nn.Module) -> List[str]:
    """State-dict keys of ``model`` that a PEFT checkpoint leaves out: the
    pretrained parameters and buffers of a host backbone with a method."""
    host = _host(model)
    if host is None or host.peft is None:
        return []
    return ['backbone.' + k for k in host.pretrained_state_keys()]


def pretrained_fingerprint(model: nn.Module) -> str:
    """sha256 of the frozen pretrained backbone tensors (names and bytes)."""
    host = _host(model)
    state = host.state_dict()
    digest = hashlib.sha256()
    for key in sorted(host.pretrained_state_keys()):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(key.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes()
                      if tensor.numel() else b'')
    return digest.hexdigest()


def _plain(value):
    """``value`` as JSON values (tuples become lists)."""
    return json.loads(json.dumps(value, default=_json_default))


def _json_default(value):
    if hasattr(value, 'tolist'):  # numpy / torch arrays and scalars
        return value.tolist()
    raise TypeError(f'{type(value).__name__} {value!r} is not a JSON value')


def peft_settings(cfg: Config) -> Optional[dict]:
    """``model.backbone.peft`` of ``cfg`` as a plain dict (None if none)."""
    peft = cfg.get('model', {}).get('backbone', {}).get('peft')
    return None if peft is None else _plain(peft)


#: method settings that older PEFT files record under another name
RENAMED_SETTINGS = {'ParaX': {'rank': 'hidden_dim'}}


def current_settings(peft: dict) -> dict:
    """Method settings ``peft`` (``dict(type=..., ...)``) with today's names:
    the ``rank`` of a ParaX file written before it was named ``hidden_dim``
    becomes ``hidden_dim``."""
    method = str(peft.get('type', '')).rpartition('.')[2]
    renamed = RENAMED_SETTINGS.get(method, {})
    return type(peft)((renamed.get(k, k), v) for k, v in peft.items())


def settings_problems(checkpoint: dict, cfg: Config) -> List[str]:
    """The method settings a PEFT file recorded that differ from those of
    ``cfg``: one line per key (files without a record: none)."""
    recorded = checkpoint['meta'][PEFT_META].get('peft')
    if recorded is None:
        return []
    recorded = current_settings(recorded)
    own = peft_settings(cfg) or {}
    missing = object()
    return [
        f'  peft.{key}: file {recorded.get(key, missing)!r} vs config '
        f'{own.get(key, missing)!r}'.replace(repr(missing), '(absent)')
        for key in sorted(set(recorded) | set(own))
        if recorded.get(key, missing) != own.get(key, missing)
    ]


def peft_checkpoint(model: nn.Module,
                    meta: Optional[dict] = None,
                    cfg: Optional[Config] = None) -> Dict[str, object]:
    """The PEFT checkpoint of ``model``: ``{'state_dict', 'meta'}``; with
    the config it was built from, ``meta`` also records the method settings,
    the host, ``cfg`` (the resolved text) and the mmparax version."""
    host = _host(model)
    if host is None or host.peft is None:
        raise ValueError(
            'a PEFT checkpoint needs a model whose backbone hosts a PEFT '
            "method (backbone=dict(type='mmparax.Swin', peft=dict(...))); "
            'save a full checkpoint for full fine-tuning')
    skip = set(frozen_keys(model))
    state = OrderedDict(
        (k, v.detach().cpu()) for k, v in _model(model).state_dict().items()
        if k not in skip)
    info = dict(
        method=repr(host.peft),
        backbone=type(host).__name__,
        pretrained_fingerprint=pretrained_fingerprint(model),
        num_tensors=len(state),
        num_elements=sum(v.numel() for v in state.values()))
    meta = dict(meta or {}, mmparax_version=__version__)
    if cfg is not None:
        backbone = cfg.model.backbone
        info.update(
            peft=peft_settings(cfg),
            host=dict(type=backbone.type, arch=_plain(backbone.get('arch'))))
        meta['cfg'] = cfg.pretty_text
    return dict(state_dict=state, meta=dict(meta, **{PEFT_META: info}))


def peft_path(full: str) -> str:
    """``work/iter_8.pth`` -> ``work/iter_8_peft.safetensors``."""
    return osp.splitext(full)[0] + PEFT_SUFFIX + ADAPTER_EXT


def save_peft_checkpoint(model: nn.Module, path: str,
                         cfg: Optional[Config] = None,
                         meta: Optional[dict] = None) -> Dict[str, object]:
    """Write :func:`peft_checkpoint` to ``path`` as safetensors, whole or
    not at all; the header holds each entry of ``meta`` as JSON. Returns
    what was written."""
    if not path.endswith(ADAPTER_EXT):
        raise ValueError(f'a PEFT file is written as safetensors: name it '
                         f'*{ADAPTER_EXT}, not {path}')
    checkpoint = peft_checkpoint(model, meta, cfg)
    dirname = osp.dirname(osp.abspath(path))
    if not osp.isdir(dirname):
        raise FileNotFoundError(f'folder {dirname} does not exist')
    write_safetensors(path, checkpoint['state_dict'], {
        k: json.dumps(_plain(v))
        for k, v in checkpoint['meta'].items()
    })
    return checkpoint


def load_safetensors(path: str, map_location='cpu') -> dict:
    """A ``.safetensors`` file as ``{'state_dict', 'meta'}`` (a PEFT file's
    header entries decoded), on ``map_location`` if it names a device."""
    device = map_location if isinstance(map_location, str) and \
        map_location != 'default' else 'cpu'
    state, header = read_safetensors(path, device)
    return dict(state_dict=state, meta=_meta(header))


def _meta(header: dict) -> dict:
    """The decoded header entries of a PEFT file ({} for another file)."""
    if PEFT_META not in header:
        return {}
    return {k: json.loads(v) for k, v in header.items() if k != 'format'}


def recorded_config(path: str) -> Config:
    """The resolved config a PEFT file recorded, to rebuild its model."""
    meta = load_safetensors(path)['meta']
    if 'cfg' not in meta:
        raise ValueError(
            f'{path} records no config (only PEFT files written by mmparax '
            '0.1 and later do): give the config, tools/test.py CONFIG FILE')
    cfg = Config.fromstring(meta['cfg'], '.py')
    # an older file's settings under today's names
    backbone = cfg.get('model', {}).get('backbone', {})
    for owner in (cfg, backbone):
        if isinstance(owner.get('peft'), dict):
            owner['peft'] = current_settings(owner['peft'])
    return cfg


def load_full_checkpoint(model: nn.Module, filename: str, config: str,
                         trusted=()) -> dict:
    """Read a full checkpoint of ``model`` (the model of the file
    ``config``) without running code, unless ``trusted`` names it; raise
    ``SystemExit`` naming the keys unless it fits exactly."""
    from mmengine.runner.checkpoint import _load_checkpoint

    from .trusted_loading import register_trusted_loader, trust_checkpoints
    register_trusted_loader()
    trust_checkpoints(*trusted)
    checkpoint = _load_checkpoint(filename, map_location='cpu')
    state_dict = checkpoint.get('state_dict', checkpoint)
    problems = checkpoint_problems(model, state_dict, peft=False)
    if problems:
        raise SystemExit(f'{filename} does not fit the model of {config}:\n'
                         + '\n'.join(problems))
    return checkpoint


def is_peft_checkpoint(checkpoint) -> bool:
    return isinstance(checkpoint, dict) and isinstance(
        checkpoint.get('meta'), dict) and PEFT_META in checkpoint['meta']


def checkpoint_problems(model: nn.Module, state_dict: Dict,
                        peft: bool) -> List[str]:
    """What keeps ``state_dict`` from loading exactly into ``model``.

    Args:
        peft (bool): ``state_dict`` is adapter-only: the frozen pretrained
            backbone is neither expected nor accepted.

    Returns:
        list[str]: One paragraph per kind of problem (missing, unexpected,
        mis-shaped keys), empty when the checkpoint fits.
    """
    own = _model(model).state_dict()
    skip = set(frozen_keys(model)) if peft else set()
    return fit_problems(
        own, state_dict,
        required=[k for k in own if k not in skip],
        accepted=lambda k: k in own and k not in skip)
