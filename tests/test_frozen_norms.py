"""Frozen normalisation layers keep their running statistics while a
method trains, and a PEFT file's fingerprint check names the tensors that
differ."""
import torch
import torch.nn as nn

from mmparax.apis.peft_checkpoint import (
    PEFT_META,
    fingerprint_mismatch,
    peft_checkpoint,
)
from mmparax.testing.tiny_host import TinyConvHost

MLP = r're:stages\.\d+\.\d+\.mlp\.fc\d'


def bn_state(model):
    return {k: v.clone() for k, v in model.state_dict().items()
            if k.split('.')[-1] in ('running_mean', 'running_var',
                                    'num_batches_tracked')}


def trainable(model):
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def train_step(model):
    optimizer = torch.optim.SGD(trainable(model).values(), lr=0.1)
    model.train()
    torch.manual_seed(3)
    outputs = model(torch.randn(2, 3, 12, 12))
    sum(o.square().mean() for o in outputs).backward()
    optimizer.step()


def test_frozen_batchnorm_keeps_its_statistics_while_the_method_trains():
    model = TinyConvHost(peft=dict(type='LoRA', targets=[MLP]))
    before = bn_state(model)
    weights = {n: p.clone() for n, p in trainable(model).items()}
    train_step(model)
    assert len(before) == 12  # 4 blocks x 3 buffers
    assert all(torch.equal(v, before[k]) for k, v in bn_state(model).items())
    assert any(not torch.equal(p, weights[n])
               for n, p in trainable(model).items())  # the method trained
    norms = model.frozen_norms()
    assert len(norms) == 4 and not any(m.training for m in norms)
    assert model.stages[0][0].mixer.training  # the rest trains


def test_batchnorm_trains_without_a_method_or_when_it_trains():
    full = TinyConvHost()
    before = bn_state(full)
    train_step(full)
    assert all(not torch.equal(v, before[k])
               for k, v in bn_state(full).items())
    model = TinyConvHost(peft=dict(type='LoRA', targets=[MLP]))
    for p in model.stages[1][0].norm.parameters():
        p.requires_grad = True  # a norm the user trains
    model.train()
    assert model.stages[1][0].norm.training
    assert len(model.frozen_norms()) == 3


class Segmentor(nn.Module):
    """What a PEFT file is saved from: a model with a ``backbone``."""

    def __init__(self, **kwargs):
        super().__init__()
        self.backbone = TinyConvHost(**kwargs)


def test_the_fingerprint_check_names_the_tensors_that_differ():
    model = Segmentor(peft=dict(type='LoRA', targets=[MLP]))
    checkpoint = peft_checkpoint(model)
    # stem and downs: 4 tensors; 4 blocks: 11 each
    assert len(checkpoint['meta'][PEFT_META]['pretrained_digests']) == 48
    assert fingerprint_mismatch(checkpoint, model) == ''
    full = TinyConvHost()
    train_step(full)  # BatchNorm statistics drift in training
    stats = {k: v for k, v in full.state_dict().items()
             if 'running' in k or 'num_batches' in k}
    model.backbone.load_state_dict(stats, strict=False)
    message = fingerprint_mismatch(checkpoint, model)
    assert message.startswith('the fingerprints of 12 of its 48 frozen '
                              'backbone tensors differ: stages.0.0.norm.'
                              'num_batches_tracked, stages.0.0.norm.'
                              'running_mean, ')
    assert message.count('stages.') == 5 and 'and 7 more' in message
    assert 'running statistics of normalisation layers only' in message
    with torch.no_grad():
        model.backbone.stem.weight.add_(1)
    message = fingerprint_mismatch(checkpoint, model)
    assert message.startswith('the fingerprints of 13 of its 48 frozen '
                              'backbone tensors differ: stem.weight, ')
    assert 'running statistics' not in message
    del checkpoint['meta'][PEFT_META]['pretrained_digests']  # an older file
    assert fingerprint_mismatch(checkpoint, model).startswith(
        'its fingerprint is ')
