"""The same buffers on every rank, so that validation scores what is saved.

Under DDP the parameters of every rank stay equal, but buffers do not: a BN
layer that does not sync (SyncBN turned into BN on the CPU, or a config's
plain BN) updates its running statistics from its own rank's images. Rank 0
saves its own statistics while each rank validates its shard of the
validation set with its own, so the logged score (and the ``best_*`` choice)
belongs to no saved file. :class:`AverageBuffersHook` gives every rank the
mean of the ranks' floating-point buffers after each training iteration
(before a checkpoint is saved) and before each validation.
"""
from collections import defaultdict

import torch
from mmengine.dist import all_reduce, broadcast, get_world_size
from mmengine.hooks import Hook
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from mmparax.registry import HOOKS


def average_buffers(module: torch.nn.Module) -> None:
    """Make the buffers of ``module`` equal on every rank, in place.

    Floating-point buffers (BN running mean and variance, ...) become their
    mean over the ranks. The mean is taken in float64, so a buffer that is
    already equal on every rank (SyncBN's statistics) keeps its exact value.
    Other buffers (counters, indices) take rank 0's values. Does nothing
    outside a distributed run.
    """
    world_size = get_world_size()
    if world_size == 1:
        return
    buffers = list(module.buffers())
    floating = [b for b in buffers if b.is_floating_point()]
    if floating:
        total = _flatten_dense_tensors([b.detach().double() for b in floating])
        all_reduce(total)
        total /= world_size
        for buffer, mean in zip(floating,
                                _unflatten_dense_tensors(total, floating)):
            buffer.data.copy_(mean)
    by_dtype = defaultdict(list)
    for buffer in buffers:
        if not buffer.is_floating_point():
            by_dtype[buffer.dtype].append(buffer)
    for group in by_dtype.values():
        flat = _flatten_dense_tensors([b.detach() for b in group])
        broadcast(flat, 0)
        for buffer, value in zip(group, _unflatten_dense_tensors(flat, group)):
            buffer.data.copy_(value)


@HOOKS.register_module()
class AverageBuffersHook(Hook):
    """Average the buffers of all ranks (:func:`average_buffers`) after each
    training iteration and before each validation.

    Its priority runs it before ``CheckpointHook`` (``VERY_LOW``), so every
    checkpoint holds the buffers every rank validates with. Running
    statistics are averaged at each iteration rather than only at the saves;
    since an exponential moving average is linear in its inputs, the result
    is the same (up to rounding), and resuming from any checkpoint gives
    every rank the buffers it had in the uninterrupted run.
    ``tools/train.py`` adds it to every distributed run.
    """

    priority = 'ABOVE_NORMAL'

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        average_buffers(runner.model)

    def before_val_epoch(self, runner) -> None:
        average_buffers(runner.model)
