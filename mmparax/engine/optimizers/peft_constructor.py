import logging
from collections import OrderedDict
from typing import Dict, List, Tuple

import torch.nn as nn
from mmengine.logging import MMLogger, print_log
from mmengine.optim import DefaultOptimWrapperConstructor
from torch.nn import GroupNorm, LayerNorm
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from mmparax.registry import OPTIM_WRAPPER_CONSTRUCTORS
from mmparax.utils.params import count, parameter_report

# what mmengine's DefaultOptimWrapperConstructor logs once per parameter
PER_PARAMETER_PREFIX = 'paramwise_options -- '
DEFAULT_RULE = 'default'


class _QuietParamwise(logging.Filter):
    """Drops the parent's per-parameter lines from the log.

    The ``requires_grad=False`` warnings (one per frozen parameter) are
    dropped; the ``paramwise_options -- <name>:<key>=<value>`` lines are kept
    at DEBUG level when the logger shows DEBUG and dropped otherwise. The
    summary table of :class:`PEFTOptimWrapperConstructor` replaces both.
    """

    def __init__(self, logger: logging.Logger):
        super().__init__()
        self.logger = logger

    def filter(self, record):
        message = str(record.msg)
        if 'requires_grad=False' in message:
            return False
        if message.startswith(PER_PARAMETER_PREFIX):
            if not self.logger.isEnabledFor(logging.DEBUG):
                return False
            record.levelno = logging.DEBUG
            record.levelname = logging.getLevelName(logging.DEBUG)
        return True


def _dcn_types() -> tuple:
    try:
        from mmcv.ops import DeformConv2d, ModulatedDeformConv2d
    except ImportError:  # mmcv without its compiled ops
        return ()
    return DeformConv2d, ModulatedDeformConv2d


def paramwise_rules(
        model: nn.Module,
        paramwise_cfg: dict) -> 'OrderedDict[int, Tuple[str, str]]':
    """``{id(param): (name, rule)}`` of every parameter of ``model``.

    ``rule`` names the ``paramwise_cfg`` entry that decides the parameter's
    lr and weight decay in ``DefaultOptimWrapperConstructor.add_params``:
    ``"custom_keys['<key>']"`` (the longest key contained in the name wins,
    then the alphabetically first), else the ``*_mult`` options that apply
    joined by ``+`` (``bias_lr_mult``, ``dcn_offset_lr_mult``, then one of
    ``norm_decay_mult``, ``bias_decay_mult``, ``dwconv_decay_mult``,
    ``flat_decay_mult``), else ``'default'``.
    """
    cfg = paramwise_cfg or {}
    custom_keys = cfg.get('custom_keys', {})
    sorted_keys = sorted(sorted(custom_keys), key=len, reverse=True)
    dcn_types = _dcn_types()
    rules = OrderedDict()
    parents = {}
    for prefix, module in model.named_modules():
        for child_name, child in module.named_children():
            parents.setdefault(
                f'{prefix}.{child_name}' if prefix else child_name, module)
    for prefix, module in model.named_modules():
        is_norm = isinstance(module,
                             (_BatchNorm, _InstanceNorm, GroupNorm, LayerNorm))
        is_dwconv = (
            isinstance(module, nn.Conv2d)
            and module.in_channels == module.groups)
        parent = parents.get(prefix)
        is_dcn = bool(dcn_types) and isinstance(parent, dcn_types)
        for name, param in module.named_parameters(recurse=False):
            if id(param) in rules:
                continue
            full_name = f'{prefix}.{name}' if prefix else name
            key = next((k for k in sorted_keys if k in f'{prefix}.{name}'),
                       None)
            if key is not None:
                rules[id(param)] = (full_name, f'custom_keys[{key!r}]')
                continue
            parts = []
            if (name == 'bias' and not (is_norm or is_dcn)
                    and cfg.get('bias_lr_mult') is not None):
                parts.append('bias_lr_mult')
            if ('conv_offset' in prefix and is_dcn
                    and isinstance(module, nn.Conv2d)
                    and cfg.get('dcn_offset_lr_mult') is not None):
                parts.append('dcn_offset_lr_mult')
            if is_norm and cfg.get('norm_decay_mult') is not None:
                parts.append('norm_decay_mult')
            elif (name == 'bias' and not is_dcn
                  and cfg.get('bias_decay_mult') is not None):
                parts.append('bias_decay_mult')
            elif is_dwconv and cfg.get('dwconv_decay_mult') is not None:
                parts.append('dwconv_decay_mult')
            elif (param.ndim == 1 and not is_dcn
                  and cfg.get('flat_decay_mult') is not None):
                parts.append('flat_decay_mult')
            rules[id(param)] = (full_name, '+'.join(parts) or DEFAULT_RULE)
    return rules


def param_group_table(model: nn.Module, param_groups: List[dict],
                      paramwise_cfg: dict, base_lr: float,
                      base_wd: float) -> List[Dict]:
    """One row per (rule, lr, weight decay) of the optimizer's groups.

    Each parameter in ``param_groups`` is matched to its name and to its
    ``paramwise_cfg`` rule (:func:`paramwise_rules`); its lr and weight
    decay are those of its group. Rows: ``rule``, ``tensors``, ``elements``,
    ``lr``, ``weight_decay``, ``lr_mult`` and ``decay_mult`` (the group's
    values over the base ones; None when the base is 0 or unset), ordered as
    the custom keys of the config, then the other rules, then ``default``.
    A custom key that matched no parameter of the groups gets a row of 0
    tensors with None values.
    """
    rules = paramwise_rules(model, paramwise_cfg)
    rows = OrderedDict()
    for group in param_groups:
        lr = group.get('lr', base_lr)
        wd = group.get('weight_decay', base_wd)
        for param in group['params']:
            _, rule = rules.get(id(param), ('?', DEFAULT_RULE))
            row = rows.setdefault((rule, lr, wd), dict(
                rule=rule, tensors=0, elements=0, lr=lr, weight_decay=wd,
                lr_mult=lr / base_lr if base_lr else None,
                decay_mult=wd / base_wd if base_wd and wd is not None
                else None))
            row['tensors'] += 1
            row['elements'] += param.numel()
    order = [f'custom_keys[{k!r}]'
             for k in (paramwise_cfg or {}).get('custom_keys', {})]
    matched = {row['rule'] for row in rows.values()}
    for rule in order:  # keys that matched no trained parameter
        if rule not in matched:
            rows[(rule, None, None)] = dict(
                rule=rule, tensors=0, elements=0, lr=None,
                weight_decay=None, lr_mult=None, decay_mult=None)

    def rank(row):
        rule = row['rule']
        if rule in order:
            return (0, order.index(rule))
        return (2, 0) if rule == DEFAULT_RULE else (1, rule)

    return sorted(rows.values(), key=rank)


def _number(value) -> str:
    return 'n/a' if value is None else f'{value:g}'


def format_param_group_table(rows: List[Dict], base_lr: float,
                             base_wd: float) -> str:
    """The table of :func:`param_group_table` as aligned text lines."""
    header = ('rule', 'tensors', 'elements', 'lr', 'weight decay')
    lines = [header]
    for row in rows:
        if not row['tensors']:
            lines.append((row['rule'], '0', '0', '-', '-'))
            continue
        lines.append((
            row['rule'], f'{row["tensors"]:,d}', f'{row["elements"]:,d}',
            f'{_number(row["lr"])} (x{_number(row["lr_mult"])})',
            f'{_number(row["weight_decay"])} '
            f'(x{_number(row["decay_mult"])})'))
    lines.append(('total', f'{sum(r["tensors"] for r in rows):,d}',
                  f'{sum(r["elements"] for r in rows):,d}', '', ''))
    widths = [max(len(line[i]) for line in lines) for i in range(5)]
    text = [
        '  '.join(
            cell.ljust(w) if i in (0, 3, 4) else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths))).rstrip()
        for line in lines
    ]
    return (f'optimizer parameter groups (base lr {_number(base_lr)}, '
            f'base weight decay {_number(base_wd)}):\n' + '\n'.join(text))


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class PEFTOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """``DefaultOptimWrapperConstructor`` that leaves frozen parameters out.

    Same ``paramwise_cfg`` semantics as the default constructor, but frozen
    parameters are dropped with one summary line instead of one warning per
    frozen parameter, and never reach the optimizer. The parent's
    ``paramwise_options -- ...`` line per parameter and setting is kept out
    of the log (shown at DEBUG level with ``log_level='DEBUG'``); one table
    replaces it, with the tensors and elements each ``paramwise_cfg`` rule
    matched and their lr and weight decay, read from the built optimizer's
    param groups.
    """

    def __call__(self, model):
        module = model.module if hasattr(model, 'module') else model
        logger = MMLogger.get_current_instance()
        quiet = _QuietParamwise(logger)
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
        rows = param_group_table(module, groups, self.paramwise_cfg,
                                 self.base_lr, self.base_wd)
        print_log(
            f'{type(self).__name__}: ' +
            format_param_group_table(rows, self.base_lr, self.base_wd),
            logger='current')
        return optim_wrapper
