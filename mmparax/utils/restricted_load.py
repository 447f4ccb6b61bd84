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
"""
import _compat_pickle
import os.path as osp
import pickle
import types
from typing import List

import torch
from mmengine.logging import print_log
from mmengine.runner import CheckpointLoader


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


def _reason(error: Exception) -> str:
    """The line of a torch.load error that names what was refused."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if 'Unsupported global' in line or 'WeightsUnpickler error' in line:
            return line.split(' Please use')[0][:300]
    return lines[0][:300] if lines else type(error).__name__


def load_weights_file(filename: str, map_location='cpu'):
    """Load a checkpoint for its tensors, never running code from it.

    Args:
        filename (str): Local path, or a URL / ``scheme://`` path handled by
            mmengine's ``CheckpointLoader``.
        map_location: As for ``torch.load``. Default: 'cpu'.

    Returns:
        The unpickled object; objects of foreign classes come back as
        :class:`OpaqueObject` instances.

    Raises:
        RuntimeError: The file cannot be read even so; the message says how
            to extract the weights.
    """
    if '://' in filename:
        return CheckpointLoader.load_checkpoint(filename, map_location)
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    try:
        return torch.load(
            filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        refusal = _reason(error)
    replaced: List[str] = []
    try:
        checkpoint = torch.load(
            filename,
            map_location=map_location,
            weights_only=False,
            pickle_module=_restricted_pickle_module(replaced))
    except Exception as error:
        raise RuntimeError(
            f'Cannot read the weights of {filename} without running code '
            f'from it. torch.load(weights_only=True) refused it ({refusal}) '
            f'and the restricted unpickler failed too ({error!r}). Extract '
            'the weights where you trust the file and have the packages it '
            'names installed, e.g. python -c "import torch; '
            f"ck = torch.load('{filename}', map_location='cpu', "
            "weights_only=False); torch.save(ck['model'], 'weights.pth')\" "
            ', then give weights.pth as the checkpoint.') from error
    print_log(
        f'{filename} holds objects beyond tensors; read it without running '
        'code from it (torch.load(weights_only=True) refused it: '
        f'{refusal}). Replaced by inert placeholders: '
        f'{", ".join(sorted(set(replaced)))}.',
        logger='current')
    return checkpoint
