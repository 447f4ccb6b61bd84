"""Loading local checkpoints under ``torch.load(weights_only=True)``.

Since torch 2.6, ``torch.load`` refuses arbitrary pickled objects by default,
and mmengine 0.10.7 cannot read the checkpoints its own Runner writes (their
``message_hub`` holds ``HistoryBuffer`` objects).
:func:`register_trusted_loader` replaces mmengine's local-file loader with
:func:`load_from_local`:

1. every file is first loaded with ``weights_only=True`` (tensors, plain
   containers and numbers: pretrained backbones, adapter-only files);
2. only if that fails, and the file is trusted, it is loaded again with
   ``weights_only=False`` (full unpickling, which can run code);
3. otherwise :class:`UntrustedCheckpointError` names the file, the object
   torch refused and how to trust the file.

Trusted are files inside a path given to :func:`trust_checkpoints` (the tools
pass the run's ``work_dir`` and every ``--trust-checkpoint PATH``) or listed
in the environment variable ``MMPARAX_TRUSTED_CHECKPOINTS`` (paths of files
or folders separated by ``os.pathsep``). Paths are compared after resolving
symbolic links, so a link inside a trusted folder to a file elsewhere is not
trusted.
"""
import os
import os.path as osp
import pickle
import re
from typing import List, Optional

import torch
from mmengine.logging import print_log
from mmengine.runner import CheckpointLoader

TRUST_ENV = 'MMPARAX_TRUSTED_CHECKPOINTS'
TRUST_FLAG = '--trust-checkpoint'

_trusted: List[str] = []


class UntrustedCheckpointError(RuntimeError):
    """A checkpoint needs full unpickling but nobody vouched for it."""


def _real(path: str) -> str:
    return osp.realpath(osp.abspath(osp.expanduser(path)))


def trust_checkpoints(*paths: Optional[str]) -> None:
    """Trust the checkpoint files given, and every file under the folders."""
    for path in paths:
        if path and _real(path) not in _trusted:
            _trusted.append(_real(path))


def trusted_paths() -> List[str]:
    """Resolved trusted paths: those registered, then those of the env."""
    env = [_real(p) for p in os.environ.get(TRUST_ENV, '').split(os.pathsep)
           if p.strip()]
    return _trusted + [p for p in env if p not in _trusted]


def trust_reason(filename: str) -> Optional[str]:
    """The trusted path covering ``filename``, or None."""
    target = _real(filename)
    for path in trusted_paths():
        if target == path or target.startswith(path.rstrip(os.sep) + os.sep):
            return path
    return None


def _refusal(error: Exception) -> str:
    """What torch's weights-only unpickler refused, in one line."""
    text = re.sub(r'\x1b\[[0-9;]*m', '', str(error))
    match = re.search(r'WeightsUnpickler error:\s*(.*?\.)(?:\s|$)', text,
                      re.S)
    if match:
        return ' '.join(match.group(1).split())
    for paragraph in re.split(r'\n\s*\n', text):
        paragraph = ' '.join(paragraph.split())
        if paragraph and not paragraph.startswith(
                ('Weights only load failed', 'Check the documentation')):
            return paragraph[:300]
    return ' '.join(text.split())[:300]


def load_from_local(filename: str, map_location=None):
    """Load a local checkpoint: weights only, or fully if trusted.

    Args:
        filename (str): Path of the file.
        map_location: As for ``torch.load``.

    Raises:
        FileNotFoundError: No such file.
        UntrustedCheckpointError: The file holds objects beyond tensors and
            plain containers, and is not trusted.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    try:
        return torch.load(
            filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        trusted = trust_reason(filename)
        if trusted is None:
            raise UntrustedCheckpointError(
                f'Refusing to load {filename}: it cannot be loaded with '
                f'torch.load(weights_only=True) ({_refusal(error)}), and '
                'loading it with weights_only=False can run arbitrary code. '
                'Checkpoints saved by an OpenMMLab Runner need '
                'weights_only=False. '
                'If you trust the file, pass '
                f'{TRUST_FLAG} {_real(filename)} to tools/train.py or '
                f'tools/test.py, or add its path (or its folder) to the '
                f'environment variable {TRUST_ENV}. Files inside the '
                "run's own work_dir are trusted.") from error
        print_log(
            f'Loading {filename} with torch.load(weights_only=False): it '
            f'holds more than tensors and is trusted (under {trusted}).',
            logger='current')
        return torch.load(
            filename, map_location=map_location, weights_only=False)


def register_trusted_loader() -> None:
    """Make :func:`load_from_local` mmengine's loader of local paths."""
    CheckpointLoader.register_scheme(
        prefixes='', loader=load_from_local, force=True)
