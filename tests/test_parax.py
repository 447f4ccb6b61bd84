import pytest
import torch

from mmparax.peft import ExpertCenter, ParaX, ParaXAdapter
from mmparax.testing.parax_reference import reference_forward

HW = (5, 6)


def build(dim=12, depth=3, **kwargs):
    parax = ParaX(hidden_dim=kwargs.pop('hidden_dim', 8), router_hidden=4,
                  **kwargs)
    center = parax.build_centers(dim, depth, stage=0)[0]
    adapter = parax.build_adapter(dim, center)
    return adapter.double(), center.double()


def perturb(*modules):
    """Move every scale away from its init so no term hides behind 1 or 0."""
    torch.manual_seed(3)
    with torch.no_grad():
        for m in modules:
            for p in m.parameters():
                p.add_(torch.randn_like(p) * 0.1)


VARIANTS = {
    'default': {},
    'conv_off': dict(with_conv=False),
    'static_conv_only': dict(kernel_sizes=()),
    'single_kernel': dict(kernel_sizes=(5, )),
    'no_sa': dict(scale_attention=False),
    'k579': dict(kernel_sizes=(5, 7, 9)),
    'parallel': dict(layout='parallel'),
    'sequential': dict(layout='sequential'),
    'sigmoid': dict(router_act='sigmoid'),
    'relu_top2': dict(router_act='relu', top_k=2),
    'top1': dict(top_k=1),
    'no_scales': dict(layer_scale=None, res_scale=None),
    'ls_1e-5': dict(layer_scale=1e-5, res_scale=None),
    'rs_only': dict(layer_scale=None, res_scale=0.5),
}


@pytest.mark.parametrize('name', list(VARIANTS))
def test_matches_literal_reference(name):
    adapter, center = build(**VARIANTS[name])
    perturb(adapter, center)
    x = torch.randn(3, HW[0] * HW[1], 12, dtype=torch.float64)
    out = adapter(x, HW, center)
    ref = reference_forward(adapter, center, x, HW)
    assert out.shape == x.shape
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


def _grads(loss, tensors):
    grads = torch.autograd.grad(loss, tensors, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g
            for t, g in zip(tensors, grads)]


@pytest.mark.parametrize('name', list(VARIANTS))
def test_gradients_match_literal_reference(name):
    adapter, center = build(**VARIANTS[name])
    perturb(adapter, center)
    x = torch.randn(3, HW[0] * HW[1], 12, dtype=torch.float64,
                    requires_grad=True)
    names = ['x'] + [n for n, _ in adapter.named_parameters()] + \
        [f'center.{n}' for n, _ in center.named_parameters()]
    tensors = [x, *adapter.parameters(), *center.parameters()]
    ours = _grads(adapter(x, HW, center).square().sum(), tensors)
    ref = _grads(
        reference_forward(adapter, center, x, HW).square().sum(), tensors)
    for name, a, b in zip(names, ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10, msg=name)


class SavedBytes:
    """Bytes of the distinct storages autograd saves for backward."""

    def __init__(self):
        self.storages = {}

    def pack(self, t):
        self.storages[t.untyped_storage().data_ptr()] = t.nbytes
        return t

    def __enter__(self):
        self._hooks = torch.autograd.graph.saved_tensors_hooks(
            self.pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)

    @property
    def total(self):
        return sum(self.storages.values())


@pytest.mark.parametrize('fp16', [False, True])
def test_saves_at_most_half_of_the_reference(fp16, monkeypatch):
    """The default path and force_fp16's float16 path keep at most half
    of the bytes their literal references keep for backward (the experts
    and the input included); the float16 path whatever autocast surrounds
    it."""
    import mmparax.peft.parax as parax_module
    from mmparax.testing.parax_reference import reference_forward_fp16
    monkeypatch.setenv(parax_module.FP16_ON_CPU_ENV, '1')
    parax = ParaX(hidden_dim=32, router_hidden=4, force_fp16=fp16)
    center = parax.build_centers(32, 2, stage=0)[0]
    adapter = parax.build_adapter(32, center)
    x = torch.randn(2, 1024, 32)
    reference = reference_forward_fp16 if fp16 else reference_forward
    with SavedBytes() as ref:
        reference(adapter, center, x, (32, 32))
    with SavedBytes() as ours:
        adapter(x, (32, 32), center)
    assert ours.total <= 0.5 * ref.total
    if fp16:
        with SavedBytes() as autocast, torch.autocast(
                'cpu', dtype=torch.bfloat16):
            out = adapter(x, (32, 32), center)
        assert autocast.total == ours.total
        assert out.dtype == torch.float32


def test_with_cp_same_outputs_and_gradients_less_memory():
    adapter, center = build()
    perturb(adapter, center)
    cp_adapter, _ = build(with_cp=True)
    cp_adapter.load_state_dict(adapter.state_dict())
    assert cp_adapter.with_cp and 'with_cp=True' in repr(cp_adapter)
    x = torch.randn(3, HW[0] * HW[1], 12, dtype=torch.float64,
                    requires_grad=True)
    results = []
    for module in (adapter, cp_adapter):
        center.zero_grad()
        tensors = [x, *module.parameters(), *center.parameters()]
        with SavedBytes() as saved:
            out = module(x, HW, center)
        results.append((out, _grads(out.square().sum(), tensors),
                        saved.total))
    (out, grads, plain), (cp_out, cp_grads, checkpointed) = results
    torch.testing.assert_close(cp_out, out, rtol=0, atol=0)
    for a, b in zip(cp_grads, grads):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # only the input (and nothing of the adapter's inner activations)
    assert checkpointed <= x.nbytes < plain / 5


def test_with_cp_trains_inside_a_frozen_host():
    from mmparax.models import Swin
    from mmparax.testing import tiny_swin_kwargs
    torch.manual_seed(0)
    model = Swin(peft=dict(type='ParaX', hidden_dim=8, with_cp=True),
                 **tiny_swin_kwargs(drop_path_rate=0.0))
    model.train()
    x = torch.randn(2, 3, 64, 64)
    # a random readout: the mean of a LayerNorm output has no gradient
    sum((o * torch.randn_like(o)).sum() for o in model(x)).backward()
    trainable = [(n, p) for n, p in model.named_parameters()
                 if p.requires_grad]
    assert trainable
    for name, p in trainable:
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    with torch.no_grad():
        model.eval()
        assert all(o.isfinite().all() for o in model(x))


def test_gradients_reach_every_trainable_tensor():
    adapter, center = build()
    x = torch.randn(2, 30, 12, dtype=torch.float64, requires_grad=True)
    adapter(x, HW, center).square().sum().backward()
    for name, p in [*adapter.named_parameters(), *center.named_parameters()]:
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


def test_samples_are_independent():
    adapter, center = build()
    perturb(adapter, center)
    x = torch.randn(4, 30, 12, dtype=torch.float64)
    out = adapter(x, HW, center)
    x2 = x.clone()
    x2[1] = torch.randn(30, 12, dtype=torch.float64) * 3
    out2 = adapter(x2, HW, center)
    keep = [0, 2, 3]
    torch.testing.assert_close(out[keep], out2[keep], rtol=0, atol=1e-12)
    assert not torch.allclose(out[1], out2[1])


def test_routing_is_per_sample():
    adapter, center = build()
    perturb(adapter, center)
    x = torch.randn(2, 30, 12, dtype=torch.float64)
    gates = adapter.route(x.mean(1))
    assert gates.shape == (2, 5, 3)
    torch.testing.assert_close(gates.sum(-1), torch.ones(2, 5).double())
    assert not torch.allclose(gates[0], gates[1])


def test_dense_routing_equals_top_k_all():
    dense, center = build()
    sparse, _ = build(top_k=3)
    sparse.load_state_dict(dense.state_dict())
    perturb(dense, center)
    sparse.load_state_dict(dense.state_dict())
    x = torch.randn(2, 30, 12, dtype=torch.float64)
    torch.testing.assert_close(
        dense(x, HW, center), sparse(x, HW, center), rtol=0, atol=0)


def test_top_k_keeps_k_experts():
    adapter, center = build(top_k=2)
    x = torch.randn(3, 30, 12, dtype=torch.float64)
    gates = adapter.route(x.mean(1))
    assert ((gates > 0).sum(-1) == 2).all()


def test_parameter_count_formula():
    # 27C + h(C+1) + G M (h+1) + hidden_dim^2 + 4 hidden_dim + 7 per adapter,
    # M (2 hidden_dim C + 83 hidden_dim) per center
    C, h, M, R = 64, 16, 4, 32
    parax = ParaX(hidden_dim=R, router_hidden=h)
    center = parax.build_centers(C, M, 0)[0]
    adapter = parax.build_adapter(C, center)
    n = sum(p.numel() for p in adapter.parameters())
    assert n == 27 * C + h * (C + 1) + 5 * M * (h + 1) + R * R + 4 * R + 7
    assert sum(p.numel() for p in center.parameters()) == \
        M * (2 * R * C + 83 * R)


def test_center_shapes_and_inits():
    torch.manual_seed(0)
    c = ExpertCenter(64, 32, 6, (3, 5), init='trunc_normal')
    assert c.down.shape == (6, 32, 64)
    assert c.up.shape == (6, 64, 32)
    assert c.kernels['5x5'].shape == (6, 32, 1, 5, 5)
    assert abs(c.down.std().item() - 0.02) < 0.002
    ku = ExpertCenter(64, 32, 6, (3, ), init='kaiming_uniform')
    bound = (6 / ((1 + 5) * 64))**0.5  # a = sqrt(5), fan_in = 64
    assert ku.down.abs().max() <= bound
    assert ku.down.abs().max() > 0.9 * bound
    kn = ExpertCenter(64, 32, 6, (3, ), init='kaiming_normal')
    assert abs(kn.down.std().item() - (2 / 64)**0.5) < 0.01


def test_adapter_init_is_not_identity():
    adapter, center = build()
    x = torch.randn(2, 30, 12, dtype=torch.float64)
    assert not torch.allclose(adapter(x, HW, center), x)
    torch.testing.assert_close(adapter.norm_gamma,
                               torch.full_like(adapter.norm_gamma, 1e-5))
    assert torch.all(adapter.layer_scale == 1)
    assert torch.all(adapter.res_bias == 0)
    assert torch.all(adapter.proj.bias == 0)


@pytest.mark.parametrize('kwargs, match', [
    (dict(hidden_dim=0), 'hidden_dim'),
    (dict(hidden_dim=-4), 'hidden_dim'),
    (dict(kernel_sizes=(3, 4)), 'odd'),
    (dict(kernel_sizes=357), 'list or tuple'),
    (dict(kernel_sizes=(3, 3)), 'duplicates'),
    (dict(layout='diagonal'), 'layout'),
    (dict(router_act='tanh'), 'router_act'),
    (dict(expert_init='xavier'), 'expert_init'),
    (dict(router_hidden=0), 'router_hidden'),
    (dict(top_k=0), 'top_k'),
    (dict(expert_ratio=0), 'expert_ratio'),
    (dict(with_cp=1), 'with_cp'),
])
def test_invalid_settings_raise(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        ParaX(**kwargs)


def test_top_k_larger_than_experts_raises():
    with pytest.raises(ValueError, match='top_k=4 exceeds the 3 experts'):
        ParaX(top_k=4).build_centers(16, 3, stage=2)
    with pytest.raises(ValueError, match='top_k'):
        ParaXAdapter(16, num_experts=2, top_k=3)
    with pytest.raises(ValueError, match='num_experts'):
        ParaX(num_experts=0).build_centers(16, 3, stage=0)


def test_top_k_per_stage():
    """Table 13's K applies to the 18-expert stage of Swin-B; the others
    keep every expert."""
    from mmparax.models import Swin
    from mmparax.testing import tiny_swin_kwargs
    model = Swin(peft=dict(type='ParaX', hidden_dim=8, router_hidden=4,
                           top_k=(None, None, 3, None)),
                 **tiny_swin_kwargs(depths=(2, 2, 6, 2)))
    top_k = [{b.adapter1.top_k, b.adapter2.top_k} for _, blocks in
             model.peft_stages() for b in blocks]
    assert top_k == [{None}] * 4 + [{3}] * 6 + [{None}] * 2
    with pytest.raises(ValueError, match='top_k'):
        ParaX(top_k=(None, 0))
    with pytest.raises(ValueError, match='no value for stage 2'):
        ParaX(top_k=(None, 3)).build_centers(16, 3, stage=2)


def test_centers_grouped_by_blocks():
    parax = ParaX(blocks_per_center=(None, None, 6, None))
    centers = parax.build_centers(32, 18, stage=2)
    assert len(centers) == 3
    assert [c.num_experts for c in centers] == [6, 6, 6]
    assert [parax.center_index(j, 18, 2) for j in (0, 5, 6, 17)] == \
        [0, 0, 1, 2]
    assert len(parax.build_centers(32, 2, stage=0)) == 1
    # a single value applies to every stage, capped at the stage depth
    parax = ParaX(blocks_per_center=9)
    assert [c.num_experts for c in parax.build_centers(32, 18, 2)] == [9, 9]
    assert [c.num_experts for c in parax.build_centers(32, 2, 0)] == [2]


@pytest.mark.parametrize('ratio, hidden_dim, experts',
                         [(4, 40, 72), (2, 72, 36), (1, 128, 18),
                          (0.5, 192, 9)])
def test_expert_ratio(ratio, hidden_dim, experts):
    parax = ParaX(hidden_dim=hidden_dim, expert_ratio=ratio)
    center = parax.build_centers(64, 18, stage=2)[0]
    assert center.num_experts == experts
    assert parax.build_adapter(64, center).router[2].out_features == \
        5 * experts


@pytest.mark.parametrize('router_act', ['softmax', 'sigmoid', 'relu'])
@pytest.mark.parametrize('top_k', [2, 3])
def test_sparse_routing_matches_formula(router_act, top_k):
    """Gates with top_k < M against a formula written out with numpy:
    softmax over the k largest logits only (zeros elsewhere), or
    sigmoid / relu of the logits times the top-k mask."""
    import numpy as np
    M = 6
    adapter = ParaXAdapter(
        12, hidden_dim=8, num_experts=M, router_hidden=8,
        router_act=router_act, top_k=top_k).double()
    torch.manual_seed(11)
    with torch.no_grad():
        for p in adapter.router.parameters():
            p.copy_(torch.randn_like(p))  # logits of order 1, both signs
    seen = []
    handle = adapter.router.register_forward_hook(
        lambda module, args, out: seen.append(out.detach().clone()))
    pooled = torch.randn(5, 12, dtype=torch.float64)
    with torch.no_grad():
        gates = adapter.route(pooled)
    handle.remove()
    groups = adapter.num_groups
    assert gates.shape == (5, groups, M) and gates.dtype == torch.float64
    (logits, ) = seen
    logits = logits.numpy().reshape(5, groups, M)

    expected = np.zeros_like(logits)
    for b in range(5):
        for g in range(groups):
            row = logits[b, g]
            kept = np.argsort(-row)[:top_k]
            assert row[kept].min() > np.delete(row, kept).max()  # no ties
            if router_act == 'softmax':
                e = np.exp(row[kept] - row[kept].max())
                expected[b, g, kept] = e / e.sum()
            elif router_act == 'sigmoid':
                expected[b, g, kept] = 1.0 / (1.0 + np.exp(-row[kept]))
            else:
                expected[b, g, kept] = np.maximum(row[kept], 0.0)
    # the mask matters for these logits: dense gates would differ
    if router_act == 'softmax':
        dense = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    elif router_act == 'sigmoid':
        dense = 1.0 / (1.0 + np.exp(-logits))
    else:
        dense = np.maximum(logits, 0.0)
    assert not np.allclose(dense, expected)
    np.testing.assert_allclose(gates.numpy(), expected, rtol=1e-12,
                               atol=1e-15)
    if router_act != 'relu':
        assert ((gates > 0).sum(-1) == top_k).all()


def test_static_conv_only_builds_what_the_reference_builds():
    """``kernel_sizes=()`` with the conv branch on (the reference's
    ``parax_enable_conv=True, parax_kernel_sizes=None``, ParaX‡): the two
    static 3x3 depthwise convs and a two-group router, no spatial experts,
    no scale attention, no cascade scalars."""
    adapter, center = build(kernel_sizes=())
    names = {n for n, _ in adapter.named_parameters()}
    assert {'dwconv1.weight', 'dwconv1.bias', 'dwconv2.weight',
            'dwconv2.bias'} <= names
    assert adapter.scale_attn is None and adapter.cascade_scale is None
    assert adapter.router[2].out_features == 2 * center.num_experts
    assert [n for n, _ in center.named_parameters()] == ['down', 'up']
    off, _ = build(with_conv=False)
    assert sum(p.numel() for p in adapter.parameters()) - sum(
        p.numel() for p in off.parameters()) == 2 * (9 * 12 + 12)
    # the static convs act: the output is not the conv-free adapter's
    off.load_state_dict(adapter.state_dict(), strict=False)
    x = torch.randn(2, HW[0] * HW[1], 12, dtype=torch.float64)
    assert not torch.allclose(adapter(x, HW, center), off(x, HW, center))
