"""mmengine's ``CheckpointLoader`` made weights-only.

:func:`register_trusted_loader` makes :func:`load_from_safe` the loader of
local paths and of every ``scheme://`` (``http(s)``, ``torchvision``,
``open-mmlab``, ``mmcls``, ``s3``, ``pavi``, ...). It reads ``.safetensors``
files as such and every other file with mmengine's own loader under
``torch.load(weights_only=True)`` and the globals mmengine's Runner
checkpoints pickle (:func:`~mmparax.utils.restricted_load.torch_load`):
pretrained backbones, adapter files and every checkpoint a run writes
(``--resume``, ``load_from``) need no trust. A file that needs other globals
is fully unpickled (which can run code) only if the user trusts it;
otherwise :class:`UntrustedCheckpointError` names the file, the global torch
refused and how to trust the file.

Trusted are the files, folders and URLs given to :func:`trust_checkpoints`
(the tools pass every ``--trust-checkpoint PATH``) or listed in the
environment variable ``MMPARAX_TRUSTED_CHECKPOINTS`` (separated by
``os.pathsep``). Paths are compared after resolving symbolic links, so a
link inside a trusted folder to a file elsewhere is not trusted.
"""
import os
import os.path as osp
import pickle
from typing import List, Optional

from mmengine.logging import print_log
from mmengine.runner import CheckpointLoader

from .peft_checkpoint import ADAPTER_EXT, load_safetensors
from ..utils.restricted_load import (
    SCHEMES,
    DamagedCheckpointError,
    refusal_reason,
    restricted_load,
    torch_load,
)

TRUST_ENV = 'MMPARAX_TRUSTED_CHECKPOINTS'
TRUST_FLAG = '--trust-checkpoint'

_trusted: List[str] = []


class UntrustedCheckpointError(RuntimeError):
    """A checkpoint needs full unpickling but nobody vouched for it."""


def _real(path: str) -> str:
    if '://' in path:
        return path  # a URL is trusted as written
    return osp.realpath(osp.abspath(osp.expanduser(path)))


def trust_checkpoints(*paths: Optional[str]) -> None:
    """Trust the checkpoint files and URLs given, and every file under the
    folders."""
    for path in paths:
        if path and _real(path) not in _trusted:
            _trusted.append(_real(path))


def trusted_paths() -> List[str]:
    """Resolved trusted paths: those registered, then those of the env."""
    env = [_real(p) for p in os.environ.get(TRUST_ENV, '').split(os.pathsep)
           if p.strip()]
    return _trusted + [p for p in env if p not in _trusted]


def trust_reason(filename) -> Optional[str]:
    """The trusted path (or URL) covering ``filename``, or None."""
    if not isinstance(filename, str):
        return None
    target = _real(filename)
    for path in trusted_paths():
        if target == path or ('://' not in path and target.startswith(
                path.rstrip(os.sep) + os.sep)):
            return path
    return None


def load_from_safe(filename: str, map_location=None):
    """Load a local or ``scheme://`` checkpoint: weights only, or fully if
    trusted.

    Raises:
        FileNotFoundError: No such local file.
        DamagedCheckpointError: The file is empty, truncated or not a
            checkpoint.
        UntrustedCheckpointError: The file holds objects beyond tensors,
            plain containers and those of Runner checkpoints, and is not
            trusted.
    """
    if '://' not in filename and filename.endswith(ADAPTER_EXT):
        return load_safetensors(osp.expanduser(filename), map_location)
    try:
        return torch_load(filename, map_location)
    except pickle.UnpicklingError as error:
        refusal = error
    trusted = trust_reason(filename) or trust_reason(refusal.source)
    if trusted is None:
        try:  # tell damaged bytes from refused objects, running nothing
            restricted_load(refusal.source, refusal.name, map_location)
        except DamagedCheckpointError:
            raise
        except Exception:
            pass
        raise UntrustedCheckpointError(
            f'Refusing to load {refusal.name}: it cannot be loaded with '
            f'torch.load(weights_only=True) ({refusal_reason(refusal)}), '
            'and loading it with weights_only=False can run arbitrary code. '
            'Checkpoints of mmengine Runners load without it; this file '
            f'holds other objects. If you trust the file, pass {TRUST_FLAG} '
            f'{_real(filename)} to tools/train.py or tools/test.py, or add '
            f'it (or its folder) to the environment variable {TRUST_ENV}.'
        ) from refusal
    print_log(
        f'Loading {refusal.name} with torch.load(weights_only=False): it '
        f'holds more than tensors and is trusted ({trusted}).',
        logger='current')
    return torch_load(filename, map_location, weights_only=False)


def register_trusted_loader() -> None:
    """Make :func:`load_from_safe` mmengine's loader of local paths and of
    every scheme (mmengine's and any registered before this call)."""
    prefixes = set(SCHEMES) | set(CheckpointLoader._schemes) | {''}
    CheckpointLoader.register_scheme(
        prefixes=sorted(prefixes), loader=load_from_safe, force=True)
