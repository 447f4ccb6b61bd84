"""Files that are either complete or absent.

A file is written to a hidden partial file of the same folder
(``.<name>.part``), flushed to disk, then renamed over its name: a process
killed while writing leaves the previous file (or none) and a ``.part``
file, never a cut-off one under the real name.
"""
import os
import os.path as osp
from contextlib import contextmanager

import torch

PARTIAL_SUFFIX = '.part'


def partial_path(path: str) -> str:
    """``folder/.name.part``: where ``folder/name`` is written first."""
    folder, name = osp.split(path)
    return osp.join(folder, f'.{name}{PARTIAL_SUFFIX}')


def is_partial(name: str) -> bool:
    return name.startswith('.') and name.endswith(PARTIAL_SUFFIX)


def _fsync(path: str, flags: int = os.O_RDONLY) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_partial(partial: str, path: str) -> None:
    """Flush ``partial`` to disk and rename it to ``path`` (atomic on POSIX
    within a folder), then flush the folder entry."""
    _fsync(partial)
    os.replace(partial, path)
    try:
        _fsync(osp.dirname(osp.abspath(path)))
    except OSError:  # some file systems cannot sync a folder
        pass


@contextmanager
def atomic_write(path: str, mode: str = 'wb'):
    """``with atomic_write(path) as f``: ``path`` appears only once ``f`` is
    fully written; on an error the partial file is removed and ``path``
    keeps its previous content."""
    partial = partial_path(path)
    try:
        with open(partial, mode) as f:
            yield f
        commit_partial(partial, path)
    except BaseException:
        if osp.exists(partial):
            os.remove(partial)
        raise


def atomic_torch_save(obj, path: str) -> None:
    """``torch.save(obj, path)`` through :func:`atomic_write`."""
    with atomic_write(path) as f:
        torch.save(obj, f)
