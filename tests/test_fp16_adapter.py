"""``force_fp16``: float16 adapter maths on CUDA (and on the CPU when asked),
a logged no-op elsewhere."""
import copy

import pytest
import torch

import mmparax.peft.parax as parax_module
from mmparax.models import Swin
from mmparax.peft import ParaX
from mmparax.testing import tiny_swin_kwargs
from mmparax.testing.parax_reference import reference_forward_fp16


@pytest.fixture(autouse=True)
def fp16_on_cpu_unset(monkeypatch):
    """The CPU is the no-op device unless a test asks otherwise."""
    monkeypatch.delenv(parax_module.FP16_ON_CPU_ENV, raising=False)


SETTINGS = [
    dict(),
    dict(layer_scale=1e-5, res_scale=None),  # the Swin-B Mask R-CNN recipe
    dict(with_conv=False),
    dict(kernel_sizes=(3, )),
]


def adapter_pair(force_fp16, device='cpu', **kwargs):
    torch.manual_seed(0)
    parax = ParaX(hidden_dim=8, router_hidden=4, force_fp16=force_fp16,
                  **kwargs)
    center = parax.build_centers(16, 2, 0)[0].to(device)
    # non-trivial scales and biases, so that every cast shows
    adapter = parax.build_adapter(16, center).to(device)
    with torch.no_grad():
        for name, param in adapter.named_parameters():
            if name.startswith(('layer_', 'res_', 'cascade', 'norm_gamma')):
                param.add_(0.1 * torch.randn_like(param))
    return adapter, center


def run(adapter, center, x):
    x = x.clone().requires_grad_()
    out = adapter(x, (8, 8), center)
    out.square().mean().backward()
    grads = [p.grad for p in (*adapter.parameters(), *center.parameters())]
    return out.detach(), x.grad, grads


@pytest.mark.parametrize('kwargs', SETTINGS)
def test_cpu_outputs_unchanged(kwargs):
    x = torch.randn(2, 64, 16)
    off = run(*adapter_pair(False, **kwargs), x)
    on = run(*adapter_pair(True, **kwargs), x)
    assert torch.equal(off[0], on[0])
    assert torch.equal(off[1], on[1])
    assert all(torch.equal(a, b) for a, b in zip(off[2], on[2]))


def test_names_and_counts_unchanged():
    shapes = []
    for flag in (False, True):
        host = Swin(
            **tiny_swin_kwargs(),
            peft=dict(type='ParaX', hidden_dim=8, router_hidden=4,
                      force_fp16=flag))
        shapes.append({
            n: (tuple(p.shape), p.requires_grad)
            for n, p in host.named_parameters()
        })
    assert shapes[0] == shapes[1]


def test_cpu_no_op_logged_once_per_model(monkeypatch):
    lines = []
    monkeypatch.setattr(parax_module, 'print_log',
                        lambda msg, **kwargs: lines.append(msg))
    hosts = [
        Swin(**tiny_swin_kwargs(),
             peft=dict(type='ParaX', hidden_dim=8, router_hidden=4,
                       force_fp16=flag)) for flag in (True, False, True)
    ]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for host in hosts:
            host(x)
            host(x)
    assert len(lines) == 2  # one per force_fp16 model, not per call
    assert lines[0] == ('ParaX force_fp16=True has no effect on cpu: '
                        'float16 adapter maths runs only on CUDA; the '
                        'adapters of Swin compute in torch.float32')


def test_force_fp16_must_be_a_bool():
    with pytest.raises(TypeError, match="force_fp16 must be True or False"):
        ParaX(force_fp16='yes')


@pytest.mark.parametrize('kwargs', SETTINGS)
def test_float16_maths(kwargs, monkeypatch):
    """On CUDA, or on the CPU with $MMPARAX_FORCE_FP16_ON_CPU=1 (the same
    float16 ops): the reference's float16 adapter."""
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    monkeypatch.setenv(parax_module.FP16_ON_CPU_ENV, '1')
    adapter, center = adapter_pair(True, device=device, **kwargs)
    x = torch.randn(2, 64, 16, device=device)
    with torch.no_grad():
        out = adapter(x, (8, 8), center)
        expected = reference_forward_fp16(adapter, center, x, (8, 8))
        adapter.force_fp16 = False
        fp32 = adapter(x, (8, 8), center)
        with torch.autocast(device, dtype=torch.float16):
            out_autocast = adapter(x, (8, 8), center)
        adapter.force_fp16 = True
        out_half_in = adapter(x.half(), (8, 8), center)
    assert out.dtype == torch.float32  # cast back to the input's dtype
    assert out_half_in.dtype == torch.float16
    torch.testing.assert_close(out, expected, rtol=2e-3, atol=2e-3)
    # float16 rounding shows against the float32 adapter ...
    assert not torch.equal(out, fp32)
    torch.testing.assert_close(out, fp32, rtol=2e-2, atol=2e-2)
    # ... and the residual maths differs from plain autocast, whose
    # shortcut, scales and final add stay float32
    assert out_autocast.dtype == torch.float32
    assert not torch.equal(out, out_autocast)


@pytest.mark.parametrize('kwargs', SETTINGS)
def test_float16_gradients(kwargs, monkeypatch):
    """Gradients of the float16 path are as close to the exact ones (the
    float64 adapter) as those of the reference's float16 adapter: within
    four times its error, tensor by tensor (some, such as the cascade scales,
    sum many cancelling terms and are far off in both)."""
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    monkeypatch.setenv(parax_module.FP16_ON_CPU_ENV, '1')
    adapter, center = adapter_pair(True, device=device, **kwargs)
    exact = [copy.deepcopy(m).double() for m in (adapter, center)]
    exact[0].force_fp16 = False
    x = torch.randn(2, 64, 16, device=device)

    def grads(adapter, center, x, forward):
        tensors = [x.requires_grad_(), *adapter.parameters(),
                   *center.parameters()]
        out = forward(adapter, center, x)
        return torch.autograd.grad(out.square().mean(), tensors)

    def ours(adapter, center, x):
        return adapter(x, (8, 8), center)

    def reference(adapter, center, x):
        return reference_forward_fp16(adapter, center, x, (8, 8))

    truth = grads(*exact, x.double(), ours)
    names = ['x'] + [n for n, _ in adapter.named_parameters()] + \
        [f'center.{n}' for n, _ in center.named_parameters()]
    for name, g, r, t in zip(names, grads(adapter, center, x, ours),
                             grads(adapter, center, x.clone(), reference),
                             truth):
        assert g.dtype == torch.float32, name
        scale = t.abs().max().item()
        error = (g.double() - t).abs().max().item()
        ref_error = (r.double() - t).abs().max().item()
        assert error <= 4 * ref_error + 1e-2 * scale, (name, error,
                                                      ref_error)
