"""Reading weights from files that also pickle training-code objects.

Official releases often save the whole training state: the weights, the
optimizer state and objects of the training code (VMamba: its yacs config).
``torch.load(weights_only=True)`` refuses such a file, and full unpickling
imports (and may execute) whatever the file names.

:func:`load_weights_file` first tries ``weights_only=True``. When that fails
it unpickles with :class:`RestrictedUnpickler`: torch's own weights-only
allow-list resolves as usual, and every other global the file names becomes
an inert :class:`OpaqueObject` that records what the file passes to it and
runs nothing. Tensors come out intact; the foreign objects are unusable by
design.

Remote checkpoints (``http(s)://``, ``torchvision://``, ``open-mmlab://``,
``mmcls://``, ``s3://``, ``pavi://``, ...) are fetched by
:func:`fetch_checkpoint` (downloads go to torch's hub cache, as mmengine's
loaders do) and then read under the same rules as local files: nothing here
hands a file to a loader that unpickles it fully.

Damaged files (empty, truncated, not a checkpoint at all) raise
:class:`DamagedCheckpointError`, which names the file and its size.
"""
import _compat_pickle
import errno
import io
import os
import os.path as osp
import pickle
import re
import tempfile
import types
import zipfile
from typing import List, NamedTuple, Optional, Union
from urllib.parse import urlparse

import torch
from mmengine.logging import print_log

from .safetensors_file import SAFETENSORS_EXT, read_safetensors


class DamagedCheckpointError(RuntimeError):
    """A checkpoint file is empty, truncated or not a checkpoint at all."""


class OpaqueObject(dict):
    """Stand-in for a class or function a checkpoint names but we don't trust.

    Calls, ``__new__``, items, list items and state are recorded, never
    interpreted. Subclasses carry the name the file used
    (``opaque_name``).
    """

    opaque_name = '?'

    def __new__(cls, *args, **kwargs):
        obj = dict.__new__(cls)
        obj.__dict__['opaque_args'] = args
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.__dict__['opaque_state'] = state

    def append(self, item):
        self.__dict__.setdefault('opaque_items', []).append(item)

    def extend(self, items):
        self.__dict__.setdefault('opaque_items', []).extend(items)

    def __repr__(self):
        return f'<opaque {self.opaque_name}>'


def _allowed_globals():
    """torch's weights-only allow-list: {'module.name': object}."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals
        return _get_allowed_globals()
    except Exception:  # private API; keep the essentials
        from collections import OrderedDict
        return {
            'collections.OrderedDict': OrderedDict,
            'torch._utils._rebuild_tensor_v2': torch._utils._rebuild_tensor_v2,
            'torch._utils._rebuild_parameter': torch._utils._rebuild_parameter,
            'torch.Size': torch.Size,
        }


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler resolving only torch's weights-only globals.

    Every other global becomes a fresh :class:`OpaqueObject` subclass; its
    dotted name is appended to ``self.replaced``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.replaced: List[str] = []

    def find_class(self, module, name):
        # Python 2 names (protocol 2, torch.save's default), as pickle maps
        module, name = _compat_pickle.NAME_MAPPING.get((module, name),
                                                       (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        path = f'{module}.{name}'
        allowed = _allowed_globals()
        if path in allowed:
            return allowed[path]
        self.replaced.append(path)
        return type(name, (OpaqueObject, ), dict(opaque_name=path))


def _restricted_pickle_module(replaced: List[str]):
    """A stand-in for the ``pickle`` module, as ``torch.load`` takes one."""

    class Unpickler(RestrictedUnpickler):

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.replaced = replaced

    module = types.ModuleType('mmparax_restricted_pickle')
    module.Unpickler = Unpickler
    module.load = lambda f, **kwargs: Unpickler(f, **kwargs).load()
    return module


# -- what torch refused -------------------------------------------------------

_ANSI = re.compile(r'\x1b\[[0-9;]*m')
_GLOBAL = re.compile(r'\bGLOBAL\s+([A-Za-z_][\w.]*[\w])')
_BOILERPLATE = ('Weights only load failed', 'Check the documentation',
                'In PyTorch 2.6', '(1) In PyTorch', '(2) Alternatively')


def refused_global(error: Exception) -> Optional[str]:
    """The dotted name of the global torch's weights-only unpickler refused
    (``'yacs.config.CfgNode'``), or None if the error names none."""
    match = _GLOBAL.search(_ANSI.sub('', str(error)))
    return match.group(1) if match else None


def refusal_reason(error: Exception) -> str:
    """What ``torch.load(weights_only=True)`` refused, in one line.

    torch words it in several ways ("Unsupported global: GLOBAL a.B was not
    an allowed global by default", "Trying to load unsupported GLOBAL a.b
    whose module a is blocked", "Can only create new object for ...") and
    wraps it in paragraphs of advice; this keeps the sentence that says
    what was refused, naming the global when there is one.
    """
    text = re.sub(r'WeightsUnpickler error:\s*', 'WeightsUnpickler error: ',
                  _ANSI.sub('', str(error)))
    lines = [' '.join(line.split()) for line in text.splitlines()]
    lines = [line for line in lines if line]
    name = refused_global(error)
    candidates = [line for line in lines if name and name in line]
    candidates += [line for line in lines if 'WeightsUnpickler error' in line]
    candidates += [
        line for line in lines if not line.startswith(_BOILERPLATE)
    ]
    for line in candidates:
        line = line.split('WeightsUnpickler error:')[-1].strip()
        line = re.split(r'\s+Please use\b', line)[0]
        if line:
            return line[:300]
    return (lines[0][:300] if lines else type(error).__name__)


# Kept for callers of the first release.
_reason = refusal_reason

# -- damaged files ------------------------------------------------------------

_PICKLE_DAMAGE = ('truncated', 'invalid load key', 'ran out of input',
                  'unexpected eof', 'pytorchstreamreader', 'corrupt',
                  'central directory', 'bad zip', 'not a zip',
                  'unpickling stack underflow', 'could not find mark',
                  'unknown opcode', 'invalid opcode', 'magic number')


def is_damage_error(error: BaseException) -> bool:
    """Whether an error of ``torch.load`` says the bytes are broken (rather
    than that an object was refused)."""
    if isinstance(error, (EOFError, zipfile.BadZipFile)):
        return True
    if isinstance(error, OSError) and error.errno == errno.EINVAL:
        return True
    text = str(error).lower()
    if isinstance(error, pickle.UnpicklingError) and (
            text.startswith('weights only load failed')
            or refused_global(error) is not None):
        return False  # torch's weights-only refusal, not broken bytes
    return isinstance(error, (RuntimeError, pickle.UnpicklingError,
                              ValueError, OSError)) and any(
                                  key in text for key in _PICKLE_DAMAGE)


def _size_of(source) -> int:
    if isinstance(source, (bytes, bytearray)):
        return len(source)
    if isinstance(source, io.BytesIO):
        return len(source.getbuffer())
    return osp.getsize(source)


def damaged(name: str, source, detail: str) -> DamagedCheckpointError:
    """The error for a damaged file: names it, its size and what to do."""
    try:
        size = f'{_size_of(source):,} bytes'
    except OSError:
        size = 'size unknown'
    return DamagedCheckpointError(
        f'{name} is damaged or is not a PyTorch checkpoint ({size}): '
        f'{detail.rstrip(". ")}. An interrupted download, copy or save '
        'leaves such files: download the file again, or save it again if a '
        'run wrote it, and check that the path names the checkpoint '
        'itself.')


def check_checkpoint_file(source, name: Optional[str] = None) -> str:
    """Raise :class:`DamagedCheckpointError` unless ``source`` (a path or a
    ``BytesIO``) looks like a whole ``torch.save`` file.

    Returns the format: ``'zip'`` (torch >= 1.6), ``'pickle'`` (legacy) or
    ``'tar'`` (torch < 0.4). Truncated zip archives (the default format)
    are caught here; a truncated legacy pickle is caught while loading.
    """
    name = name or str(source)
    is_buffer = isinstance(source, io.BytesIO)
    size = _size_of(source)
    if size == 0:
        raise damaged(name, source, 'the file is empty')
    if is_buffer:
        source.seek(0)
        head = source.read(512)
        source.seek(0)
    else:
        with open(source, 'rb') as f:
            head = f.read(512)
    if head.startswith(b'PK'):
        try:
            with zipfile.ZipFile(source) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, ValueError) as error:
            raise damaged(
                name, source, 'it starts like a zip archive (the format of '
                'torch.save) but the archive is incomplete or corrupt '
                f'({error})') from error
        finally:
            if is_buffer:
                source.seek(0)
        if not any(n == 'data.pkl' or n.endswith('/data.pkl')
                   for n in names):
            raise damaged(
                name, source, 'it is a zip archive without the data.pkl of '
                f'a torch.save file (it holds {names[:3]})')
        return 'zip'
    if head[:1] == b'\x80':
        return 'pickle'
    if len(head) >= 262 and head[257:262] == b'ustar':
        return 'tar'
    kind = 'text' if head[:64].lstrip().startswith(
        (b'<', b'{', b'#', b'Access', b'Not Found', b'Error')) else 'data'
    raise damaged(
        name, source, 'it is neither a zip archive (torch.save) nor a '
        f'pickle; it starts with {head[:16]!r}' +
        (' (a web page or an error message saved instead of the file?)'
         if kind == 'text' else ''))


def _torch_load(source, name: str, **kwargs):
    """``torch.load`` that reports broken bytes as a damaged file."""
    if isinstance(source, io.BytesIO):
        source.seek(0)
    try:
        return torch.load(source, **kwargs)
    except Exception as error:
        if is_damage_error(error):
            raise damaged(name, source,
                          f'reading it failed with {type(error).__name__}: '
                          f'{" ".join(str(error).split())[:200]}') from error
        raise


def restricted_load(source, name: str, map_location='cpu'):
    """Unpickle with :class:`RestrictedUnpickler`: no code from the file
    runs. Returns ``(object, replaced global names)``."""
    replaced: List[str] = []
    checkpoint = _torch_load(
        source,
        name,
        map_location=map_location,
        weights_only=False,
        pickle_module=_restricted_pickle_module(replaced))
    return checkpoint, replaced


# -- remote checkpoints -------------------------------------------------------


class Fetched(NamedTuple):
    """A checkpoint brought here: ``source`` is a local path or a
    ``BytesIO``; ``name`` says where it came from, for messages."""
    source: Union[str, io.BytesIO]
    name: str
    mmcls: bool = False


_CEPH = re.compile(r'^(\S+:)?(s3|petrel)://')


def hub_dir() -> str:
    """Where downloaded checkpoints are cached (torch's hub cache)."""
    return osp.join(torch.hub.get_dir(), 'checkpoints')


def _unpack_legacy_zip(cached: str, model_dir: str) -> str:
    """torch's hub accepts a zip holding one legacy checkpoint; return the
    path of that file, extracted next to the archive."""
    if not zipfile.is_zipfile(cached):
        return cached
    with zipfile.ZipFile(cached) as archive:
        members = archive.infolist()
        if len(members) != 1 or members[0].is_dir():
            return cached
        target = osp.join(model_dir, osp.basename(members[0].filename))
        if not osp.isfile(target):
            with archive.open(members[0]) as src, \
                    tempfile.NamedTemporaryFile(
                        dir=model_dir, delete=False) as dst:
                dst.write(src.read())
            os.replace(dst.name, target)
    return target


def download_to_cache(url: str, progress: bool = False) -> str:
    """The local copy of ``url`` in torch's hub cache, downloaded with
    torch's ``download_url_to_file`` if absent (local rank 0 first, as
    mmengine does). Nothing is unpickled."""
    from mmengine.dist import get_dist_info
    model_dir = hub_dir()
    os.makedirs(model_dir, exist_ok=True)
    filename = osp.basename(urlparse(url).path)
    if not filename:
        raise ValueError(f'{url} names no file')
    cached = osp.join(model_dir, filename)

    def fetch():
        if not osp.exists(cached):
            print_log(f'Downloading {url} to {cached}', logger='current')
            torch.hub.download_url_to_file(url, cached, None,
                                           progress=progress)

    rank, world_size = get_dist_info()
    if rank == 0:
        fetch()
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            fetch()
    return _unpack_legacy_zip(cached, model_dir)


def _model_url(table: dict, name: str, scheme: str) -> str:
    if name not in table:
        raise KeyError(f'{scheme}{name}: unknown model name; known names '
                       f'include {sorted(table)[:10]}')
    return table[name]


def fetch_checkpoint(filename: str) -> Fetched:
    """Bring a ``scheme://`` checkpoint here without unpickling it.

    Handles every scheme of mmengine 0.10's ``CheckpointLoader``:
    ``http(s)://``, ``torchvision://`` / ``modelzoo://``, ``open-mmlab://``
    / ``openmmlab://``, ``mmcls://``, ``[prefix:]s3://`` /
    ``[prefix:]petrel://`` and ``pavi://``. Raises ``ValueError`` for any
    other scheme.
    """
    from mmengine.runner import checkpoint as mmckpt
    if filename.startswith(('http://', 'https://')):
        cached = download_to_cache(filename)
        return Fetched(cached, f'{filename} (cached as {cached})')
    for scheme in ('torchvision://', 'modelzoo://'):
        if filename.startswith(scheme):
            url = _model_url(mmckpt.get_torchvision_models(),
                             filename[len(scheme):], scheme)
            cached = download_to_cache(url)
            return Fetched(cached, f'{filename} ({url}, cached as {cached})')
    for scheme in ('open-mmlab://', 'openmmlab://'):
        if filename.startswith(scheme):
            model_name = filename[len(scheme):]
            model_name = mmckpt.get_deprecated_model_names().get(
                model_name, model_name)
            url = _model_url(mmckpt.get_external_models(), model_name,
                             scheme)
            if url.startswith(('http://', 'https://')):
                cached = download_to_cache(url)
                return Fetched(cached,
                               f'{filename} ({url}, cached as {cached})')
            local = osp.join(mmckpt._get_mmengine_home(), url)
            if not osp.isfile(local):
                raise FileNotFoundError(f'{local} can not be found.')
            return Fetched(local, f'{filename} ({local})')
    if filename.startswith('mmcls://'):
        url = _model_url(mmckpt.get_mmcls_models(), filename[8:],
                         'mmcls://')
        cached = download_to_cache(url)
        return Fetched(cached, f'{filename} ({url}, cached as {cached})',
                       mmcls=True)
    if _CEPH.match(filename):
        from mmengine.fileio import get_file_backend
        backend = get_file_backend(
            filename, backend_args={'backend': 'petrel'})
        return Fetched(io.BytesIO(backend.get(filename)), filename)
    if filename.startswith('pavi://'):
        try:
            from pavi import modelcloud
        except ImportError:
            raise ImportError(
                'Please install pavi to load checkpoint from modelcloud.')
        model = modelcloud.get(filename[7:])
        with tempfile.TemporaryDirectory() as tmp_dir:
            downloaded = osp.join(tmp_dir, model.name)
            model.download(downloaded)
            with open(downloaded, 'rb') as f:
                return Fetched(io.BytesIO(f.read()), filename)
    raise ValueError(
        f'No safe loader for {filename}: mmparax reads checkpoints from '
        'local files, http(s)://, torchvision://, modelzoo://, '
        'open-mmlab://, openmmlab://, mmcls://, s3://, petrel:// and '
        'pavi://. Download the file and give its local path.')


def mmcls_to_backbone(checkpoint):
    """What mmengine's ``mmcls://`` loader returns: the ``backbone.``
    tensors, unprefixed, under ``state_dict``."""
    from mmengine.runner.checkpoint import _process_mmcls_checkpoint
    return _process_mmcls_checkpoint(checkpoint)


# -- reading weights ----------------------------------------------------------


def load_weights_file(filename: str, map_location='cpu'):
    """Load a checkpoint for its tensors, never running code from it.

    Args:
        filename (str): Local path, or a URL / ``scheme://`` path (see
            :func:`fetch_checkpoint`); remote files are fetched, then read
            under the same rules.
        map_location: As for ``torch.load``. Default: 'cpu'.

    Returns:
        The unpickled object; objects of foreign classes come back as
        :class:`OpaqueObject` instances.

    Raises:
        DamagedCheckpointError: The file is empty, truncated or not a
            checkpoint; the message names it and its size.
        RuntimeError: The file cannot be read even so; the message says how
            to extract the weights.
    """
    if '://' in filename:
        fetched = fetch_checkpoint(filename)
        source, name = fetched.source, fetched.name
    else:
        source = name = osp.expanduser(filename)
        if not osp.isfile(source):
            raise FileNotFoundError(f'{source} can not be found.')
        if source.endswith(SAFETENSORS_EXT):
            return read_safetensors(source)[0]
        fetched = None
    check_checkpoint_file(source, name)
    try:
        checkpoint = _torch_load(
            source, name, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        refusal = refusal_reason(error)
    else:
        return mmcls_to_backbone(checkpoint) \
            if fetched is not None and fetched.mmcls else checkpoint
    try:
        checkpoint, replaced = restricted_load(source, name, map_location)
    except DamagedCheckpointError:
        raise
    except Exception as error:
        shown = source if isinstance(source, str) else 'checkpoint.pth'
        raise RuntimeError(
            f'Cannot read the weights of {name} without running code '
            f'from it. torch.load(weights_only=True) refused it ({refusal}) '
            f'and the restricted unpickler failed too ({error!r}). Extract '
            'the weights where you trust the file and have the packages it '
            'names installed, e.g. python -c "import torch; '
            f"ck = torch.load('{shown}', map_location='cpu', "
            "weights_only=False); torch.save(ck['model'], 'weights.pth')\" "
            ', then give weights.pth as the checkpoint.') from error
    print_log(
        f'{name} holds objects beyond tensors; read it without running '
        'code from it (torch.load(weights_only=True) refused it: '
        f'{refusal}). Replaced by inert placeholders: '
        f'{", ".join(sorted(set(replaced)))}.',
        logger='current')
    if fetched is not None and fetched.mmcls:
        checkpoint = mmcls_to_backbone(checkpoint)
    return checkpoint
