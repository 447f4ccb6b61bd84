"""Loading checkpoints under ``torch.load(weights_only=True)``.

Since torch 2.6, ``torch.load`` refuses arbitrary pickled objects by default.
:func:`register_trusted_loader` replaces every loader of mmengine's
``CheckpointLoader`` (local files and every ``scheme://``: ``http(s)``,
``torchvision``, ``open-mmlab``, ``mmcls``, ``s3``, ``pavi``, ...):

1. remote files are fetched first (downloads go to torch's hub cache, as
   mmengine's own loaders do), without unpickling anything;
2. ``.safetensors`` files are read as such (nothing in them can run);
3. every other file is loaded with ``weights_only=True`` and the allow-list
   of the globals mmengine's Runner checkpoints pickle
   (:data:`~mmparax.utils.runner_globals.RUNNER_GLOBALS`): pretrained
   backbones, adapter files and every checkpoint a run writes (``--resume``,
   ``load_from``) need no trust;
4. only a file that needs other globals, and that the user trusts, is
   loaded again with ``weights_only=False`` (full unpickling, which can run
   code); otherwise :class:`UntrustedCheckpointError` names the file, the
   global torch refused and how to trust the file.

Damaged files (empty, truncated, not a checkpoint) raise
:class:`DamagedCheckpointError` naming the file and its size.

Trusted are the files, folders and URLs given to :func:`trust_checkpoints`
(the tools pass every ``--trust-checkpoint PATH``) or listed in the
environment variable ``MMPARAX_TRUSTED_CHECKPOINTS`` (separated by
``os.pathsep``). Paths are compared after resolving symbolic links, so a
link inside a trusted folder to a file elsewhere is not trusted.
"""
import os
import os.path as osp
import pickle
from typing import Callable, List, Optional

import torch
from mmengine.logging import print_log
from mmengine.runner import CheckpointLoader

from .peft_checkpoint import ADAPTER_EXT, load_safetensors
from ..utils.restricted_load import (
    DamagedCheckpointError,
    Fetched,
    _torch_load,
    check_checkpoint_file,
    fetch_checkpoint,
    mmcls_to_backbone,
    refusal_reason,
    restricted_load,
)
from ..utils.runner_globals import RUNNER_GLOBALS

TRUST_ENV = 'MMPARAX_TRUSTED_CHECKPOINTS'
TRUST_FLAG = '--trust-checkpoint'

_trusted: List[str] = []

__all__ = [
    'TRUST_ENV', 'TRUST_FLAG', 'UntrustedCheckpointError',
    'DamagedCheckpointError', 'trust_checkpoints', 'trusted_paths',
    'trust_reason', 'load_from_local', 'load_from_remote',
    'register_trusted_loader'
]


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


def trust_reason(filename: str) -> Optional[str]:
    """The trusted path (or URL) covering ``filename``, or None."""
    target = _real(filename)
    for path in trusted_paths():
        if target == path or ('://' not in path and target.startswith(
                path.rstrip(os.sep) + os.sep)):
            return path
    return None


# -- loading ------------------------------------------------------------


def _how_to_trust(shown: str) -> str:
    return (f'If you trust the file, pass {TRUST_FLAG} {shown} to '
            f'tools/train.py or tools/test.py, or add it (or its folder) to '
            f'the environment variable {TRUST_ENV}.')


def _load_trusted(source, name: str, map_location,
                  trust: Callable[[], Optional[str]], shown: str):
    """weights_only first; full unpickling only if ``trust()`` says why."""
    check_checkpoint_file(source, name)
    try:
        with torch.serialization.safe_globals(RUNNER_GLOBALS):
            return _torch_load(
                source, name, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        refusal = error
    trusted = trust()
    if trusted is None:
        # Tell damaged bytes from refused objects without running anything.
        try:
            restricted_load(source, name, map_location)
        except DamagedCheckpointError:
            raise
        except Exception:
            pass
        raise UntrustedCheckpointError(
            f'Refusing to load {name}: it cannot be loaded with '
            f'torch.load(weights_only=True) ({refusal_reason(refusal)}), '
            'and loading it with weights_only=False can run arbitrary code. '
            'Checkpoints of mmengine Runners load without it; this file '
            f'holds other objects. {_how_to_trust(shown)}'
        ) from refusal
    print_log(
        f'Loading {name} with torch.load(weights_only=False): it holds more '
        f'than tensors and is trusted ({trusted}).',
        logger='current')
    return _torch_load(
        source, name, map_location=map_location, weights_only=False)


def load_from_local(filename: str, map_location=None):
    """Load a local checkpoint: weights only, or fully if trusted.

    Args:
        filename (str): Path of the file.
        map_location: As for ``torch.load``.

    Raises:
        FileNotFoundError: No such file.
        DamagedCheckpointError: The file is empty, truncated or not a
            checkpoint.
        UntrustedCheckpointError: The file holds objects beyond tensors and
            plain containers, and is not trusted.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    if filename.endswith(ADAPTER_EXT):
        return load_safetensors(filename, map_location)
    return _load_trusted(filename, filename, map_location,
                         lambda: trust_reason(filename), _real(filename))


def load_from_remote(filename: str, map_location=None):
    """Load a ``scheme://`` checkpoint: fetch it without unpickling, then
    weights only, or fully if the URL (or the cached file) is trusted."""
    fetched: Fetched = fetch_checkpoint(filename)

    def trust():
        if isinstance(fetched.source, str):
            return trust_reason(filename) or trust_reason(fetched.source)
        return trust_reason(filename)

    checkpoint = _load_trusted(fetched.source, fetched.name, map_location,
                               trust, filename)
    return mmcls_to_backbone(checkpoint) if fetched.mmcls else checkpoint


def register_trusted_loader() -> None:
    """Make :func:`load_from_local` mmengine's loader of local paths and
    :func:`load_from_remote` its loader of every other registered scheme
    (those of mmengine and any registered before this call)."""
    known = ('http://', 'https://', 'torchvision://', 'modelzoo://',
             'open-mmlab://', 'openmmlab://', 'mmcls://', 'pavi://',
             r'(\S+\:)?s3://', r'(\S+\:)?petrel://')
    prefixes = set(known) | set(CheckpointLoader._schemes)
    prefixes.discard('')
    CheckpointLoader.register_scheme(
        prefixes=sorted(prefixes), loader=load_from_remote, force=True)
    CheckpointLoader.register_scheme(
        prefixes='', loader=load_from_local, force=True)
