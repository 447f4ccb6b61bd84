"""Random number generator states in checkpoints, for exact resumption.

mmengine's checkpoints hold the model, optimizer, schedulers and message hub
but no RNG state: a resumed run re-seeds its generators from the config's
seed, so every stochastic layer (drop path, dropout) draws other numbers
than the uninterrupted run from the first iteration after the checkpoint
on. :class:`RNGStateHook` stores the states in every checkpoint and puts
them back on resume.
"""
import random
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.distributed as torch_dist
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.runner import IterBasedTrainLoop

from mmparax.registry import HOOKS

WARNING = 30
CHECKPOINT_KEY = 'rng_states'


def _distributed() -> bool:
    return torch_dist.is_available() and torch_dist.is_initialized()


def get_rng_state() -> Dict:
    """The RNG states of this process, as tensors, numbers and strings.

    Returns a dict with the torch CPU generator (``'torch'``), one state per
    visible CUDA device (``'cuda'``, empty without CUDA), numpy's global
    generator (``'numpy'``) and python's ``random`` (``'python'``). Nothing
    in it needs ``torch.load(weights_only=False)``.
    """
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    cuda = []
    if torch.cuda.is_available():
        cuda = [state.clone() for state in torch.cuda.get_rng_state_all()]
    return dict(
        torch=torch.get_rng_state(),
        cuda=cuda,
        numpy=(str(np_name), torch.from_numpy(np_keys.astype(np.int64)),
               int(np_pos), int(np_has_gauss), float(np_gauss)),
        python=(int(py_version),
                torch.tensor(py_internal, dtype=torch.int64), py_gauss))


def set_rng_state(state: Dict) -> List[str]:
    """Restore what :func:`get_rng_state` returned.

    Returns a list of problems (empty when every generator was restored):
    CUDA states are restored only when the number of visible devices is the
    one they were saved with.
    """
    problems = []
    torch.set_rng_state(state['torch'])
    cuda = list(state.get('cuda') or [])
    num_devices = torch.cuda.device_count() if torch.cuda.is_available() \
        else 0
    if cuda and num_devices == len(cuda):
        torch.cuda.set_rng_state_all(cuda)
    elif cuda or num_devices:
        problems.append(f'the checkpoint has CUDA RNG states of {len(cuda)} '
                        f'device(s), this process sees {num_devices}; the '
                        'CUDA generators were not restored')
    name, keys, pos, has_gauss, gauss = state['numpy']
    np.random.set_state(
        (name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state['python']
    random.setstate((version, tuple(internal.tolist()), gauss_next))
    return problems


def gather_rng_states() -> Optional[List[Dict]]:
    """Every rank's RNG states, on rank 0 (``[rank 0, rank 1, ...]``).

    A collective call when distributed (every rank must call it; ranks other
    than 0 get None); a list of one state otherwise.
    """
    state = get_rng_state()
    if not _distributed():
        return [state]
    rank = torch_dist.get_rank()
    gathered = [None] * torch_dist.get_world_size() if rank == 0 else None
    torch_dist.gather_object(state, gathered, dst=0)
    return gathered


class _RestoreAfterFastForward:
    """Stands in for the data iterator of a resumed ``IterBasedTrainLoop``.

    The loop advances the iterator by ``skip`` batches (the iterations the
    checkpoint already trained) and then fetches the batch of the first new
    iteration. The RNG states are restored between the two, then the loop
    gets its own iterator back.
    """

    def __init__(self, loop, iterator, skip: int, restore):
        self._loop = loop
        self._iterator = iterator
        self._skip = skip
        self._restore = restore

    def __iter__(self):
        return self

    def __next__(self):
        if self._skip > 0:
            self._skip -= 1
            return next(self._iterator)
        self._loop.dataloader_iterator = self._iterator
        self._restore()
        return next(self._iterator)


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Save the RNG states in checkpoints; restore them on resume.

    With it, a run stopped at any moment (even ``kill -9``) and resumed from
    its last checkpoint with ``--resume`` trains bit-identically to a run
    that was never stopped, stochastic layers (drop path) included, on the
    CPU with an ``IterBasedTrainLoop``.

    **What is saved.** Every rank's torch CPU generator, the generators of
    all its visible CUDA devices, numpy's and python's ``random`` global
    generators, as ``checkpoint['rng_states'] = [rank 0, rank 1, ...]``
    (tensors, numbers and strings only). mmengine writes checkpoints on rank
    0 alone, so the states are gathered to rank 0 with ``torch.distributed``
    right before a ``CheckpointHook`` saves (this hook runs just before it:
    priority ``LOW``), on every rank at the same iteration.

    **Validation does not touch the training generators.** The states are
    saved after the checkpoint's iteration, but the uninterrupted run then
    validates (drawing numbers, e.g. for its data loader) and the resumed one
    does not. So the states are put aside before every validation and put
    back after it; a checkpoint saved during validation (``save_best``)
    gets the states from before the validation.

    **When states are restored.** Not when the checkpoint is loaded:
    between loading and the next iteration, mmengine's
    ``IterBasedTrainLoop`` re-runs the data loader over the iterations
    already trained (to reach the same sampler position), and with
    ``num_workers=0`` the data pipeline draws its augmentations from this
    process's generators. States restored before that fast-forward would be
    consumed by it; restored at the next ``before_train_iter`` they would
    come after the first new batch was already drawn. So the loop's data
    iterator is wrapped: the states are restored after the last skipped
    batch and before the first new one, which is where the uninterrupted run
    saved them. The sampler position and the data workers' own generators
    (seeded by mmengine from the seed, the rank and the worker id) come from
    that fast-forward, as in mmengine.

    A loop that overrides ``IterBasedTrainLoop.run`` gets its states at the
    first ``before_train_iter``. An ``EpochBasedTrainLoop`` gets them at the
    first ``before_train_epoch``: exact when the checkpoint was saved at the
    end of an epoch (``CheckpointHook(by_epoch=True)``). mmengine restarts a
    partly trained epoch from its first batch, so a run resumed from a
    checkpoint saved within an epoch is not identical anyway; a warning says
    so.

    A resumed checkpoint without states (saved without this hook) or saved
    by another number of ranks is resumed with the freshly seeded generators
    and a warning that the run is not bit-identical.

    Exactness also needs what mmengine re-creates from the config to be the
    same: a fixed ``randomness=dict(seed=...)`` (the data loader, its
    sampler and its workers are built from the seed before the checkpoint is
    read) and deterministic kernels (on CUDA, ``deterministic=True`` and no
    ``cudnn_benchmark``).

    Args:
        enabled (bool): False makes the hook do nothing, as if it were not
            registered: mmengine accepts ``default_hooks.<name>=None`` only
            for its own default hooks, so
            ``--cfg-options default_hooks.rng_state.enabled=False`` is the
            way to switch it off. Default: True.
    """

    priority = 'LOW'

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._pending: Optional[Dict] = None  # this rank's, to restore
        self._restore_at_iter = False
        self._collected = None  # (step, states gathered to rank 0)
        self._before_val = None  # (this rank's states, gathered states)
        self._warned_fallback = False

    # -- saving ----------------------------------------------------------

    @staticmethod
    def _checkpoint_hooks(runner):
        return [h for h in runner.hooks if isinstance(h, CheckpointHook)]

    def _collect(self, runner, step) -> None:
        self._collected = (step, gather_rng_states())

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        if not self.enabled:
            return
        saves = any(
            not h.by_epoch and (
                h.every_n_train_iters(runner, h.interval, h.save_begin) or
                (h.save_last and h.is_last_train_iter(runner)))
            for h in self._checkpoint_hooks(runner))
        if saves:
            self._collect(runner, ('iter', runner.epoch, runner.iter))

    def after_train_epoch(self, runner) -> None:
        if not self.enabled:
            return
        saves = any(
            h.by_epoch and (
                h.every_n_epochs(runner, h.interval, h.save_begin) or
                (h.save_last and h.is_last_train_epoch(runner)))
            for h in self._checkpoint_hooks(runner))
        if saves:
            self._collect(runner, ('epoch', runner.epoch, runner.iter))

    def before_val(self, runner) -> None:
        if not self.enabled:
            return
        # every rank validates: a safe place for a collective call
        self._before_val = (get_rng_state(), gather_rng_states())

    def after_val(self, runner) -> None:
        if self._before_val is not None:
            set_rng_state(self._before_val[0])
            self._before_val = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        # called on rank 0 only
        if not self.enabled:
            return
        if self._before_val is not None:
            states = self._before_val[1]
        elif self._collected is not None and self._collected[0] in (
                ('iter', runner.epoch, runner.iter),
                ('epoch', runner.epoch, runner.iter)):
            states = self._collected[1]
        elif not _distributed():
            states = gather_rng_states()
        else:
            # a save no CheckpointHook announced: the other ranks are not
            # at a collective call, only rank 0's own states are at hand
            states = [get_rng_state()]
            if not self._warned_fallback:
                self._warned_fallback = True
                print_log(
                    'RNGStateHook: a checkpoint was saved outside '
                    "CheckpointHook's schedule; it holds the RNG states of "
                    'rank 0 only, and resuming from it is not bit-identical.',
                    logger='current',
                    level=WARNING)
        checkpoint[CHECKPOINT_KEY] = states

    # -- restoring -------------------------------------------------------

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if not self.enabled or not getattr(runner, '_resume', False):
            return  # load_from: fine-tuning from weights, not a resumption
        self._pending = None
        states = checkpoint.get(CHECKPOINT_KEY)
        rank = torch_dist.get_rank() if _distributed() else 0
        world_size = torch_dist.get_world_size() if _distributed() else 1
        if not states:
            self._warn(
                runner, 'the checkpoint holds no RNG states (it was saved '
                'without mmparax.RNGStateHook); the generators keep their '
                'fresh seeding')
        elif len(states) != world_size:
            self._warn(
                runner, f'the checkpoint holds the RNG states of '
                f'{len(states)} rank(s), this run has {world_size}; the '
                'generators keep their fresh seeding')
        else:
            self._pending = states[rank]
        seed = checkpoint.get('meta', {}).get('seed')
        if seed is not None and seed != runner.seed:
            self._warn(
                runner, f'the checkpoint was trained with seed {seed} and the '
                f'data loader of this run was built with seed {runner.seed} '
                '(mmengine re-seeds from the checkpoint only after building '
                'it): data order and augmentations differ. Set '
                f'randomness=dict(seed={seed}) in the config')

    @staticmethod
    def _warn(runner, reason: str) -> None:
        print_log(
            f'RNGStateHook: resuming, {reason}. The resumed run is NOT '
            'bit-identical to an uninterrupted one.',
            logger='current',
            level=WARNING)

    def _restore(self) -> None:
        state, self._pending = self._pending, None
        self._restore_at_iter = False
        if state is None:
            return
        for problem in set_rng_state(state):
            print_log(
                f'RNGStateHook: {problem}; the resumed run is not '
                'bit-identical on CUDA.',
                logger='current',
                level=WARNING)
        print_log(
            'RNGStateHook: restored the RNG states of the checkpoint.',
            logger='current')

    def before_train_epoch(self, runner) -> None:
        if self._pending is None:
            return
        loop = runner.train_loop
        if isinstance(loop, IterBasedTrainLoop):
            if type(loop).run is IterBasedTrainLoop.run and hasattr(
                    loop, 'dataloader_iterator'):
                # mmengine's loop skips loop.iter batches right after this
                loop.dataloader_iterator = _RestoreAfterFastForward(
                    loop, loop.dataloader_iterator, loop.iter, self._restore)
            else:
                self._restore_at_iter = True
            return
        num_batches = len(loop.dataloader)
        if num_batches and loop.iter != loop.epoch * num_batches:
            print_log(
                f'RNGStateHook: the checkpoint was saved at iteration '
                f'{loop.iter}, within epoch {loop.epoch + 1}; mmengine trains '
                'that epoch again from its first batch, so the resumed run is '
                'not bit-identical. Save checkpoints at epoch ends '
                '(CheckpointHook(by_epoch=True)) for exact resumption.',
                logger='current',
                level=WARNING)
        self._restore()

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        if self._restore_at_iter:
            self._restore()
