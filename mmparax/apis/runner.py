"""mmengine's Runner with strict checkpoint loading.

mmengine loads ``load_from`` and ``--resume`` files non-strictly, and
``Runner.test`` never calls ``init_weights``: a checkpoint of another model
is evaluated as a partly random one, with warnings only. :class:`PEFTRunner`
checks every checkpoint against the model before anything runs, and loads
PEFT (adapter-only) checkpoints on top of the config's pretrained backbone.
"""
import re

from mmengine.model import is_model_wrapper
from mmengine.runner import Runner
from mmengine.runner.checkpoint import (_load_checkpoint,
                                        find_latest_checkpoint,
                                        load_state_dict)

from .peft_checkpoint import (PEFT_META, checkpoint_problems,
                              is_peft_checkpoint, pretrained_fingerprint)

PARTIAL_FLAG = '--partial-load'


class CheckpointMismatchError(RuntimeError):
    """A checkpoint does not fit the model it is loaded into."""


class PEFTRunner(Runner):
    """:class:`mmengine.runner.Runner` that loads checkpoints strictly.

    Every checkpoint loaded through ``load_from``, ``--resume`` or
    ``tools/test.py`` must fit the model exactly: missing, unexpected or
    mis-shaped keys raise :class:`CheckpointMismatchError` before the first
    iteration, unless the config sets ``partial_load=True`` (the tools'
    ``--partial-load``), which loads what fits and lists the rest.

    A PEFT checkpoint (:mod:`mmparax.apis.peft_checkpoint`) loads over the
    backbone's pretrained weights, loaded first if they are not yet (as in
    ``Runner.test``), and only if their fingerprint is the one it was trained
    on.
    """

    def load_or_resume(self) -> None:
        if not self._has_loaded and self._resume and self._load_from is None \
                and find_latest_checkpoint(self.work_dir) is None:
            self.logger.warning(
                f'--resume: {self.work_dir} holds no checkpoint to resume '
                'from (no last_checkpoint file); training starts from '
                'iteration 0')
        super().load_or_resume()

    def load_checkpoint(self,
                        filename: str,
                        map_location='cpu',
                        strict: bool = False,
                        revise_keys: list = [(r'^module\.', '')]):
        checkpoint = _load_checkpoint(filename, map_location=map_location)
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        model = self.model.module if is_model_wrapper(self.model) \
            else self.model
        state_dict = checkpoint.get('state_dict', checkpoint) \
            if isinstance(checkpoint, dict) else checkpoint
        for pattern, replacement in revise_keys:
            state_dict = {
                re.sub(pattern, replacement, k): v
                for k, v in state_dict.items()
            }
        peft = is_peft_checkpoint(checkpoint)
        if peft:
            self._check_pretrained_backbone(model, checkpoint, filename)
        problems = checkpoint_problems(model, state_dict, peft)
        if problems:
            kind = 'PEFT checkpoint' if peft else 'checkpoint'
            message = (f'The {kind} {filename} does not fit the model of '
                       f'{self._config_name()}:\n' + '\n'.join(problems))
            if not self.cfg.get('partial_load', False):
                raise CheckpointMismatchError(
                    message + '\nCheck that the config is the one the '
                    'checkpoint was trained with (backbone sizes, method '
                    f'settings, heads). To load only what fits, pass '
                    f'{PARTIAL_FLAG} (partial_load=True).')
            self.logger.warning(message + '\npartial_load=True: loading '
                                'what fits, the rest keeps its current values')
        load_state_dict(model, state_dict, strict=False, logger=self.logger)
        self._has_loaded = True
        self.logger.info(f'Load {"PEFT " if peft else ""}checkpoint from '
                         f'{filename}')
        return checkpoint

    def _config_name(self) -> str:
        return getattr(self.cfg, 'filename', None) or 'the config'

    def _check_pretrained_backbone(self, model, checkpoint, filename):
        backbone = getattr(model, 'backbone', None)
        if getattr(backbone, 'peft', None) is None:
            raise CheckpointMismatchError(
                f'{filename} is a PEFT (adapter-only) checkpoint, but the '
                f'backbone of {self._config_name()} hosts no PEFT method '
                '(peft=None): use the PEFT config it was trained with')
        if not getattr(backbone, '_is_init', False):
            backbone.init_weights()  # Runner.test never initialises
        expected = checkpoint['meta'][PEFT_META]['pretrained_fingerprint']
        found = pretrained_fingerprint(model)
        if found != expected and not self.cfg.get('partial_load', False):
            init_cfg = getattr(backbone, 'init_cfg', None) or {}
            raise CheckpointMismatchError(
                f'{filename} was trained on a pretrained backbone with '
                f'fingerprint {expected[:16]}..., but the backbone of '
                f'{self._config_name()} (init_cfg checkpoint: '
                f'{init_cfg.get("checkpoint")}) has {found[:16]}...: point '
                'model.backbone.init_cfg.checkpoint (checkpoint_file) at '
                'the pretrained file the adapters were trained on, or give a '
                f'full checkpoint. {PARTIAL_FLAG} skips this check.')
