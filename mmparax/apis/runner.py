"""mmengine's Runner with strict checkpoint loading.

mmengine loads ``load_from`` and ``--resume`` files non-strictly, and
``Runner.test`` never calls ``init_weights``: a checkpoint of another model
is evaluated as a partly random one, with warnings only. :class:`PEFTRunner`
checks every checkpoint against the model before anything runs, and loads
PEFT (adapter-only) checkpoints on top of the config's pretrained backbone.

It also lets a config choose how the heads and necks start
(``head_init``, see :func:`init_model_weights`).
"""
import re

from mmengine.dist import broadcast
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner
from mmengine.runner.checkpoint import (_load_checkpoint,
                                        find_latest_checkpoint,
                                        load_state_dict)

from .peft_checkpoint import (PEFT_META, checkpoint_problems,
                              is_peft_checkpoint, pretrained_fingerprint)

PARTIAL_FLAG = '--partial-load'
HEAD_INIT_MODES = ('init_cfg', 'constructor')


class CheckpointMismatchError(RuntimeError):
    """A checkpoint does not fit the model it is loaded into."""


def check_head_init(head_init) -> str:
    """Return ``head_init`` if it is a known mode, else raise naming it."""
    if head_init not in HEAD_INIT_MODES:
        raise ValueError(
            f'head_init={head_init!r} is not supported: use '
            "'init_cfg' (OpenMMLab: model.init_weights() applies every "
            "init_cfg, the default) or 'constructor' (the ParaX reference: "
            "only the backbone's init_weights() runs, the necks and heads "
            'keep the values their constructors gave)')
    return head_init


def init_model_weights(model, head_init: str = 'init_cfg', logger=None):
    """Initialise a model before training, as ``head_init`` says.

    Args:
        model (nn.Module): The model (unwrapped).
        head_init (str): ``'init_cfg'``: ``model.init_weights()``, mmengine's
            behaviour (FPN Xavier, RPN / RoI heads normal 0.01 / 0.001,
            ``conv_seg`` normal 0.01, ...). ``'constructor'``: only
            ``model.backbone.init_weights()`` runs (it loads the pretrained
            checkpoint); every other module keeps the values its constructor
            gave (PyTorch's defaults, Kaiming inside mmcv's ``ConvModule``),
            as in the ParaX reference training scripts, which never call
            ``model.init_weights()``.
        logger (logging.Logger, optional): Gets one line in the
            ``'constructor'`` mode.
    """
    check_head_init(head_init)
    if head_init == 'init_cfg':
        if hasattr(model, 'init_weights'):
            model.init_weights()
        return
    backbone = getattr(model, 'backbone', None)
    if backbone is None or not hasattr(backbone, 'init_weights'):
        raise ValueError(
            "head_init='constructor' initialises only the backbone, but "
            f'{type(model).__name__} has no backbone with init_weights(); '
            "use head_init='init_cfg'")
    backbone.init_weights()
    if logger is not None:
        logger.info(
            "head_init='constructor': only the backbone's init_weights() "
            'ran; the necks and heads keep their constructor '
            "initialisation (the ParaX reference's); head_init='init_cfg' "
            "applies OpenMMLab's init_cfg instead")


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

    ``head_init`` (a top-level config key) chooses how training initialises
    the model: ``'init_cfg'`` (the default) calls ``model.init_weights()``
    as mmengine does; ``'constructor'`` initialises only the backbone, as
    the ParaX reference did (:func:`init_model_weights`). Other values
    raise a ``ValueError`` when the runner is built.
    """

    def __init__(self, *args, **kwargs):
        cfg = kwargs.get('cfg')
        if cfg is not None:  # fail before the model is built
            check_head_init(cfg.get('head_init', 'init_cfg'))
        super().__init__(*args, **kwargs)

    def _init_model_weights(self) -> None:
        """Initialise the model as the config's ``head_init`` says (absent:
        ``'init_cfg'``, mmengine's ``model.init_weights()``)."""
        model = self.model.module if is_model_wrapper(self.model) \
            else self.model
        init_model_weights(model, self.head_init, self.logger)
        # every rank starts from the same weights
        for param in model.state_dict().values():
            broadcast(param)

    @property
    def head_init(self) -> str:
        return check_head_init(self.cfg.get('head_init', 'init_cfg'))

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
            load_state_dict(
                model, state_dict, strict=False, logger=self.logger)
        else:
            # it fits: a PEFT checkpoint lacks only the frozen pretrained
            # weights, which mmengine would list as missing keys
            model.load_state_dict(state_dict, strict=False)
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
