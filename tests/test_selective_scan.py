"""The plain-PyTorch selective scan against a float64 step-by-step scan."""
import pytest
import torch

from mmparax.ops import selective_scan, selective_scan_reference
from mmparax.ops.selective_scan import _linear_scan_

NAMES = ('u', 'delta', 'A', 'B', 'C', 'D', 'delta_bias')


def inputs(batch=2, groups=3, width=4, states=1, length=37, seed=0,
           dtype=torch.float32):
    """Random scan inputs; a few step sizes above the softplus threshold."""
    g = torch.Generator().manual_seed(seed)
    KE = groups * width

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    delta = randn(batch, KE, length)
    delta[0, 1, :4] += 25.0
    tensors = dict(
        u=randn(batch, KE, length),
        delta=delta,
        A=-torch.rand(KE, states, generator=g, dtype=dtype) * 2 - 0.05,
        B=randn(batch, groups, states, length),
        C=randn(batch, groups, states, length),
        D=randn(KE),
        delta_bias=randn(KE) * 0.5)
    return {k: v.requires_grad_() for k, v in tensors.items()}


def run(fn, tensors, grad_out, **kwargs):
    y = fn(**tensors, **kwargs)
    grads = torch.autograd.grad(y, list(tensors.values()), grad_out)
    return y, dict(zip(tensors, grads))


def assert_matches_reference(tensors, **kwargs):
    ref_tensors = {
        k: v.detach().double().requires_grad_()
        for k, v in tensors.items()
    }
    softplus = kwargs.pop('delta_softplus', True)
    grad_out = torch.randn(tensors['u'].shape, dtype=torch.float64)
    y, grads = run(selective_scan, tensors, grad_out.float(),
                   delta_softplus=softplus, **kwargs)
    y_ref, grads_ref = run(selective_scan_reference, ref_tensors, grad_out,
                           delta_softplus=softplus)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-5, atol=1e-5)
    for name in tensors:
        g, g_ref = grads[name], grads_ref[name]
        assert g.shape == tensors[name].shape, name
        scale = g_ref.abs().max().item()
        err = (g.double() - g_ref).abs().max().item()
        assert err <= 1e-5 * max(scale, 1.0), (name, err, scale)


@pytest.mark.parametrize('states, chunk', [(1, None), (1, 5), (1, 3),
                                           (2, 4), (2, 64)])
def test_forward_and_gradients(states, chunk):
    """Every input, N = 1 (broadcast) and N = 2, chunks that leave a tail."""
    assert_matches_reference(
        inputs(states=states), chunk_size=chunk)


def test_without_softplus_d_and_bias():
    tensors = inputs(length=20)
    tensors['delta'] = (tensors['delta'].detach().abs() * 0.1
                        ).requires_grad_()
    del tensors['D'], tensors['delta_bias']
    assert_matches_reference(tensors, delta_softplus=False, chunk_size=4)


def test_chunked_scan_equals_sequential():
    torch.manual_seed(0)
    a = torch.rand(2, 101, 6)
    x = torch.randn(2, 101, 6)
    for reverse in (False, True):
        seq = _linear_scan_(a.clone(), x.clone(), reverse, chunk=101)
        for chunk in (2, 7, 10, None):
            chunked = _linear_scan_(a.clone(), x.clone(), reverse, chunk)
            torch.testing.assert_close(chunked, seq, rtol=1e-5, atol=1e-6)
    # the definition, forward and reverse
    h = torch.zeros(2, 6)
    for t in range(101):
        h = a[:, t] * h + x[:, t]
    fwd = _linear_scan_(a.clone(), x.clone(), chunk=10)
    torch.testing.assert_close(fwd[:, -1], h, rtol=1e-5, atol=1e-5)
    h = torch.zeros(2, 6)
    for t in range(100, -1, -1):
        h = a[:, t] * h + x[:, t]
    rev = _linear_scan_(a.clone(), x.clone(), reverse=True, chunk=10)
    torch.testing.assert_close(rev[:, 0], h, rtol=1e-5, atol=1e-5)


def test_long_sequence_is_finite_and_exact():
    """Strong and weak decays over 4096 steps: no overflow, fp32 accurate."""
    tensors = inputs(batch=1, groups=2, width=2, length=4096, seed=1)
    with torch.no_grad():
        tensors['A'][0] = -50.0  # exp(delta*A) underflows to 0
        tensors['A'][1] = -1e-4  # almost no decay
        y = selective_scan(**tensors)
        y_ref = selective_scan_reference(
            **{k: v.double() for k, v in tensors.items()})
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-4, atol=1e-4)


def test_half_precision_inputs():
    """fp16 / bf16 in: fp32 out, gradients in the inputs' dtypes."""
    tensors = inputs(length=16)
    low = {
        k: v.detach().to(torch.bfloat16).requires_grad_()
        for k, v in tensors.items()
    }
    y = selective_scan(**low)
    assert y.dtype == torch.float32
    y.sum().backward()
    for name, t in low.items():
        assert t.grad.dtype == torch.bfloat16, name
    exact = selective_scan(**{k: v.detach().float() for k, v in low.items()})
    torch.testing.assert_close(y, exact)


def test_shape_errors():
    tensors = {k: v.detach() for k, v in inputs().items()}
    with pytest.raises(ValueError, match='B must be'):
        selective_scan(**dict(tensors, B=tensors['B'][..., :-1]))
    with pytest.raises(ValueError, match='A must be'):
        selective_scan(**dict(tensors, A=tensors['A'][:-1]))
    with pytest.raises(ValueError, match='D must be'):
        selective_scan(**dict(tensors, D=tensors['D'][:-1]))


def _softplus_formula(x):
    """softplus with threshold 20 in float64: log1p(exp(x)), x above 20."""
    x = x.double()
    return torch.where(x > 20, x, torch.log1p(torch.exp(x.clamp(max=20))))


def test_softplus_threshold_of_step_sizes():
    """One step, N = 1, B = C = u = 1 and D = -(dt + bias): the output is
    softplus(dt + bias) - (dt + bias), i.e. log1p(exp(-x)) while x <= 20
    and 0 above, resolved to within an fp32 ulp of x."""
    # raw steps dt and biases exact in fp32, their sums x too; 10.5 + 2 and
    # 25 - 12 reach 12..20 only with the bias, 18.5 + 3 passes 20 only with
    # it, 40 - 27.5 falls below 20 only with it
    dt = torch.tensor([12.25, 12.5, 12.75, 13.0, 13.5, 14.0, 15.0, 17.5,
                       19.75, 20.0, 20.5, 24.0, 10.5, 18.5, 25.0, 40.0])
    bias = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
                         0.0, 0.0, 0.0, 0.0, 2.0, 3.0, -12.0, -27.5])
    x = dt + bias
    assert torch.equal(x.double(), dt.double() + bias.double())
    KE = dt.numel()
    ones = torch.ones(1, 1, 1, 1)
    y = selective_scan(
        torch.ones(1, KE, 1), dt.view(1, KE, 1), -torch.ones(KE, 1), ones,
        ones, D=-x, delta_bias=bias, delta_softplus=True).reshape(KE)
    expected = _softplus_formula(x) - x.double()
    # what fp32 can resolve: the spacing of fp32 numbers at x
    ulp = (torch.nextafter(x, torch.tensor(float('inf'))) - x).double()
    err = (y.double() - expected).abs()
    wrong = [(float(v), float(e), float(r))
             for v, e, r, bad in zip(x, expected, y, err > ulp) if bad]
    assert not wrong, f'(x, log1p(exp(-x)), scan) off by > 1 ulp: {wrong}'
    # above the threshold the step is the raw value exactly
    above = x > 20
    assert int(above.sum()) == 3
    assert torch.equal(y[above], torch.zeros(3))
    # and below it differs from the raw value where fp32 can tell
    visible = expected > 2 * ulp
    assert int(visible.sum()) >= 5
    assert (y[visible] > 0).all()

    # d delta / d raw: sigmoid(x) below the threshold, exactly 1 above
    dt_req = dt.view(1, KE, 1).clone().requires_grad_()
    bias_req = bias.clone().requires_grad_()
    out = selective_scan(
        torch.ones(1, KE, 1), dt_req, -torch.ones(KE, 1), ones, ones,
        delta_bias=bias_req, delta_softplus=True)
    out.sum().backward()
    slope = torch.where(x.double() > 20, torch.ones(KE, dtype=torch.float64),
                        torch.sigmoid(x.double()))
    torch.testing.assert_close(dt_req.grad.view(KE).double(), slope,
                               rtol=0, atol=1e-7)
    torch.testing.assert_close(bias_req.grad.double(), slope,
                               rtol=0, atol=1e-7)
