"""The globals of the checkpoints mmengine's Runner writes, for
``torch.load(weights_only=True)``.

Besides tensors and plain containers, a Runner checkpoint (model,
optimizer, schedulers, AMP loss scaler, message hub, numpy / python / torch
RNG states, meta) pickles exactly these: numpy arrays, dtypes and scalars
(``HistoryBuffer`` logs, numpy RNG states, metric values), mmengine's
``HistoryBuffer``, and ``getattr(HistoryBuffer, 'min' | 'max' | 'current' |
'mean')``, its statistics methods. :data:`RUNNER_GLOBALS` allows these and
nothing else: ``getattr`` is replaced by :func:`history_buffer_method`,
which resolves only those four names.
"""
import pickle

import numpy as np
from mmengine.logging import HistoryBuffer

STATISTICS = ('min', 'max', 'current', 'mean')


def history_buffer_method(owner, name: str):
    """``getattr(HistoryBuffer, name)`` for its statistics methods; refuses
    every other attribute of every other object."""
    if owner is not HistoryBuffer or name not in STATISTICS:
        raise pickle.UnpicklingError(
            f'getattr({getattr(owner, "__name__", type(owner).__name__)}, '
            f'{name!r}) is not allowed: only HistoryBuffer.'
            f'{"/".join(STATISTICS)} are')
    return getattr(owner, name)


RUNNER_GLOBALS = [
    np.core.multiarray._reconstruct, np.core.multiarray.scalar, np.ndarray,
    np.dtype, HistoryBuffer, (history_buffer_method, 'builtins.getattr')
] + [type(np.dtype(t)) for t in np.sctypeDict.values()]
