"""What a checkpoint holds, and whether it fits a model.

Two kinds of checkpoint load into an mmparax model:

* a **full** checkpoint (what mmengine's Runner saves): every tensor of the
  model's state dict;
* a **PEFT** (adapter-only) checkpoint: every tensor except the frozen
  pretrained backbone, i.e. the method's modules, the backbone's new layers
  and the heads, plus ``meta['mmparax_peft']`` with the fingerprint of the
  pretrained backbone it was trained on. The frozen backbone comes from the
  config's pretrained checkpoint, and the fingerprint proves it is the same.
  It holds only tensors and plain values: ``torch.load(weights_only=True)``
  reads it.

:func:`checkpoint_problems` lists, for either kind, the keys that are missing,
unexpected or of another shape: loading is strict unless asked otherwise.
"""
import hashlib
import os.path as osp
from collections import OrderedDict
from typing import Dict, List, Optional

import torch
import torch.nn as nn
from mmengine.model import is_model_wrapper

from mmparax.utils.atomic_file import atomic_torch_save
from mmparax.utils.checkpoint import fit_problems

PEFT_META = 'mmparax_peft'


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


def peft_checkpoint(model: nn.Module,
                    meta: Optional[dict] = None) -> Dict[str, object]:
    """The PEFT checkpoint of ``model``: ``{'state_dict', 'meta'}``."""
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
    return dict(
        state_dict=state, meta=dict(meta or {}, **{PEFT_META: info}))


def save_peft_checkpoint(model: nn.Module, path: str,
                         meta: Optional[dict] = None) -> Dict[str, object]:
    """Write :func:`peft_checkpoint` to ``path`` (whole or not at all:
    :func:`~mmparax.utils.atomic_file.atomic_torch_save`); returns what was
    written."""
    checkpoint = peft_checkpoint(model, meta)
    dirname = osp.dirname(osp.abspath(path))
    if not osp.isdir(dirname):
        raise FileNotFoundError(f'folder {dirname} does not exist')
    atomic_torch_save(checkpoint, path)
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
