import logging

from mmengine.logging import MMLogger, print_log
from mmengine.optim import DefaultOptimWrapperConstructor

from mmparax.registry import OPTIM_WRAPPER_CONSTRUCTORS
from mmparax.utils.params import count, parameter_report


class _DropFrozenWarnings(logging.Filter):

    def filter(self, record):
        return 'requires_grad=False' not in str(record.msg)


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class PEFTOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """``DefaultOptimWrapperConstructor`` that leaves frozen parameters out.

    Same ``paramwise_cfg`` semantics as the default constructor, but frozen
    parameters are dropped with one summary line instead of one warning per
    frozen parameter, and never reach the optimizer.
    """

    def __call__(self, model):
        module = model.module if hasattr(model, 'module') else model
        logger = MMLogger.get_current_instance()
        quiet = _DropFrozenWarnings()
        logger.addFilter(quiet)
        try:
            optim_wrapper = super().__call__(module)
        finally:
            logger.removeFilter(quiet)
        groups = optim_wrapper.optimizer.param_groups
        for group in groups:
            group['params'] = [p for p in group['params'] if p.requires_grad]
        groups[:] = [g for g in groups if g['params']]
        frozen = [p for p in module.parameters() if not p.requires_grad]
        trained = ', '.join(
            f'{group} {c["trainable"]:,d}'
            for group, c in parameter_report(module).items()
            if c['trainable'])
        print_log(
            f'{type(self).__name__}: optimizing {trained}; '
            f'{count(frozen):,d} frozen parameters ({len(frozen)} tensors) '
            'left out',
            logger='current')
        return optim_wrapper
