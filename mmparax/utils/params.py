"""Parameter accounting of PEFT models."""
import copy
from collections import OrderedDict
from typing import Dict

import torch.nn as nn


def _strip_pretrained(cfg):
    """Drop every pretrained-weight reference from a model config."""
    if isinstance(cfg, dict):
        if 'pretrained' in cfg:
            cfg['pretrained'] = None
        init_cfg = cfg.get('init_cfg')
        if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
            cfg['init_cfg'] = None
        for value in cfg.values():
            _strip_pretrained(value)
    elif isinstance(cfg, (list, tuple)):
        for value in cfg:
            _strip_pretrained(value)


def build_config_model(cfg, backbone_only: bool = False) -> nn.Module:
    """``cfg.model`` (or its backbone) built on the CPU in the config's
    scope, without loading any pretrained checkpoint; ``cfg`` is left
    unchanged."""
    from mmengine.registry import MODELS, init_default_scope
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model_cfg = copy.deepcopy(cfg.model)
    _strip_pretrained(model_cfg)
    if backbone_only:
        model_cfg = model_cfg.backbone
    return MODELS.build(model_cfg).cpu()


def count(params) -> int:
    return sum(p.numel() for p in params)


def backbone_components(backbone: nn.Module) -> 'OrderedDict[str, Dict]':
    """Per-component ``{'trainable': n, 'total': n}`` of a backbone.

    Components are those of ``backbone.peft_components()`` (adapters,
    expert_centers, output_norms, pretrained) when the backbone is a
    mmparax host backbone, else one ``'backbone'`` entry.
    """
    named = dict(backbone.named_parameters())
    if hasattr(backbone, 'peft_components'):
        groups = backbone.peft_components()
    else:
        groups = OrderedDict(backbone=list(named))
    return OrderedDict(
        (group, dict(
            trainable=count(named[n] for n in names
                            if named[n].requires_grad),
            total=count(named[n] for n in names)))
        for group, names in groups.items())


def parameter_report(model: nn.Module) -> 'OrderedDict[str, Dict]':
    """``{'trainable': n, 'total': n}`` per component of a whole model.

    The backbone is split as in :func:`backbone_components`; every other
    top-level child (decode heads, necks, detection heads) counts as
    ``'heads'``.
    """
    report = OrderedDict()
    backbone = getattr(model, 'backbone', None)
    if backbone is not None:
        report.update(backbone_components(backbone))
    heads = [
        p for name, child in model.named_children() if child is not backbone
        for p in child.parameters()
    ]
    if heads:
        report['heads'] = dict(
            trainable=count(p for p in heads if p.requires_grad),
            total=count(heads))
    return report


def trainable_summary(model: nn.Module) -> str:
    """``trainable params: ... || all params: ... || trainable%: ...`` with
    a per-component breakdown on the following lines."""
    report = parameter_report(model)
    trainable = count(p for p in model.parameters() if p.requires_grad)
    total = count(model.parameters())
    lines = [
        f'trainable params: {trainable:,d} || all params: {total:,d} || '
        f'trainable%: {100 * trainable / max(total, 1):.4f}'
    ]
    for name, c in report.items():
        lines.append(f'  {name:<15} trainable {c["trainable"]:>13,d} / '
                     f'{c["total"]:>13,d}')
    note = output_norms_note(getattr(model, 'backbone', None))
    if note:
        lines.append(f'  {note}')
    return '\n'.join(lines)


def output_norms_note(backbone) -> str:
    """Whether the new output layers of a host backbone with a method train
    and why; '' when it has none (or no method)."""
    method = getattr(backbone, 'peft', None)
    if method is None or not backbone.new_module_names():
        return ''
    trained = backbone.trains_output_norms
    why = 'set by train_output_norms' if method.train_output_norms is not \
        None else f"{method.name}'s official setting"
    return (f'output norms ({", ".join(backbone.new_module_names())}): '
            f'{"trained" if trained else "frozen at their initial values"} '
            f'({why})')
