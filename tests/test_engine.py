import logging

import pytest
import torch
import torch.nn as nn
from mmengine.logging import MMLogger

from mmparax.engine import PEFTCheckHook, PEFTOptimWrapperConstructor
from mmparax.models import ParaXSwin, Swin
from mmparax.utils import parameter_report, trainable_summary

TINY = dict(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8))


class Segmentor(nn.Module):

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.decode_head = nn.Conv2d(128, 4, 1)


def parax_model():
    return Segmentor(
        ParaXSwin(parax=dict(hidden_dim=8, router_hidden=4), **TINY))


def test_hook_accepts_a_correct_freeze():
    PEFTCheckHook().check(parax_model())


@pytest.mark.parametrize('breakage, message', [
    (lambda m: m.backbone.stages[1].blocks[0].attn.w_msa.qkv.weight.
     requires_grad_(True), 'should be frozen require grad'),
    (lambda m: m.backbone.expert_centers[0].requires_grad_(False),
     'PEFT parameters are frozen'),
    (lambda m: m.decode_head.requires_grad_(False),
     'head parameters are frozen'),
])
def test_hook_rejects_a_broken_freeze(breakage, message):
    model = parax_model()
    breakage(model)
    with pytest.raises(RuntimeError, match=message):
        PEFTCheckHook().check(model)


def test_hook_rejects_a_backbone_without_peft():
    with pytest.raises(RuntimeError, match='holds no PEFT method parameters'):
        PEFTCheckHook().check(Segmentor(Swin(**TINY)))
    with pytest.raises(RuntimeError, match='mmparax host backbone'):
        PEFTCheckHook().check(Segmentor(nn.Linear(2, 2)))


def test_hook_checks_the_optimizer():
    model = parax_model()
    optim = torch.optim.SGD(model.decode_head.parameters(), lr=0.1)
    wrapper = type('W', (), {'optimizer': optim})()
    with pytest.raises(RuntimeError, match='missing from the optimizer'):
        PEFTCheckHook().check(model, wrapper)


def test_summary_line_and_breakdown():
    model = parax_model()
    report = parameter_report(model)
    assert list(report) == [
        'adapters', 'expert_centers', 'output_norms', 'pretrained', 'heads'
    ]
    assert report['pretrained']['trainable'] == 0
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    assert sum(c['trainable'] for c in report.values()) == trainable
    assert sum(c['total'] for c in report.values()) == total
    line = trainable_summary(model).splitlines()[0]
    assert line == (f'trainable params: {trainable:,d} || all params: '
                    f'{total:,d} || trainable%: '
                    f'{100 * trainable / total:.4f}')


@pytest.mark.parametrize('paramwise', [None, dict(norm_decay_mult=0.)])
def test_constructor_leaves_frozen_parameters_out(paramwise, caplog):
    model = parax_model()
    cfg = dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.01))
    constructor = PEFTOptimWrapperConstructor(cfg, paramwise)
    logger = MMLogger.get_current_instance()
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        wrapper = constructor(model)
    finally:
        logger.removeHandler(handler)
    in_optim = [p for g in wrapper.optimizer.param_groups for p in g['params']]
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert {id(p) for p in in_optim} == {id(p) for p in trainable}
    assert len(in_optim) == len(trainable)
    messages = [r.getMessage() for r in records]
    assert not any('requires_grad=False' in m for m in messages)
    assert any('frozen parameters' in m for m in messages)


def test_adapter_runs_under_autocast():
    # the GPU path trains in fp16; bfloat16 autocast exercises the same casts
    model = ParaXSwin(parax=dict(hidden_dim=8, router_hidden=4), **TINY)
    x = torch.randn(2, 3, 64, 64)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        outs = model(x)
    sum(o.float().square().mean() for o in outs).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
