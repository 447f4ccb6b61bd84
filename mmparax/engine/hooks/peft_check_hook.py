from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from mmparax.models.backbones.host import PRETRAINED
from mmparax.registry import HOOKS
from mmparax.utils import trainable_summary

_MAX_LISTED = 10


def _listing(names):
    names = sorted(names)
    more = f' ... and {len(names) - _MAX_LISTED} more' \
        if len(names) > _MAX_LISTED else ''
    return ', '.join(names[:_MAX_LISTED]) + more


@HOOKS.register_module()
class PEFTCheckHook(Hook):
    """Check the PEFT freeze before training and log what is trained.

    Fails before the first iteration unless: the backbone is a mmparax host
    backbone with a non-empty set of PEFT parameters; exactly those backbone
    parameters require grad; every parameter outside the backbone (heads,
    necks) requires grad (``heads_trainable``); and every trainable parameter
    is in the optimizer. Then logs
    ``trainable params: ... || all params: ... || trainable%: ...`` with a
    per-component breakdown.

    Args:
        heads_trainable (bool): Require every non-backbone parameter to be
            trainable. Default: True.
    """

    priority = 'VERY_HIGH'

    def __init__(self, heads_trainable: bool = True):
        self.heads_trainable = heads_trainable

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        self.check(model, getattr(runner, 'optim_wrapper', None))
        print_log(trainable_summary(model), logger='current')

    def check(self, model, optim_wrapper=None) -> None:
        """Raise RuntimeError naming the parameters that break the freeze."""
        backbone = getattr(model, 'backbone', None)
        if backbone is None or not hasattr(backbone, 'peft_trainable_names'):
            raise RuntimeError(
                'PEFTCheckHook needs a model whose backbone is a mmparax host '
                "backbone with a method (e.g. mmparax.Swin with peft=dict("
                f"type='ParaX')); got {type(backbone).__name__}. Remove the "
                'hook for full fine-tuning configs.')
        expected = set(backbone.peft_trainable_names())
        trainable = {
            n for n, p in backbone.named_parameters() if p.requires_grad
        }
        problems = []
        method_groups = [
            g for g, names in backbone.peft_components().items()
            if names and g not in (PRETRAINED, backbone.new_layers_group)
        ]
        if getattr(backbone, 'peft', None) is None or not method_groups:
            problems.append('the backbone holds no PEFT method parameters '
                            '(peft=None is full fine-tuning)')
        if trainable - expected:
            problems.append(
                'backbone parameters that should be frozen require grad: ' +
                _listing(trainable - expected))
        if expected - trainable:
            problems.append('PEFT parameters are frozen: ' +
                            _listing(expected - trainable))
        if self.heads_trainable:
            frozen_heads = [
                n for n, p in model.named_parameters()
                if not n.startswith('backbone.') and not p.requires_grad
            ]
            if frozen_heads:
                problems.append('head parameters are frozen: ' +
                                _listing(frozen_heads) +
                                ' (set heads_trainable=False if intended)')
        if optim_wrapper is not None and hasattr(optim_wrapper, 'optimizer'):
            in_optim = {
                id(p)
                for g in optim_wrapper.optimizer.param_groups
                for p in g['params']
            }
            left_out = [
                n for n, p in model.named_parameters()
                if p.requires_grad and id(p) not in in_optim
            ]
            if left_out:
                problems.append('trainable parameters missing from the '
                                'optimizer: ' + _listing(left_out))
        if problems:
            raise RuntimeError('PEFT freeze check failed for '
                               f'{type(backbone).__name__}:\n  - ' +
                               '\n  - '.join(problems))
