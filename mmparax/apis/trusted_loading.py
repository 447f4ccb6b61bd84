"""Loading checkpoints under ``torch.load(weights_only=True)``.

Since torch 2.6, ``torch.load`` refuses arbitrary pickled objects by default,
and mmengine 0.10.7 cannot read the checkpoints its own Runner writes (their
``message_hub`` holds ``HistoryBuffer`` objects).
:func:`register_trusted_loader` replaces every loader of mmengine's
``CheckpointLoader`` (local files and every ``scheme://``: ``http(s)``,
``torchvision``, ``open-mmlab``, ``mmcls``, ``s3``, ``pavi``, ...):

1. remote files are fetched first (downloads go to torch's hub cache, as
   mmengine's own loaders do), without unpickling anything;
2. every file is first loaded with ``weights_only=True`` (tensors, plain
   containers and numbers: pretrained backbones, adapter-only files);
3. only if that fails, and the file is trusted, it is loaded again with
   ``weights_only=False`` (full unpickling, which can run code);
4. otherwise :class:`UntrustedCheckpointError` names the file, the object
   torch refused and how to trust the file.

Damaged files (empty, truncated, not a checkpoint) raise
:class:`DamagedCheckpointError` naming the file and its size.

Trusted are

- checkpoints the run wrote itself: :class:`CheckpointManifestHook` records
  each file the Runner saves (name, size, sha256) in ``.mmparax_checkpoints
  .json`` next to it, sealed with an HMAC under a key private to the user
  (``~/.config/mmparax/checkpoint-key``, or the file named by
  ``MMPARAX_CHECKPOINT_KEY_FILE``). A file is trusted if the manifest of its
  own folder lists it with the same size and hash, so a file that merely
  lies in the work dir is not, nor is a manifest copied from elsewhere;
- files, folders and URLs given to :func:`trust_checkpoints` (the tools
  pass every ``--trust-checkpoint PATH``) or listed in the environment
  variable ``MMPARAX_TRUSTED_CHECKPOINTS`` (separated by ``os.pathsep``).

Paths are compared after resolving symbolic links, so a link inside a
trusted folder to a file elsewhere is not trusted.
"""
import functools
import hashlib
import hmac
import json
import os
import os.path as osp
import pickle
import secrets
import tempfile
from typing import Callable, Dict, List, Optional

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.runner import CheckpointLoader

from ..registry import HOOKS
from ..utils.runner_globals import RUNNER_GLOBALS
from .peft_checkpoint import ADAPTER_EXT, load_safetensors
from ..utils.atomic_file import atomic_write
from ..utils.restricted_load import (DamagedCheckpointError, Fetched,
                                     _torch_load, check_checkpoint_file,
                                     fetch_checkpoint, mmcls_to_backbone,
                                     refusal_reason, restricted_load)

TRUST_ENV = 'MMPARAX_TRUSTED_CHECKPOINTS'
TRUST_FLAG = '--trust-checkpoint'
KEY_ENV = 'MMPARAX_CHECKPOINT_KEY_FILE'
MANIFEST_NAME = '.mmparax_checkpoints.json'
MANIFEST_HOOK = 'mmparax.CheckpointManifestHook'
MIN_KEY_LENGTH = 32  # characters; the keys made here have 64

_trusted: List[str] = []

__all__ = [
    'TRUST_ENV', 'TRUST_FLAG', 'KEY_ENV', 'MANIFEST_NAME',
    'UntrustedCheckpointError', 'DamagedCheckpointError',
    'trust_checkpoints', 'trusted_paths', 'trust_reason', 'load_from_local',
    'load_from_remote', 'register_trusted_loader',
    'record_written_checkpoint', 'is_recorded_checkpoint',
    'CheckpointManifestHook', 'install_manifest_hook'
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


def _named_by_user(filename: str) -> Optional[str]:
    target = _real(filename)
    for path in trusted_paths():
        if target == path or ('://' not in path and target.startswith(
                path.rstrip(os.sep) + os.sep)):
            return path
    return None


def trust_reason(filename: str) -> Optional[str]:
    """Why ``filename`` (a path or URL) may be fully unpickled, or None.

    Returns the trusted path covering it (named by the user), or, for a
    checkpoint a run recorded, the manifest that lists it.
    """
    named = _named_by_user(filename)
    if named is not None:
        return named
    if '://' not in filename and is_recorded_checkpoint(filename):
        return osp.join(osp.dirname(_real(filename)), MANIFEST_NAME)
    return None


# -- the manifest of written checkpoints ----------------------------------


def _key_file() -> str:
    if os.environ.get(KEY_ENV):
        return osp.expanduser(os.environ[KEY_ENV])
    config = os.environ.get('XDG_CONFIG_HOME') or osp.join(
        osp.expanduser('~'), '.config')
    return osp.join(config, 'mmparax', 'checkpoint-key')


def _read_key(path: str) -> Optional[bytes]:
    try:
        with open(path, 'rb') as f:
            key = f.read().strip()
    except OSError:
        return None
    return key if len(key) >= MIN_KEY_LENGTH else None


def _key(create: bool) -> Optional[bytes]:
    """The user's secret that seals manifests; created (mode 0600) on the
    first record."""
    path = _key_file()
    key = _read_key(path)
    if key is not None or not create:
        return key
    folder = osp.dirname(path) or '.'
    os.makedirs(folder, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.checkpoint-key.')
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(secrets.token_hex(32).encode())
        try:
            os.link(tmp, path)  # atomic; keeps a key another process made
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)
    return _read_key(path)


def _key_problem() -> str:
    path = _key_file()
    if osp.isfile(path):
        return (f'the key file {path} is empty or shorter than '
                f'{MIN_KEY_LENGTH} characters, so it is not used: remove it '
                f'(a new key is made) or set {KEY_ENV} to another key file')
    return f'cannot read or create the key file {path}'


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(functools.partial(f.read, 1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def _seal(key: bytes, name: str, size: int, sha256: str) -> str:
    message = f'{name}\n{size}\n{sha256}'.encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _read_manifest(path: str) -> Dict[str, dict]:
    try:
        with open(path) as f:
            data = json.load(f)
        entries = data.get('checkpoints', {})
        return entries if isinstance(entries, dict) else {}
    except (OSError, ValueError, AttributeError):
        return {}


def record_written_checkpoint(path: str) -> Optional[str]:
    """Record a checkpoint file this process has just written as trusted.

    Adds its name, size and sha256 (sealed with the user's key) to
    ``.mmparax_checkpoints.json`` in the folder of the real file, dropping
    entries of files that are gone. Returns the manifest path, or None
    (with a logged warning) if nothing could be recorded.
    """
    real = _real(path)
    if not osp.isfile(real):
        return None
    folder, name = osp.split(real)
    manifest = osp.join(folder, MANIFEST_NAME)
    try:
        key = _key(create=True)
        if key is None:
            raise OSError(_key_problem())
        size, sha256 = osp.getsize(real), _sha256(real)
        entries = {
            n: e
            for n, e in _read_manifest(manifest).items()
            if n != name and osp.isfile(osp.join(folder, n))
        }
        entries[name] = dict(
            size=size, sha256=sha256, mac=_seal(key, name, size, sha256))
        with atomic_write(manifest, 'w') as f:
            json.dump(dict(version=1, checkpoints=entries), f, indent=1)
    except OSError as error:
        print_log(
            f'Could not record {real} as written by this run ({error}); '
            f'loading it fully later needs {TRUST_FLAG} {real}.',
            logger='current',
            level=30)
        return None
    return manifest


def is_recorded_checkpoint(path: str) -> bool:
    """Whether the manifest of the folder of the real file lists it with
    the same size and sha256, sealed with the user's key."""
    real = _real(path)
    folder, name = osp.split(real)
    entry = _read_manifest(osp.join(folder, MANIFEST_NAME)).get(name)
    key = _key(create=False)
    if not isinstance(entry, dict) or key is None or not osp.isfile(real):
        return False
    try:
        size, sha256, mac = int(entry['size']), str(entry['sha256']), str(
            entry['mac'])
    except (KeyError, TypeError, ValueError):
        return False
    if osp.getsize(real) != size or not hmac.compare_digest(
            mac, _seal(key, name, size, sha256)):
        return False
    return hmac.compare_digest(_sha256(real), sha256)


def _join_local(out_dir, filename) -> Optional[str]:
    if not isinstance(out_dir, str) or not isinstance(filename, str) or \
            '://' in out_dir or '://' in filename:
        return None
    return osp.join(out_dir, filename)


@HOOKS.register_module()
class CheckpointManifestHook(Hook):
    """Record every checkpoint the Runner saves in the manifest of its
    folder, so that :func:`load_from_local` trusts exactly those files.

    ``before_run`` wraps ``runner.save_checkpoint`` (the method every
    checkpoint of mmengine's ``CheckpointHook``, best checkpoints included,
    goes through): after each save, the main process records the written
    file with :func:`record_written_checkpoint`. Files on remote backends
    are not recorded.
    """

    priority = 'VERY_HIGH'

    def before_run(self, runner) -> None:
        original = runner.save_checkpoint
        if getattr(original, '_mmparax_records', False):
            return

        @functools.wraps(original)
        def save_and_record(out_dir, filename, *args, **kwargs):
            result = original(out_dir, filename, *args, **kwargs)
            path = _join_local(out_dir, filename)
            if path is not None and is_main_process():
                record_written_checkpoint(path)
            return result

        save_and_record._mmparax_records = True
        runner.save_checkpoint = save_and_record


def install_manifest_hook(cfg) -> None:
    """Add :class:`CheckpointManifestHook` to ``cfg.custom_hooks`` (once)."""
    hooks = list(cfg.get('custom_hooks') or [])
    for hook in hooks:
        type_ = hook.get('type') if isinstance(hook, dict) else type(hook)
        if type_ in (MANIFEST_HOOK, 'CheckpointManifestHook',
                     CheckpointManifestHook) or isinstance(
                         hook, CheckpointManifestHook):
            return
    hooks.append(dict(type=MANIFEST_HOOK))
    cfg.custom_hooks = hooks


# -- loading ------------------------------------------------------------


def _how_to_trust(shown: str, recorded_note: bool) -> str:
    text = (f'If you trust the file, pass {TRUST_FLAG} {shown} to '
            f'tools/train.py or tools/test.py, or add it (or its folder) to '
            f'the environment variable {TRUST_ENV}.')
    if recorded_note:
        text += (' Checkpoints an mmparax run writes are trusted only if the '
                 f'{MANIFEST_NAME} of their folder lists them unchanged; '
                 'checkpoints written before mmparax kept that record, or '
                 f'copied from another machine, need {TRUST_FLAG}.')
    return text


def _load_trusted(source, name: str, map_location,
                  trust: Callable[[], Optional[str]], shown: str,
                  local: bool):
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
            'Checkpoints saved by an OpenMMLab Runner need '
            f'weights_only=False. {_how_to_trust(shown, local)}'
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
                         lambda: trust_reason(filename), _real(filename),
                         True)


def load_from_remote(filename: str, map_location=None):
    """Load a ``scheme://`` checkpoint: fetch it without unpickling, then
    weights only, or fully if the URL (or the cached file) is trusted."""
    fetched: Fetched = fetch_checkpoint(filename)

    def trust():
        if isinstance(fetched.source, str):
            return _named_by_user(filename) or _named_by_user(fetched.source)
        return _named_by_user(filename)

    checkpoint = _load_trusted(fetched.source, fetched.name, map_location,
                               trust, filename, False)
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
