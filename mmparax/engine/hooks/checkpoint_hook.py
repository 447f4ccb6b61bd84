import os
import os.path as osp
from contextlib import contextmanager

from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook as MMEngineCheckpointHook

from mmparax.registry import HOOKS
from mmparax.utils.atomic_file import atomic_write, is_partial


class _DeferredRemovals:
    """A file backend whose ``remove`` / ``rmtree`` wait for :meth:`run`."""

    def __init__(self, backend):
        self._backend = backend
        self.pending = []

    def remove(self, path):
        self.pending.append((self._backend.remove, path))

    def rmtree(self, path):
        self.pending.append((self._backend.rmtree, path))

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def run(self, keep=()):
        """Remove what was asked, but the paths in ``keep``."""
        for remove, path in self.pending:
            if path not in keep:
                remove(path)


@HOOKS.register_module()
class CheckpointHook(MMEngineCheckpointHook):
    """mmengine's ``CheckpointHook`` that never leaves a run without a
    complete checkpoint to resume from.

    mmengine removes the checkpoint beyond ``max_keep_ckpts`` (and the
    previous ``best_*``) before it writes the new one, writes the new one in
    place and then ``last_checkpoint``: a process killed during the save
    is left with a cut-off file and a ``last_checkpoint`` naming a removed
    one. Here

    1. the file is written completely before it takes its name (the
       runner's ``save_checkpoint`` writes ``.<name>.part`` and renames it,
       see :class:`mmparax.apis.runner.PEFTRunner`);
    2. ``last_checkpoint`` is replaced the same way, once the file is there;
    3. the checkpoints beyond ``max_keep_ckpts`` and the previous ``best_*``
       are removed only after that.

    A kill at any moment leaves ``last_checkpoint`` naming a complete file;
    ``.part`` files it leaves are removed when the next run starts. The
    arguments are mmengine's.
    """

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if not is_main_process() or not osp.isdir(str(self.out_dir)):
            return
        for name in os.listdir(self.out_dir):
            if is_partial(name):
                os.remove(osp.join(self.out_dir, name))
                runner.logger.info(
                    f'Removed {name}, a checkpoint save that was cut off.')

    @contextmanager
    def _removals_last(self):
        """Removals through ``self.file_backend`` wait for the block's end,
        and spare the checkpoints the hook now points at (a file saved again
        under the name it had)."""
        backend = self.file_backend
        self.file_backend = deferred = _DeferredRemovals(backend)
        try:
            yield
        finally:
            self.file_backend = backend
        best = getattr(self, 'best_ckpt_path_dict', None) or {}
        deferred.run(keep={
            self.last_ckpt,
            getattr(self, 'best_ckpt_path', None), *best.values()
        })

    def _save_checkpoint_with_step(self, runner, step, meta):
        """mmengine's, with the checkpoint beyond ``max_keep_ckpts``
        removed after the new one and ``last_checkpoint`` are written."""
        retired = None
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and
                                            self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                retired = self.keep_ckpt_ids.popleft()
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids',
                                           list(self.keep_ckpt_ids))
        filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir,
            filename,
            self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args)
        if not is_main_process():
            return
        with atomic_write(osp.join(runner.work_dir, 'last_checkpoint'),
                          'w') as f:
            f.write(self.last_ckpt)
        if retired is not None:
            path = self.file_backend.join_path(
                self.out_dir, self.filename_tmpl.format(retired))
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):  # deepspeed: a folder
                self.file_backend.rmtree(path)

    def _save_best_checkpoint(self, runner, metrics) -> None:
        """mmengine's, with the previous best removed after the new one
        (and the re-saved ``iter_N`` / ``epoch_N``) is written."""
        with self._removals_last():
            super()._save_best_checkpoint(runner, metrics)
