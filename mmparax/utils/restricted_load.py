"""Reading checkpoints without running code from them.

:func:`torch_load` reads a local path or any ``scheme://`` of mmengine's
``CheckpointLoader`` with mmengine's own loader of it (downloads go to
torch's hub cache), every ``torch.load`` in it made weights-only by torch's
``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` (whatever the loader passes), with the
globals mmengine's Runner checkpoints pickle allowed (:data:`RUNNER_GLOBALS`).

Official releases may also pickle objects of their training code (VMamba:
its yacs config), which weights-only loading refuses. For those,
:func:`load_weights_file` unpickles with torch's weights-only allow-list and
turns every other global into an inert :class:`OpaqueObject`: the tensors
come out intact and nothing from the file runs.

Broken bytes (empty, cut off, not a checkpoint) raise
:class:`DamagedCheckpointError`, which names the file and its size.
"""
import _compat_pickle
import io
import os
import os.path as osp
import pickle
import re
import types
import warnings
from contextlib import contextmanager

import numpy as np
import torch
from mmengine.logging import HistoryBuffer, print_log
from mmengine.runner import checkpoint as mmckpt

from .safetensors_file import SAFETENSORS_EXT, read_safetensors


class DamagedCheckpointError(RuntimeError):
    """A checkpoint file is empty, truncated or not a checkpoint at all."""


STATISTICS = ('min', 'max', 'current', 'mean')


def history_buffer_method(owner, name: str):
    """``getattr(HistoryBuffer, name)`` for the statistics methods a message
    hub pickles; refuses every other attribute of every other object."""
    if owner is not HistoryBuffer or name not in STATISTICS:
        raise pickle.UnpicklingError(
            f'getattr({getattr(owner, "__name__", type(owner).__name__)}, '
            f'{name!r}) is not allowed: only HistoryBuffer.'
            f'{"/".join(STATISTICS)} are')
    return getattr(owner, name)


# What a Runner checkpoint (model, optimizer, schedulers, AMP loss scaler,
# message hub, RNG states, meta) pickles besides tensors and containers:
# numpy arrays, dtypes and scalars, HistoryBuffer and its statistics.
RUNNER_GLOBALS = [
    np.core.multiarray._reconstruct, np.core.multiarray.scalar, np.ndarray,
    np.dtype, HistoryBuffer, (history_buffer_method, 'builtins.getattr')
] + [type(np.dtype(t)) for t in np.sctypeDict.values()]

# mmengine 0.10's schemes -> its loader of each (``load_from_<name>``)
SCHEMES = {
    'http://': 'http', 'https://': 'http', 'torchvision://': 'torchvision',
    'modelzoo://': 'torchvision', 'open-mmlab://': 'openmmlab',
    'openmmlab://': 'openmmlab', 'mmcls://': 'mmcls', 'pavi://': 'pavi',
    r'(\S+\:)?s3://': 'ceph', r'(\S+\:)?petrel://': 'ceph'
}
_FORCE = {True: 'TORCH_FORCE_WEIGHTS_ONLY_LOAD',
          False: 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'}
_DAMAGE = ('ran out of input', 'unexpected eof', 'pytorchstreamreader',
           'invalid load key', 'truncated', 'corrupt', 'stack underflow',
           'could not find mark')


@contextmanager
def forced_load_mode(weights_only: bool):
    """Make every ``torch.load`` in the block weights-only (with
    :data:`RUNNER_GLOBALS`) whatever its caller passes, or, with
    ``weights_only=False``, full where its caller passes nothing."""
    saved = {key: os.environ.pop(key, None) for key in _FORCE.values()}
    os.environ[_FORCE[weights_only]] = '1'
    try:
        with torch.serialization.safe_globals(RUNNER_GLOBALS), \
                warnings.catch_warnings():
            warnings.filterwarnings('ignore', f'.*{_FORCE[False]}')
            yield
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None)
            if value is not None:
                os.environ[key] = value


def _file_read(error: BaseException):
    """The file (path or buffer) ``torch.load`` was reading when it raised
    ``error``, or None if ``error`` came from elsewhere."""
    tb = error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code is torch.serialization.load.__code__:
            return tb.tb_frame.f_locals.get('f')
        tb = tb.tb_next
    return None


def damaged(name: str, source, detail: str) -> DamagedCheckpointError:
    """The error for a damaged file: names it, its size and what to do."""
    try:
        size = len(source.getbuffer()) if isinstance(source, io.BytesIO) \
            else osp.getsize(source)
        size = f'{size:,} bytes'
    except (OSError, TypeError, ValueError):
        size = 'size unknown'
    return DamagedCheckpointError(
        f'{name} is damaged or is not a PyTorch checkpoint ({size}): '
        f'{detail.rstrip(". ")}. An interrupted download, copy or save '
        'leaves such files: download the file again, or save it again if a '
        'run wrote it, and check that the path names the checkpoint '
        'itself.')


def _named(error: Exception, name: str, source) -> Exception:
    """``error`` of ``torch.load`` as a :class:`DamagedCheckpointError` if
    it says the bytes are broken (rather than that an object was refused);
    else ``error`` with ``source`` and ``name`` attached."""
    text = str(error)
    if isinstance(error, EOFError) or (
            not text.startswith('Weights only load failed')
            and any(key in text.lower() for key in _DAMAGE)):
        return damaged(name, source, 'reading it failed with '
                       f'{type(error).__name__}: {" ".join(text.split())}'
                       [:250])
    error.source, error.name = source, name
    return error


def torch_load(filename: str, map_location=None, weights_only=True):
    """Read ``filename`` with mmengine's loader of its scheme, every
    ``torch.load`` in it weights-only with :data:`RUNNER_GLOBALS` (or, with
    ``weights_only=False``, fully: only for trusted files).

    Raises:
        FileNotFoundError: No such local file.
        ValueError: A scheme mmengine does not load.
        DamagedCheckpointError: Broken bytes; names ``filename`` (and the
            cached copy of a remote file) and the size.
        pickle.UnpicklingError: The file holds objects beyond those allowed;
            its ``source`` is the file ``torch.load`` read (the cached copy
            of a remote file) and its ``name`` says both, for messages.
    """
    if '://' in filename:
        prefix = next((p for p in SCHEMES if re.match(p, filename)), None)
        if prefix is None:
            raise ValueError(
                f'No safe loader for {filename}: mmparax reads checkpoints '
                'from local files and ' + ', '.join(
                    p.split(')?')[-1] for p in SCHEMES) +
                '. Download the file and give its local path.')
        loader = getattr(mmckpt, 'load_from_' + SCHEMES[prefix])
    else:
        filename, loader = osp.expanduser(filename), mmckpt.load_from_local
    try:
        with forced_load_mode(weights_only):
            return loader(filename, map_location)
    except Exception as error:
        source = _file_read(error)
        if source is None:
            raise
        name = f'{filename} (cached as {source})' if isinstance(
            source, str) and source != filename else filename
        raise _named(error, name, source) from error


class OpaqueObject(dict):
    """Stand-in for a class or function a checkpoint names but nobody
    trusts: calls, ``__new__``, items and state are recorded, never run.
    Subclasses carry the name the file used (``opaque_name``)."""

    opaque_name = '?'

    def __new__(cls, *args, **kwargs):
        obj = dict.__new__(cls)
        obj.__dict__['opaque_args'] = args
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.__dict__['opaque_state'] = state

    def __repr__(self):
        return f'<opaque {self.opaque_name}>'


def restricted_load(source, name: str, map_location='cpu'):
    """Unpickle ``source`` resolving only torch's weights-only globals, every
    other one as a new :class:`OpaqueObject` subclass: no code from the file
    runs. Returns ``(object, names of the replaced globals)``."""
    from torch._weights_only_unpickler import _get_allowed_globals
    allowed, replaced = _get_allowed_globals(), []

    class Unpickler(pickle.Unpickler):

        def find_class(self, module, qualname):
            # the Python 2 names of protocol 2 (torch.save's default)
            module, qualname = _compat_pickle.NAME_MAPPING.get(
                (module, qualname), (module, qualname))
            path = f'{_compat_pickle.IMPORT_MAPPING.get(module, module)}.' \
                f'{qualname}'
            if path in allowed:
                return allowed[path]
            replaced.append(path)
            return type(qualname, (OpaqueObject, ), dict(opaque_name=path))

    module = types.ModuleType('restricted_pickle')  # what torch.load takes
    module.Unpickler = Unpickler
    module.load = lambda f, **kwargs: Unpickler(f, **kwargs).load()
    try:
        return torch.load(source, map_location=map_location,
                          weights_only=False, pickle_module=module), replaced
    except Exception as error:
        raise _named(error, name, source) from error


def load_weights_file(filename: str, map_location='cpu'):
    """Load a checkpoint for its tensors, never running code from it.

    Args:
        filename (str): A local path (``.safetensors`` too) or any
            ``scheme://`` of mmengine (see :func:`torch_load`).
        map_location: As for ``torch.load``. Default: 'cpu'.

    Returns:
        The checkpoint; objects of foreign classes come back as
        :class:`OpaqueObject` instances.

    Raises:
        DamagedCheckpointError: The file is empty, truncated or not a
            checkpoint; the message names it and its size.
        RuntimeError: The file cannot be read even so; the message says how
            to extract the weights.
    """
    if '://' not in filename and filename.endswith(SAFETENSORS_EXT):
        return read_safetensors(osp.expanduser(filename))[0]
    try:
        return torch_load(filename, map_location)
    except pickle.UnpicklingError as error:
        refusal = error
    reason = refusal_reason(refusal)
    try:
        checkpoint, replaced = restricted_load(refusal.source, refusal.name,
                                               map_location)
    except DamagedCheckpointError:
        raise
    except Exception as error:
        raise RuntimeError(
            f'Cannot read the weights of {refusal.name} without running code '
            f'from it. torch.load(weights_only=True) refused it ({reason}) '
            f'and the restricted unpickler failed too ({error!r}). Extract '
            'the weights where you trust the file and have the packages it '
            'names installed, e.g. python -c "import torch; '
            f"ck = torch.load('{refusal.source}', map_location='cpu', "
            "weights_only=False); torch.save(ck['model'], 'weights.pth')\" "
            ', then give weights.pth as the checkpoint.') from error
    print_log(
        f'{refusal.name} holds objects beyond tensors; read it without '
        f'running code from it (torch.load(weights_only=True) refused it: '
        f'{reason}). Replaced by inert placeholders: '
        f'{", ".join(sorted(set(replaced)))}.',
        logger='current')
    return checkpoint


def refusal_reason(error: Exception) -> str:
    """The sentence of torch's weights-only refusal that says what it
    refused (naming the global), without its paragraphs of advice."""
    for line in re.sub(r'\x1b\[[0-9;]*m', '', str(error)).splitlines():
        line = line.replace('WeightsUnpickler error:', '').strip()
        if line and not line.startswith(
                ('Weights only load failed', '(1)', '(2)', 'Check the doc',
                 'Please file an issue')):
            return line.split(' Please use')[0][:300]
    return type(error).__name__
