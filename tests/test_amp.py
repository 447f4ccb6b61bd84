"""fp16 mixed precision on the CPU: ``AmpOptimWrapper`` configs train with
``mmparax.CPUAmpOptimWrapper`` (float16 autocast, CPU ``GradScaler``), and
``--resume`` restores the loss scaler bit-exactly."""
import math
import re

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.optim import build_optim_wrapper

from mmparax.apis import runtime
from mmparax.engine import CPUAmpOptimWrapper
from mmparax.peft.parax import FP16_ON_CPU_ENV
from mmparax.testing import check_ok, run_tool, short_demo_config
from mmparax.testing.peft import (
    HOSTS,
    METHODS,
    PAIRS,
    build_pair,
    float16_forward_backward,
    float16_method,
    perturb,
)

ENV = dict(OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
STAND_IN = 'CPUAmpOptimWrapper: no CUDA device, the CPU stand-in'

cpu_only = pytest.mark.skipif(
    torch.cuda.is_available(),
    reason='the CPU stand-in replaces AmpOptimWrapper only without CUDA')


def amp_wrapper(model, optimizer=dict(type='SGD', lr=0.1), **amp_kwargs):
    """``optim_wrapper=dict(type='AmpOptimWrapper', ...)`` as the tools
    build it without CUDA."""
    cfg = Config(
        dict(
            optim_wrapper=dict(
                type='AmpOptimWrapper', optimizer=optimizer, **amp_kwargs)))
    runtime.check_optim_wrapper(cfg)
    return build_optim_wrapper(model, cfg.optim_wrapper)


@cpu_only
def test_amp_optim_wrapper_on_cpu(capsys):
    MMLogger.get_instance('mmparax_amp_test')  # a current logger to print
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    wrapper = amp_wrapper(
        model, loss_scale=dict(init_scale=2.**10, growth_interval=1))
    assert type(wrapper) is CPUAmpOptimWrapper
    assert STAND_IN in capsys.readouterr().out
    x = torch.randn(3, 4)

    with wrapper.optim_context(model):
        out = model(x)
    assert out.dtype == torch.float16
    before = model.weight.detach().clone()
    wrapper.update_params(out.float().square().mean())
    assert model.weight.dtype == torch.float32  # float32 master weights
    assert not torch.equal(model.weight, before)
    assert wrapper.loss_scaler.get_scale() == 2.**11  # grown after 1 step

    # inf gradients: the step is skipped and the scale lowered
    before = model.weight.detach().clone()
    with wrapper.optim_context(model):
        out = model(x)
    wrapper.update_params(out.float().sum() * float('inf'))
    assert torch.equal(model.weight, before)
    assert wrapper.loss_scaler.get_scale() == 2.**10

    state = wrapper.state_dict()['loss_scaler']
    assert state['scale'] == 2.**10 and state['_growth_tracker'] == 0


def test_cpu_amp_bad_arguments():
    model = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match='loss_scale must be'):
        CPUAmpOptimWrapper(loss_scale='static', optimizer=optimizer)
    with pytest.raises(ValueError, match='use_fsdp=True needs CUDA'):
        CPUAmpOptimWrapper(use_fsdp=True, optimizer=optimizer)
    with pytest.raises(ValueError, match="dtype must be one of"):
        CPUAmpOptimWrapper(dtype='half', optimizer=optimizer)


@pytest.fixture(scope='module')
def config(tmp_path_factory):
    """The demo recipe, 4 iterations, a checkpoint every 2."""
    return short_demo_config(
        str(tmp_path_factory.mktemp('amp')), total=4, interval=2,
        num_train=8, num_val=2)


def train(config, work_dir, *args):
    proc = run_tool(
        'train.py', config, '--amp', '--work-dir', work_dir, *args,
        # the scale doubles every step: the state that must resume changes
        '--cfg-options', 'optim_wrapper.loss_scale.init_scale=1024.0',
        'optim_wrapper.loss_scale.growth_interval=1',
        cwd=work_dir.parent, env=ENV, timeout=300)
    check_ok(proc)
    return proc.stdout + proc.stderr


def final(work_dir):
    ckpt = torch.load(work_dir / 'iter_4.pth', map_location='cpu',
                      weights_only=False)
    return ckpt['state_dict'], ckpt['optimizer']['loss_scaler']


@pytest.mark.e2e
@cpu_only
def test_amp_training_resumes_bit_exactly(config, tmp_path):
    straight = tmp_path / 'straight'
    log = train(config, straight)
    assert log.count(STAND_IN) == 1
    losses = [float(v) for v in re.findall(r' loss: ([\d.]+)', log)]
    assert len(losses) == 4 and all(map(torch.isfinite, torch.tensor(losses)))
    middle = torch.load(straight / 'iter_2.pth', map_location='cpu',
                        weights_only=False)['optimizer']['loss_scaler']
    assert middle['scale'] == 4096.0  # two steps, each doubling

    resumed = tmp_path / 'resumed'
    resumed.mkdir()
    ckpt = straight / 'iter_2.pth'
    log = train(config, resumed, '--resume', ckpt, '--trust-checkpoint',
                ckpt)
    assert 'resumed epoch: 0, iter: 2' in log
    state, scaler = final(resumed)
    reference, reference_scaler = final(straight)
    assert scaler == reference_scaler and scaler['scale'] == 16384.0
    assert state.keys() == reference.keys()
    assert [k for k in state if not torch.equal(state[k], reference[k])] \
        == []


# -- every (method, host) pair in float16 ------------------------------------


@pytest.mark.parametrize('method, host', PAIRS)
def test_float16_forward_backward(method, host, monkeypatch):
    monkeypatch.setenv(FP16_ON_CPU_ENV, '1')
    # float16 rounding (the outputs' norms may be float32): close to the
    # float32 model, not equal
    error = float16_forward_backward(method, host)
    assert 0 < error < 2e-2, error


class TinySegmentor(nn.Module):
    """A host and a 1x1 conv classifier on its last feature map."""

    def __init__(self, backbone, channels, num_classes=4):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Conv2d(channels, num_classes, 1)

    def loss(self, x, labels):
        logits = self.head(self.backbone(x)[-1])
        logits = F.interpolate(logits, labels.shape[-2:], mode='bilinear')
        return F.cross_entropy(logits, labels)


@pytest.mark.slow
@cpu_only
@pytest.mark.parametrize('method, host', PAIRS)
def test_amp_steps_reduce_the_loss(method, host, monkeypatch):
    monkeypatch.setenv(FP16_ON_CPU_ENV, '1')
    backbone = build_pair(host, float16_method(method), drop_path_rate=0.0)
    x = torch.randn(*HOSTS[host][2])
    with torch.no_grad():
        channels = backbone(x)[-1].shape[1]
    model = TinySegmentor(backbone, channels)
    labels = torch.randint(0, 4, (x.shape[0], *x.shape[-2:]))
    wrapper = amp_wrapper(model, dict(type='AdamW', lr=1e-3))
    losses = []
    for _ in range(4):
        with wrapper.optim_context(model):
            loss = model.loss(x, labels)
        wrapper.update_params(loss)
        losses.append(loss.item())
    assert all(map(math.isfinite, losses)), losses
    assert losses[-1] < losses[0], losses


# -- CoLoRA's precision under mixed precision, as the official code ---------


def official_amp_filter(u, window, scale=0.2):
    """The official ``BilateralModule`` as it runs: under a float16
    autocast; u [B, r, H, W] -> u + scale * F(u)."""
    with torch.autocast(u.device.type, dtype=torch.float16):
        C, pad = u.shape[1], window.shape[-1] // 2
        span = (u.amax(dim=[-2, -1], keepdim=True) -
                u.amin(dim=[-2, -1], keepdim=True)).clamp(min=1e-5)
        gx = math.pi / (2 * span) * u
        sin, cos = gx.sin().clamp_min(0.0), gx.cos().clamp_min(0.0)
        u_pad, sin_pad, cos_pad = (F.pad(t, (pad, ) * 4, mode='reflect')
                                   for t in (u, sin, cos))
        kernel = window.expand(C, 1, -1, -1)
        x_cos = cos * F.conv2d(cos_pad * u_pad, kernel, groups=C)
        x_sin = sin * F.conv2d(sin_pad * u_pad, kernel, groups=C)
        norm = cos * F.conv2d(cos_pad, kernel, groups=C) + \
            sin * F.conv2d(sin_pad, kernel, groups=C)
        out = (x_cos + x_sin) / (norm + 1e-5)
    return u + scale * out


def test_colora_precision_under_autocast():
    """A CoLoRA ConvNeXt block under float16 autocast: frozen convs and the
    conv branch in float16 with the filter under float16 autocast, the
    pointwise layers with their updates (and GELU) in float32, as the
    official block under AMP."""
    model = perturb(
        build_pair('ConvNeXt', METHODS['CoLoRA'], drop_path_rate=0.0))
    block = model.stages[0][1]
    conv = block.depthwise_conv.colora
    pair = block.pointwise_conv1.colora
    fc1, fc2 = block.pointwise_conv1, block.pointwise_conv2
    x = torch.randn(2, 16, 12, 10)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.float16):
        out = model.forward_block(block, x)
        # the official block, written out
        u = official_amp_filter(F.conv2d(x, conv.A), conv.window[None, None])
        dw = block.depthwise_conv
        h = F.conv2d(x, dw.weight, dw.bias, padding=3, groups=16) + F.conv2d(
            u, conv.B, padding=1, groups=conv.rank)
        h = block.norm(h.permute(0, 2, 3, 1), data_format='channel_last')
        with torch.autocast('cpu', enabled=False):
            h = F.linear(h.float(), fc1.weight + pair.delta1(fc2), fc1.bias)
            h = F.linear(F.gelu(h), fc2.weight + pair.delta2(fc1), fc2.bias)
            expected = x + (block.gamma * h).permute(0, 3, 1, 2)
        assert u.dtype == torch.float16
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
