"""SNELL: the published update in float64, its sparsification, placement
and counts per host, validation and merging."""
import math

import pytest
import torch
import torch.nn as nn

from mmparax.models import ConvNeXt, Swin, VMamba
from mmparax.peft import snell
from mmparax.peft.snell import (
    SNELLUpdate,
    SparseKernelUpdate,
    dropout_noise,
    quantile,
)
from mmparax.testing import tiny_convnext_kwargs, tiny_swin_kwargs

VMAMBA = dict(arch=dict(dims=16, depths=(2, 2, 2, 2), ssm_ratio=2.0))


def literal_update(A, B, x, sparsity, p=2., s=0.1):
    """The paper's / official code's update of one slice, written out:
    A [in, q], B [out, q], x [N, in] -> [N, out]."""
    n_in, q = A.shape
    n_out = B.shape[0]
    h = (q + 1) // 2
    dW = torch.zeros(n_out, n_in, dtype=A.dtype)
    for i in range(n_out):
        for j in range(n_in):
            k1 = ((B[i, :h] - A[j, :h]).abs()**p).sum()**(1 / p)
            k2 = ((B[i, h:] - A[j, h:]).abs()**p).sum()**(1 / p)
            dW[i, j] = s * k1 - s * k2
    if sparsity > 0:
        values = dW.detach().abs().flatten().sort().values
        pos = sparsity * (values.numel() - 1)
        lo, hi = math.floor(pos), math.ceil(pos)
        tau = values[lo] + (values[hi] - values[lo]) * (pos - lo)
        dW = dW * dW.detach().abs() * (dW.detach().abs() > tau)
    return x @ dW.T


@pytest.mark.parametrize('sparsity, kernel, rank', [(0.3, 2., 4), (0., 2., 4),
                                                    (0.7, 1., 5)])
def test_update_matches_the_formula(sparsity, kernel, rank):
    torch.manual_seed(0)
    layer = nn.Linear(6, 5).double()
    update = SNELLUpdate(6, 5, rank, sparsity=sparsity, p=kernel).double()
    update.eval()
    layer.register_forward_hook(update.hook)
    x = torch.randn(7, 6, dtype=torch.float64)
    expected = x @ layer.weight.T + layer.bias + literal_update(
        update.A[0], update.B[0], x, sparsity, kernel)
    torch.testing.assert_close(layer(x), expected)


def test_fused_slices_and_gradients_match_the_formula():
    """q and v thirds of a fused layer; the kept entries' magnitude carries
    no gradient (sg), with and without recomputation in backward."""
    torch.manual_seed(0)
    x = torch.randn(4, 6, dtype=torch.float64)
    grads = []
    for with_cp in (True, False):
        torch.manual_seed(1)
        layer = nn.Linear(6, 9).double().requires_grad_(False)
        update = SNELLUpdate(6, 3, 4, starts=(6, 0), sparsity=0.4,
                             with_cp=with_cp).double()
        layer.register_forward_hook(update.hook)
        out = layer(x)
        A = update.A.detach().clone().requires_grad_()
        B = update.B.detach().clone().requires_grad_()
        expected = x @ layer.weight.T + layer.bias
        expected = expected + torch.cat([
            literal_update(A[0], B[0], x, 0.4),
            torch.zeros(4, 3, dtype=x.dtype),
            literal_update(A[1], B[1], x, 0.4)
        ], 1)
        torch.testing.assert_close(out, expected)
        weights = torch.randn_like(out)
        (out * weights).sum().backward()
        (expected * weights).sum().backward()
        torch.testing.assert_close(update.A.grad, A.grad)
        torch.testing.assert_close(update.B.grad, B.grad)
        grads.append((update.A.grad, update.B.grad))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize('p', [2., 1.])
@pytest.mark.parametrize('rate', [0., 0.5])
def test_sparse_kernel_update_gradcheck(p, rate):
    """Without sparsification ΔW is smooth in A and B: the recomputing
    backward pass equals finite differences, dropout factors included."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    A = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    B = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda *t: SparseKernelUpdate.apply(*t, 2, p, 0.1, 0., rate, 7),
        (x, A, B))


@pytest.mark.parametrize('p', [2., 1.])
def test_sparse_kernel_update_with_dropout_matches_the_formula(p):
    """Sparsified, with dropout: outputs and gradients (x, A, B) equal the
    literal update of the dropped input, the factors drawn from the seed."""
    torch.manual_seed(0)
    x = torch.randn(3, 4, 6, dtype=torch.float64, requires_grad=True)
    A = torch.randn(2, 6, 5, dtype=torch.float64, requires_grad=True)
    B = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    y = SparseKernelUpdate.apply(x, A, B, 3, p, 0.1, 0.4, 0.3, 11)
    noise = dropout_noise(x.shape, x.dtype, x.device, 0.3, 11)
    assert ((noise == 0) | (noise == 1 / 0.7)).all() and (noise == 0).any()
    x2, A2, B2 = (t.detach().clone().requires_grad_() for t in (x, A, B))
    dropped = (x2 * noise).flatten(0, 1)
    expected = torch.cat([
        literal_update(A2[i], B2[i], dropped, 0.4, p) for i in range(2)
    ], -1).view(3, 4, 6)
    torch.testing.assert_close(y, expected)
    weights = torch.randn_like(y)
    (y * weights).sum().backward()
    (expected * weights).sum().backward()
    for got, want in ((x, x2), (A, A2), (B, B2)):
        torch.testing.assert_close(got.grad, want.grad)


def test_update_saves_only_its_dropped_input_and_thresholds():
    """With dropout, the training forward keeps one tensor of the input's
    size (no dropout mask, no dense [in, out] matrix) besides A and B."""
    torch.manual_seed(0)
    update = SNELLUpdate(64, 32, 6, starts=(0, 32, 64), sparsity=0.5,
                         dropout=0.1)
    x = torch.randn(4, 50, 64, requires_grad=True)
    params = {t.untyped_storage().data_ptr() for t in update.parameters()}
    saved = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in params:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = update.delta(x, 96)
    assert sum(s.nbytes() for s in saved.values()) == x.nbytes + 3 * 4
    y.sum().backward()
    assert update.A.grad.abs().sum() > 0 and x.grad.abs().sum() > 0


def test_update_under_autocast_saves_the_low_precision_input():
    torch.manual_seed(0)
    update = SNELLUpdate(16, 8, 4, sparsity=0.5)
    x = torch.randn(6, 16)
    results = []
    for with_cp in (True, False):
        update.with_cp = with_cp
        update.zero_grad()
        saved = []
        with torch.autocast('cpu', torch.bfloat16), \
                torch.autograd.graph.saved_tensors_hooks(
                    lambda t: saved.append(t) or t, lambda t: t):
            y = update.project(x)
        y.float().square().sum().backward()
        results.append((y.float(), update.A.grad.clone()))
        if with_cp:
            assert y.dtype == torch.bfloat16
            assert [t.dtype for t in saved if t.shape == x.shape] == \
                [torch.bfloat16]
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=2e-2, atol=1e-4)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('n', [1, 2, 7, 1000, 4097])
def test_quantile_by_kthvalue_equals_torch_quantile(n, dtype, monkeypatch):
    torch.manual_seed(n)
    x = torch.rand(n, dtype=dtype)
    monkeypatch.setattr(snell, 'QUANTILE_LIMIT', 0)  # the kthvalue path
    for q in (0., 0.1, 0.3, 0.5, 0.77, 0.9, 0.995):
        assert torch.equal(quantile(x, q), torch.quantile(x, q))


def test_sparsification_keeps_the_largest_magnitudes_per_slice():
    torch.manual_seed(0)
    update = SNELLUpdate(16, 8, 6, starts=(0, 8, 16), sparsity=0.6)
    dense, sparse = update.kernel_matrix(), update.merged_weight()
    n = 16 * 8
    for d, s in zip(dense, sparse):
        zero = s == 0
        # the entries at or below the 0.6-quantile of |ΔW| compete out
        assert int(zero.sum()) == math.floor(0.6 * (n - 1)) + 1
        assert d[zero].abs().max() < d[~zero].abs().min()
        torch.testing.assert_close(s[~zero], (d * d.abs())[~zero])
    # no state and no schedule: the mask follows the current parameters
    again = update.merged_weight()
    assert torch.equal(again, sparse)
    with torch.no_grad():
        update.A.mul_(-1.5).add_(0.01)
    changed = update.merged_weight()
    assert not torch.equal(changed != 0, sparse != 0)
    fresh = SNELLUpdate(16, 8, 6, starts=(0, 8, 16), sparsity=0.6)
    fresh.load_state_dict(update.state_dict())
    assert torch.equal(fresh.merged_weight(), changed)
    # sparsity 0: the plain kernel update (the official KLoRA path)
    update.sparsity = 0.
    assert torch.equal(update.merged_weight(), update.kernel_matrix())


def test_initialisation_and_odd_rank_split():
    torch.manual_seed(0)
    update = SNELLUpdate(64, 32, 7)
    assert update.split == 4
    for factor, n in ((update.A, 64), (update.B, 32)):
        for cols, width in ((slice(0, 4), 4), (slice(4, 7), 3)):
            bound = 1 / math.sqrt(n * width)
            assert factor[..., cols].abs().max() <= bound
            assert factor[..., cols].abs().max() > 0.8 * bound
    assert update.kernel_matrix().abs().sum() > 0  # not zero at the start


def test_drop_path_is_per_sample_and_per_slice():
    torch.manual_seed(0)
    update = SNELLUpdate(8, 4, 4, starts=(0, 4, 8), sparsity=0.5,
                         drop_path=0.5)
    x = torch.randn(256, 3, 8)
    update.eval()
    full = update.delta(x, 12).view(256, 3, 3, 4)
    update.train()
    dropped = update.delta(x, 12).view(256, 3, 3, 4)
    kept = dropped.abs().sum((1, 3)) > 0  # [sample, slice]
    assert 0.35 < kept.float().mean() < 0.65
    assert (kept[:, 0] != kept[:, 1]).any()  # independent slices
    torch.testing.assert_close(dropped, full * 2 * kept[:, None, :, None])


def _count(model):
    return sum(p.numel() for n, p in model.named_parameters()
               if '.snell' in n)


def test_swin_placement_and_count():
    depths = (2, 2, 3, 2)
    model = Swin(peft=dict(type='SNELL', rank=6, dropout=0.1),
                 **tiny_swin_kwargs(depths=depths))
    block = model.stages[1].blocks[0]
    qkv = block.attn.w_msa.qkv
    assert set(qkv._modules) == {'snell_qkv'}
    assert qkv.snell_qkv.starts == (0, 32, 64)
    assert isinstance(qkv.snell_qkv.dropout, nn.Dropout)
    proj = block.attn.w_msa.proj
    assert isinstance(proj.snell.dropout, nn.Identity)  # as the official
    assert isinstance(block.ffn.layers[0][0].snell.dropout, nn.Dropout)
    assert isinstance(block.ffn.layers[1].snell.dropout, nn.Dropout)
    widths = sum(d * 16 * 2**i for i, d in enumerate(depths))
    assert _count(model) == 18 * 6 * widths  # 18 q C per block


def test_no_input_dropout_on_the_output_projection_by_pattern():
    """A pattern reaching the attention's output projection places dropout
    as the aliases do: none on ``proj``, the rate on the other layers."""
    model = Swin(
        peft=dict(type='SNELL', rank=6, dropout=0.1,
                  targets=[r're:.*\.w_msa\.(qkv|proj)']),
        **tiny_swin_kwargs(depths=(2, 2, 3, 2)))
    attn = model.stages[1].blocks[0].attn.w_msa
    assert isinstance(attn.qkv.snell.dropout, nn.Dropout)
    assert isinstance(attn.proj.snell.dropout, nn.Identity)


def test_convnext_placement_and_count():
    model = ConvNeXt(peft=dict(type='SNELL', rank=5), **tiny_convnext_kwargs())
    block = model.stages[2][1]
    assert hasattr(block.pointwise_conv1, 'snell')
    assert hasattr(block.pointwise_conv2, 'snell')
    assert not block.depthwise_conv._modules
    widths = sum(2 * 16 * 2**i for i in range(4))
    assert _count(model) == 10 * 5 * widths  # 10 q C per block


def test_vmamba_placement_and_count():
    model = VMamba(peft=dict(type='SNELL', rank=4, dropout=0.1), **VMAMBA)
    block = model.layers[1].blocks[0]
    for layer in (block.op.in_proj, block.op.out_proj, block.mlp.fc1,
                  block.mlp.fc2):
        assert isinstance(layer.snell, SNELLUpdate)
    assert isinstance(block.op.out_proj.snell.dropout, nn.Identity)
    assert isinstance(block.op.in_proj.snell.dropout, nn.Dropout)
    assert not block.op.conv2d._modules
    widths = sum(2 * 16 * 2**i for i in range(4))
    assert _count(model) == 16 * 4 * widths  # (3 + 3 + 5 + 5) q C


@pytest.mark.parametrize('host', ['Swin', 'ConvNeXt', 'VMamba'])
def test_merge_gives_the_same_outputs(host):
    torch.manual_seed(0)
    peft = dict(type='SNELL', rank=4, sparsity=0.3)
    if host == 'Swin':
        model = Swin(peft=peft, **tiny_swin_kwargs())
        x = torch.randn(2, 3, 64, 64)
    elif host == 'ConvNeXt':
        model = ConvNeXt(peft=peft, **tiny_convnext_kwargs())
        x = torch.randn(2, 3, 64, 48)
    else:
        model = VMamba(peft=peft, **VMAMBA)
        x = torch.randn(2, 3, 64, 56)
    model.eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if '.snell' in n:
                p.mul_(20)  # a visible update
        before = model(x)
        model.peft.merge(model)
        after = model(x)
    for a, b in zip(after, before):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert not any(layer._forward_hooks for layer in model.modules()
                   if any(isinstance(c, SNELLUpdate)
                          for c in layer.children()))


def test_targets():
    model = Swin(peft=dict(type='SNELL', rank=4, targets=['qkv:qv', 'fc2']),
                 **tiny_swin_kwargs())
    block = model.stages[0].blocks[1]
    assert block.attn.w_msa.qkv.snell_qv.starts == (0, 32)
    assert not block.attn.w_msa.proj._modules
    assert not block.ffn.layers[0][0]._modules
    assert hasattr(block.ffn.layers[1], 'snell')


@pytest.mark.parametrize('peft, error, match', [
    (dict(rank=1), ValueError, 'SNELL: rank must be an integer of 2 or more'),
    (dict(rank=8.0), ValueError, 'SNELL: rank must be an integer'),
    (dict(sparsity=1.0), ValueError,
     r'SNELL: sparsity must be a number in \[0, 1\)'),
    (dict(sparsity=-0.1), ValueError, 'SNELL: sparsity'),
    (dict(kernel='rbf'), ValueError, "SNELL: kernel must be one of.*'rbf'"),
    (dict(scale=0), ValueError, 'SNELL: scale must be a positive number'),
    (dict(dropout=1), ValueError,
     r'SNELL: dropout must be a number in \[0, 1\)'),
    (dict(drop_path=-1), ValueError, 'SNELL: drop_path'),
    (dict(targets='fc1'), TypeError, 'SNELL: targets must be a list'),
    (dict(targets=['qkv']), ValueError, "SNELL targets layers 'qkv'.*"
     'ConvNeXt'),
])
def test_bad_arguments_fail_at_build(peft, error, match):
    with pytest.raises(error, match=match):
        ConvNeXt(peft=dict(type='SNELL', **peft), **tiny_convnext_kwargs())


@pytest.mark.parametrize('target', ['qkv:qx', 'qkv:qq'])
def test_bad_fused_parts(target):
    with pytest.raises(ValueError, match='SNELL target.*thirds'):
        Swin(peft=dict(type='SNELL', targets=[target]), **tiny_swin_kwargs())
