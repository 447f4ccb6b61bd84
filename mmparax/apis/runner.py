"""mmengine's Runner with strict checkpoint loading and safe saves.

mmengine loads ``load_from`` and ``--resume`` files non-strictly, and
``Runner.test`` never calls ``init_weights``: a checkpoint of another model
is evaluated as a partly random one, with warnings only. :class:`PEFTRunner`
checks every checkpoint against the model before anything runs, and loads
PEFT (adapter-only) checkpoints on top of the config's pretrained backbone.

It also lets a config choose how the heads and necks start
(``head_init``, see :func:`init_model_weights`), writes checkpoints whole or
not at all, and checks the hooks' arguments before the model is built.
:func:`runner_class` gives the same behaviour to a config's ``runner_type``.
"""
import inspect
import os
import os.path as osp
import re

from mmengine.dist import broadcast, master_only
from mmengine.hooks import CheckpointHook as MMEngineCheckpointHook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS, RUNNERS
from mmengine.runner import Runner
from mmengine.runner.checkpoint import (
    _load_checkpoint,
    find_latest_checkpoint,
    load_state_dict,
)

from .peft_checkpoint import (
    checkpoint_problems,
    fingerprint_mismatch,
    is_peft_checkpoint,
    settings_problems,
)
from ..utils.atomic_file import commit_partial, partial_path

PARTIAL_FLAG = '--partial-load'
HEAD_INIT_MODES = ('init_cfg', 'constructor')
CHECKPOINT_HOOK = 'mmparax.CheckpointHook'
# what CheckpointHook passes to Runner.save_checkpoint itself; other keys of
# its config go there through **kwargs
HOOK_SAVE_ARGS = ('self', 'out_dir', 'filename', 'file_client_args',
                  'save_optimizer', 'save_param_scheduler', 'meta',
                  'by_epoch', 'backend_args')
RESUME_STATES = ('optimizer', 'param_schedulers')


class CheckpointMismatchError(RuntimeError):
    """A checkpoint does not fit the model it is loaded into, or cannot
    serve the use it is loaded for (a weights-only file to resume from)."""


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


def _arguments(function):
    """(named arguments of ``function`` but ``self``, whether it also takes
    ``**kwargs``)."""
    params = inspect.signature(function).parameters.values()
    named = [
        p.name for p in params if p.name != 'self' and p.kind not in (
            p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    return named, any(p.kind == p.VAR_KEYWORD for p in params)


def _hook_configs(default_hooks, custom_hooks):
    for name, hook in (default_hooks or {}).items():
        yield f'default_hooks.{name}', hook
    for i, hook in enumerate(custom_hooks or []):
        yield f'custom_hooks[{i}]', hook


def check_hook_arguments(default_hooks, custom_hooks, scope: str,
                         save_checkpoint) -> None:
    """Raise on a hook config key that its hook cannot take.

    A hook whose ``__init__`` has no ``**kwargs`` would refuse the key when
    built; mmengine's ``CheckpointHook`` takes any and passes the unknown
    ones to ``save_checkpoint`` (the runner's, given here), which refuses
    them at the first save, after the first interval of training. Both are
    checked here, before the model is built. Hooks that take ``**kwargs``
    for their own use are not checked.
    """
    with HOOKS.switch_scope_and_registry(scope) as registry:
        for where, cfg in _hook_configs(default_hooks, custom_hooks):
            if not isinstance(cfg, dict) or 'type' not in cfg:
                continue
            cls = cfg['type'] if inspect.isclass(cfg['type']) else \
                registry.get(cfg['type'])
            if cls is None:
                continue  # mmengine names an unknown type
            accepted, takes_any = _arguments(cls.__init__)
            if takes_any:
                if not issubclass(cls, MMEngineCheckpointHook):
                    continue
                saved, takes_any = _arguments(save_checkpoint)
                if takes_any:
                    continue
                accepted += [a for a in saved if a not in HOOK_SAVE_ARGS]
            accepted.append('priority')  # taken by Runner.register_hook
            unknown = [k for k in cfg if k != 'type' and k not in accepted]
            if unknown:
                raise TypeError(
                    f'{where} ({cls.__name__}) has no argument '
                    f'{", ".join(map(repr, unknown))}; it accepts '
                    f'{", ".join(sorted(accepted))}. Correct the key in the '
                    'config or in --cfg-options.')


def _atomic_checkpoint_hooks(default_hooks, scope: str) -> dict:
    """``default_hooks`` with mmengine's ``CheckpointHook`` (named, or
    mmengine's default when absent) replaced by :class:`mmparax.CheckpointHook
    <mmparax.engine.hooks.CheckpointHook>`, which takes the same arguments."""
    hooks = dict(default_hooks or {})
    if 'checkpoint' not in hooks:
        hooks['checkpoint'] = dict(type=CHECKPOINT_HOOK, interval=1)
    hook = hooks['checkpoint']
    if isinstance(hook, dict) and 'type' in hook:
        with HOOKS.switch_scope_and_registry(scope) as registry:
            cls = hook['type'] if inspect.isclass(hook['type']) else \
                registry.get(hook['type'])
        if cls is MMEngineCheckpointHook:
            hooks['checkpoint'] = dict(hook, type=CHECKPOINT_HOOK)
    return hooks


class PEFTRunnerMixin:
    """What :class:`PEFTRunner` adds to an mmengine ``Runner`` class; see
    :func:`runner_class`."""

    def __init__(self, *args, **kwargs):
        cfg = kwargs.get('cfg')
        if cfg is not None:  # fail before the model is built
            check_head_init(cfg.get('head_init', 'init_cfg'))
        scope = kwargs.get('default_scope', 'mmengine')
        kwargs['default_hooks'] = _atomic_checkpoint_hooks(
            kwargs.get('default_hooks'), scope)
        check_hook_arguments(kwargs['default_hooks'],
                             kwargs.get('custom_hooks'), scope,
                             super().save_checkpoint)
        self._resume_needs = ()
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

    @master_only
    def save_checkpoint(self, out_dir, filename, *args, **kwargs):
        """``Runner.save_checkpoint``, written to ``.<filename>.part`` and
        renamed once complete (local folders; other backends as mmengine)."""
        out_dir = str(out_dir)
        if '://' in out_dir or '://' in filename:
            return super().save_checkpoint(out_dir, filename, *args,
                                           **kwargs)
        path = osp.join(out_dir, filename)
        partial = partial_path(path)
        try:
            super().save_checkpoint(out_dir, osp.relpath(partial, out_dir),
                                    *args, **kwargs)
            commit_partial(partial, path)
        except BaseException:
            if osp.exists(partial):
                os.remove(partial)
            raise

    def resume(self,
               filename: str,
               resume_optimizer: bool = True,
               resume_param_scheduler: bool = True,
               map_location='default') -> None:
        # a run without schedulers saves none and mmengine resumes none
        resume_param_scheduler &= self.param_schedulers is not None
        self._resume_needs = tuple(
            key for key, needed in zip(RESUME_STATES, (
                resume_optimizer, resume_param_scheduler)) if needed)
        try:
            super().resume(filename, resume_optimizer, resume_param_scheduler,
                           map_location)
        finally:
            self._resume_needs = ()

    def _check_resumable(self, checkpoint, filename: str) -> None:
        """Refuse to resume from a file without optimizer or scheduler
        state (``best_*``, ``*_peft.*``): training would go on with fresh
        ones, unlike the run it continues."""
        if not isinstance(checkpoint, dict):
            return
        missing = [k for k in self._resume_needs if k not in checkpoint]
        if not missing:
            return
        latest = find_latest_checkpoint(osp.dirname(osp.abspath(filename)))
        regular = f'a regular checkpoint, e.g. --resume {latest}' if latest \
            else 'a regular checkpoint of its run (iter_N.pth / epoch_N.pth)'
        raise CheckpointMismatchError(
            f'Cannot resume from {filename}: it holds no '
            f'{" and no ".join(missing)} state (best_* and *_peft.* '
            'checkpoints keep only the weights), so the resumed run would '
            'restart them and differ from the one it continues. Resume from '
            f'{regular}, or start a new training from these weights with '
            f'load_from={filename} (without --resume).')

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
        self._check_resumable(checkpoint, filename)
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
            self._check_peft_settings(checkpoint, filename)
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

    def _check_peft_settings(self, checkpoint, filename):
        problems = settings_problems(checkpoint, self.cfg)
        if not problems:
            return
        message = (f'{filename} was trained with other method settings than '
                   f'those of {self._config_name()}:\n' + '\n'.join(problems))
        if not self.cfg.get('partial_load', False):
            raise CheckpointMismatchError(
                message + '\nUse the config the file records (tools/test.py '
                f'{filename} without a config rebuilds it) or set the '
                f'settings above; {PARTIAL_FLAG} skips this check.')
        self.logger.warning(message)

    def _check_pretrained_backbone(self, model, checkpoint, filename):
        backbone = getattr(model, 'backbone', None)
        if getattr(backbone, 'peft', None) is None:
            raise CheckpointMismatchError(
                f'{filename} is a PEFT (adapter-only) checkpoint, but the '
                f'backbone of {self._config_name()} hosts no PEFT method '
                '(peft=None): use the PEFT config it was trained with')
        if not getattr(backbone, '_is_init', False):
            backbone.init_weights()  # Runner.test never initialises
        if self.cfg.get('partial_load', False):
            return
        mismatch = fingerprint_mismatch(checkpoint, model)
        if mismatch:
            init_cfg = getattr(backbone, 'init_cfg', None) or {}
            raise CheckpointMismatchError(
                f'{filename} was trained on another pretrained backbone than '
                f'that of {self._config_name()} (init_cfg checkpoint: '
                f'{init_cfg.get("checkpoint")}): {mismatch}. Point '
                'model.backbone.init_cfg.checkpoint (checkpoint_file) at '
                'the pretrained file the adapters were trained on, or give a '
                f'full checkpoint. {PARTIAL_FLAG} skips this check.')


class PEFTRunner(PEFTRunnerMixin, Runner):
    """:class:`mmengine.runner.Runner` that loads checkpoints strictly.

    Every checkpoint loaded through ``load_from``, ``--resume`` or
    ``tools/test.py`` must fit the model exactly: missing, unexpected or
    mis-shaped keys raise :class:`CheckpointMismatchError` before the first
    iteration, unless the config sets ``partial_load=True`` (the tools'
    ``--partial-load``), which loads what fits and lists the rest.
    ``--resume`` refuses a file without optimizer and scheduler state
    (``best_*``, ``*_peft.*``).

    A PEFT checkpoint (:mod:`mmparax.apis.peft_checkpoint`) loads over the
    backbone's pretrained weights, loaded first if they are not yet (as in
    ``Runner.test``), and only if their fingerprint is the one it was trained
    on.

    ``head_init`` (a top-level config key) chooses how training initialises
    the model: ``'init_cfg'`` (the default) calls ``model.init_weights()``
    as mmengine does; ``'constructor'`` initialises only the backbone, as
    the ParaX reference did (:func:`init_model_weights`). Other values
    raise a ``ValueError`` when the runner is built.

    Checkpoints are written whole or not at all: ``save_checkpoint`` writes
    ``.<name>.part`` and renames it, and mmengine's ``CheckpointHook`` is
    replaced by :class:`mmparax.CheckpointHook
    <mmparax.engine.hooks.CheckpointHook>`, which updates ``last_checkpoint``
    and removes old checkpoints only after that. Hook arguments a hook
    cannot take raise when the runner is built.
    """


def runner_class(runner_type=None, registry=RUNNERS) -> type:
    """The runner class to build for a config's ``runner_type``.

    None (no ``runner_type``) and mmengine's ``Runner`` give
    :class:`PEFTRunner`; another subclass of ``Runner`` (a class or a
    registered name) gets :class:`PEFTRunnerMixin` put in front of it, so
    that strict loading, ``head_init`` and safe saves apply whatever the
    runner. A runner that is not a ``Runner`` is refused.
    """
    if runner_type is None:
        return PEFTRunner
    cls = runner_type if inspect.isclass(runner_type) else \
        registry.get(runner_type)
    if cls is None:
        raise KeyError(f'runner_type={runner_type!r} is not a registered '
                       'runner; check its name and custom_imports.')
    if issubclass(cls, PEFTRunnerMixin):
        return cls
    if cls is Runner:
        return PEFTRunner
    if not issubclass(cls, Runner):
        raise TypeError(
            f'runner_type={runner_type!r} ({cls.__module__}.{cls.__name__}) '
            "is not a subclass of mmengine's Runner, so mmparax cannot give "
            'it strict checkpoint loading, head_init and safe checkpoint '
            'saves. Remove runner_type (PEFTRunner is used) or derive the '
            'runner from mmengine.runner.Runner.')
    return type(f'PEFT{cls.__name__}', (PEFTRunnerMixin, cls),
                dict(__module__=__name__, __doc__=cls.__doc__))
