import os
import os.path as osp

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log

from mmparax.apis.peft_checkpoint import (
    ADAPTER_EXT,
    PEFT_META,
    PEFT_SUFFIX,
    save_peft_checkpoint,
)
from mmparax.registry import HOOKS


@HOOKS.register_module()
class PEFTCheckpointHook(Hook):
    """Write a PEFT (adapter-only) checkpoint beside every full one.

    Each time mmengine's ``CheckpointHook`` saves ``iter_N.pth`` (or
    ``epoch_N.pth``, ``best_*.pth``), this hook writes
    ``iter_N_peft.safetensors`` next to it: the method's modules, the
    backbone's new layers and the heads, without the frozen pretrained
    backbone, plus the fingerprint of that backbone, the method settings,
    ``dataset_meta`` and the config (see :mod:`mmparax.apis.peft_checkpoint`).
    ``tools/test.py`` evaluates either file, the small one over the config's
    pretrained checkpoint. A ``<name>_peft.*`` whose ``<name>.pth`` is gone
    (``max_keep_ckpts``) is removed with it. Files are written whole or not
    at all; a run resumed from a checkpoint whose PEFT file a kill prevented
    writes it, and never rewrites an existing one.

    Args:
        suffix (str): Added to the full checkpoint's name. Default: '_peft'.
    """

    priority = 'LOWEST'  # after CheckpointHook (VERY_LOW)

    def __init__(self, suffix: str = PEFT_SUFFIX):
        self.suffix = suffix
        self._written = {}

    @staticmethod
    def _saved(runner) -> dict:
        """``{'last_ckpt': path, 'best_ckpt...': path}`` CheckpointHook
        reports."""
        info = runner.message_hub.runtime_info
        return {
            k: v
            for k, v in info.items()
            if (k == 'last_ckpt' or k.startswith('best_ckpt')) and v
        }

    def before_train(self, runner) -> None:
        # a resumed run knows the checkpoints it came from: not ours to
        # write, except the PEFT file of the one it resumed from (its
        # weights are the model's now) if a kill came before it was written
        self._written = self._saved(runner)
        last = self._written.get('last_ckpt')
        if last and is_main_process() and osp.isfile(last) and \
                not osp.exists(self._path(last)):
            self._save(runner, last)

    def _path(self, full: str) -> str:
        return f'{osp.splitext(full)[0]}{self.suffix}{ADAPTER_EXT}'

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        self._write(runner)

    def after_train_epoch(self, runner) -> None:
        self._write(runner)

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._write(runner)  # best checkpoints are saved after validation

    def _write(self, runner) -> None:
        for key, full in self._saved(runner).items():
            if self._written.get(key) == full:
                continue
            self._written[key] = full
            if is_main_process():
                self._save(runner, full)

    def _save(self, runner, full: str) -> None:
        path = self._path(full)
        written = save_peft_checkpoint(
            runner.model, path, runner.cfg,
            meta=dict(
                epoch=runner.epoch,
                iter=runner.iter,
                full_checkpoint=osp.basename(full),
                dataset_meta=_dataset_meta(runner)))
        self._remove_orphans(osp.dirname(path))
        print_log(
            f'PEFT checkpoint {path}: '
            f'{written["meta"][PEFT_META]["num_elements"]:,d} '
            'parameters and buffers', logger='current')

    def _remove_orphans(self, folder: str) -> None:
        for name in os.listdir(folder):
            for tail in (f'{self.suffix}{ADAPTER_EXT}', f'{self.suffix}.pth'):
                if name.endswith(tail) and not osp.exists(
                        osp.join(folder, name[:-len(tail)] + '.pth')):
                    os.remove(osp.join(folder, name))


def _dataset_meta(runner) -> dict:
    """The training set's ``metainfo`` (classes, palette), as mmengine's
    Runner records it in ``meta['dataset_meta']``."""
    loader = runner.train_dataloader
    dataset = getattr(loader, 'dataset', None)
    return dict(getattr(dataset, 'metainfo', None) or {})
