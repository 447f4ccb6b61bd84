"""The contract every (method x host) pair keeps.

Switched off (or as initialised, for zero-initialised methods) the adapted
host computes exactly what the plain host and the OpenMMLab backbone compute;
exactly the method's parameters (and the new output norms, where the
method's official code trains them) train, and every
pretrained parameter keeps its name and stays frozen; gradients reach all of
the method's parameters; checkpointed blocks give the same gradients; the
registered names build in the mmseg and mmdet scopes.
"""
import pytest
import torch
import torch.nn as nn
from mmengine.registry import MODELS, init_default_scope

from mmparax.models import Swin
from mmparax.peft import LoRAUpdate, ParaX, PEFTMethod, PEFTModule
from mmparax.registry import PEFT_METHODS
from mmparax.testing import switch_off
from mmparax.testing.peft import (
    HOSTS,
    METHODS,
    PAIRS,
    UNFIT,
    build_pair,
    hosts_of,
    perturb,
)

# prompt tokens always take part in attention: no value makes VPT a no-op
SWITCHABLE = [(m, h) for m, h in PAIRS if m != 'VPT']


def upstream(host, plain):
    """The OpenMMLab backbone a host subclasses, with the same weights."""
    if host == 'Swin':
        from mmseg.models.backbones import SwinTransformer
        model = SwinTransformer(**HOSTS[host][1])
    elif host == 'ConvNeXt':
        from mmpretrain.models.backbones import ConvNeXt as Upstream
        kwargs = dict(HOSTS[host][1])
        kwargs['out_indices'] = list(kwargs['out_indices'])
        model = Upstream(gap_before_final_norm=False, **kwargs)
    elif host == 'ViT':
        from mmpretrain.models.backbones import VisionTransformer
        model = VisionTransformer(**HOSTS[host][1])
    else:
        return None  # VMamba is ours; the plain host is the reference
    model.load_state_dict(plain.state_dict())
    return model


@pytest.mark.parametrize('method, host', SWITCHABLE)
def test_switched_off_equals_the_plain_host(method, host):
    plain = build_pair(host).eval()
    adapted = build_pair(host, METHODS[method]).eval()
    missing, unexpected = adapted.load_state_dict(
        plain.state_dict(), strict=False)
    assert not unexpected
    assert set(missing) == set(adapted.peft_trainable_names()) - set(
        dict(plain.named_parameters()))
    switch_off(adapted)
    x = torch.randn(*HOSTS[host][2])
    reference = upstream(host, plain)
    with torch.no_grad():
        expected = plain(x)
        for a, b in zip(adapted(x), expected):
            assert a.shape == b.shape
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        if reference is not None:
            reference.eval()  # (mmseg's train() returns None)
            for a, b in zip(reference(x), expected):
                torch.testing.assert_close(a, b, rtol=0, atol=0)
        perturb(adapted)  # and the method does act once switched on
        assert not torch.allclose(adapted(x)[-1], expected[-1])


# where the official dense-prediction code trains the host's new output
# norms (every other pair keeps them frozen at their initial values)
OUTPUT_NORMS_TRAINED = {
    ('ParaX', 'Swin'): True,  # the reference's extra_norm
    ('ParaX', 'ConvNeXt'): True,
    ('CoLoRA', 'ConvNeXt'): True,  # every bias and norm trains
}


@pytest.mark.parametrize('host', ['Swin', 'VMamba'])
@pytest.mark.parametrize('setting', [True, False])
def test_train_output_norms_overrides_the_default(host, setting):
    model = build_pair(host,
                       dict(METHODS['ParaX'], train_output_norms=setting))
    norms = [p for prefix in model.new_module_names()
             for p in model.get_submodule(prefix).parameters()]
    assert norms and all(p.requires_grad == setting for p in norms)
    from mmparax.utils import trainable_summary
    summary = trainable_summary(nn.ModuleDict(dict(backbone=model)))
    state = 'trained' if setting else 'frozen at their initial values'
    assert f'{state} (set by train_output_norms)' in summary
    with pytest.raises(TypeError, match='train_output_norms must be True'):
        build_pair(host, dict(METHODS['ParaX'], train_output_norms=1))


@pytest.mark.parametrize('method, host', PAIRS)
def test_exactly_the_method_trains(method, host):
    plain_names = set(dict(build_pair(host).named_parameters()))
    model = build_pair(host, METHODS[method])
    named = dict(model.named_parameters())
    new_layers = {
        n for prefix in model.new_module_names() for n in named
        if n.startswith(prefix + '.')
    }
    method_names = set(named) - plain_names
    assert method_names, 'the method added no parameter'
    assert plain_names <= set(named)  # pretrained names unchanged
    trainable = {n for n, p in named.items() if p.requires_grad}
    norms_train = OUTPUT_NORMS_TRAINED.get((method, host), False)
    if new_layers:
        assert model.trains_output_norms == norms_train
    assert trainable == method_names | (new_layers if norms_train else set())
    assert set(model.peft_trainable_names()) == trainable
    groups = model.peft_components()
    assert set(groups['pretrained']) == plain_names - new_layers
    assert set(groups[model.new_layers_group]) == new_layers
    owned = {
        n for prefix, m in model.named_modules() if isinstance(m, PEFTModule)
        for n, _ in m.named_parameters(prefix=prefix)
    }
    assert method_names == owned
    assert sorted(n for g, names in groups.items() for n in names) \
        == sorted(named)
    # train() keeps the freeze and drop path in the frozen blocks
    model.train()
    assert {n for n, p in model.named_parameters()
            if p.requires_grad} == trainable
    # full fine-tuning: everything trains, nothing is a method's
    full = build_pair(host)
    assert all(p.requires_grad for p in full.parameters())
    assert set(full.peft_components()) == {
        full.new_layers_group, 'pretrained'
    }


@pytest.mark.parametrize('method, host', PAIRS)
def test_gradients_reach_every_trainable_parameter(method, host):
    # no drop path: a dropped branch gives its modules an exact zero gradient
    model = build_pair(host, METHODS[method], drop_path_rate=0.0)
    perturb(model)
    x = torch.randn(*HOSTS[host][2])
    sum(o.square().mean() for o in model(x)).backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


@pytest.mark.parametrize('method, host', PAIRS)
def test_checkpointed_blocks_give_the_same_gradients(method, host):
    model = build_pair(host, METHODS[method], drop_path_rate=0.0)
    cp_model = build_pair(host, METHODS[method], drop_path_rate=0.0,
                          with_cp=True)
    perturb(model)
    cp_model.load_state_dict(model.state_dict())
    x = torch.randn(*HOSTS[host][2])
    for m in (model, cp_model):
        sum(o.square().mean() for o in m(x)).backward()
    for (name, p), q in zip(model.named_parameters(), cp_model.parameters()):
        if p.requires_grad:
            assert q.grad is not None, name
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6)
        else:
            assert p.grad is None and q.grad is None, name


@pytest.mark.parametrize('scope', ['mmseg', 'mmdet'])
@pytest.mark.parametrize('method, host', PAIRS)
def test_builds_in_both_scopes(method, host, scope):
    init_default_scope(scope)
    cls, kwargs, shape = HOSTS[host]
    model = MODELS.build(
        dict(type=f'mmparax.{cls.__name__}', peft=METHODS[method], **kwargs))
    assert type(model) is cls and type(model.peft).__name__ == method
    alias = MODELS.build(
        dict(type=f'mmparax.ParaX{cls.__name__}',
             parax=dict(hidden_dim=8, router_hidden=4), **kwargs))
    assert isinstance(alias, cls) and isinstance(alias.peft, ParaX)


# -- merging -------------------------------------------------------------
@pytest.mark.parametrize('host', list(HOSTS))
def test_lora_merges_into_the_frozen_weights(host):
    model = build_pair(host, METHODS['LoRA']).eval()
    perturb(model)
    x = torch.randn(*HOSTS[host][2])
    with torch.no_grad():
        before = model(x)
        frozen = {n: p.clone() for n, p in model.named_parameters()
                  if not p.requires_grad}
        model.peft.merge(model)
        after = model(x)
    for a, b in zip(after, before):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    changed = [n for n, p in model.named_parameters()
               if n in frozen and not torch.equal(p, frozen[n])]
    assert changed and all(n.endswith('.weight') for n in changed)


def test_lora_placements_and_count():
    """q and v of attention on Swin (4rC per block), the pointwise linears
    on ConvNeXt, the SS2D projections on VMamba."""
    swin = build_pair('Swin', dict(type='LoRA', rank=4))
    qkv = swin.stages[0].blocks[0].attn.w_msa.qkv
    assert set(qkv._modules) == {'lora_q', 'lora_v'}
    assert (qkv.lora_q.start, qkv.lora_v.start) == (0, 2 * 16)
    blocks = sum(HOSTS['Swin'][1]['depths'][i] * 16 * 2**i for i in range(4))
    lora = sum(p.numel() for n, p in swin.named_parameters() if '.lora' in n)
    assert lora == 4 * 4 * blocks  # 4 r C per block
    convnext = build_pair('ConvNeXt', dict(type='LoRA', rank=4))
    block = convnext.stages[1][0]
    assert isinstance(block.pointwise_conv1.lora, LoRAUpdate)
    assert isinstance(block.pointwise_conv2.lora, LoRAUpdate)
    assert not block.depthwise_conv._modules
    vmamba = build_pair('VMamba', dict(type='LoRA', rank=4))
    op = vmamba.layers[0].blocks[0].op
    assert hasattr(op.in_proj, 'lora') and hasattr(op.out_proj, 'lora')
    assert not hasattr(vmamba.layers[0].blocks[0].mlp.fc1, 'lora')


def test_lora_matches_the_formula():
    torch.manual_seed(0)
    layer = nn.Linear(6, 9).double()
    update = LoRAUpdate(6, 3, rank=2, alpha=4.0, start=6).double()
    nn.init.normal_(update.B)
    layer.register_forward_hook(update.hook)
    x = torch.randn(5, 6, dtype=torch.float64)
    expected = x @ layer.weight.T + layer.bias
    expected[:, 6:] += (x @ update.A.T @ update.B.T) * (4.0 / 2)
    torch.testing.assert_close(layer(x), expected)


# -- what a host offers --------------------------------------------------
def test_a_missing_site_names_method_host_and_offer():
    with pytest.raises(ValueError) as info:
        build_pair('ConvNeXt',
                   dict(type='ParaX', hidden_dim=8, sites=['post_attn']))
    message = str(info.value)
    assert 'ParaX' in message and 'ConvNeXt' in message
    assert "'post_block'" in message


def test_an_unknown_layer_alias_names_method_host_and_offer():
    with pytest.raises(ValueError) as info:
        build_pair('ConvNeXt', dict(type='LoRA', targets=['qkv:qv']))
    message = str(info.value)
    assert 'LoRA' in message and 'ConvNeXt' in message and "'fc1'" in message


def test_an_alias_matching_nothing_raises(monkeypatch):
    monkeypatch.setattr(
        Swin, 'layer_aliases', dict(Swin.layer_aliases, qkv='stages.*.nope'))
    with pytest.raises(ValueError, match="alias 'qkv' of Swin.*matches no"):
        build_pair('Swin', dict(type='LoRA'))


@pytest.mark.parametrize('peft, match', [
    (dict(type='Nope'), 'unknown PEFT method'),
    ('ParaX', 'dict with a type'),
    (dict(type='ParaX', rnak=8), "ParaX: .*'rnak'"),
    (dict(type='ParaX', layer_scale='foo'), 'layer_scale must be a number'),
    (dict(type='LoRA', rank=0), 'LoRA: rank must be a positive integer'),
    (dict(type='LoRA', targets='fc1'), 'list of layer aliases'),
])
def test_bad_method_configs_fail_at_build(peft, match):
    with pytest.raises((ValueError, TypeError, KeyError), match=match):
        build_pair('ConvNeXt', peft)


@pytest.mark.parametrize('host, value', [('Swin', 0), ('ConvNeXt', 1),
                                         ('VMamba', 0)])
def test_frozen_stages_refused_with_a_method_on_every_host(host, value):
    with pytest.raises(ValueError, match='frozen_stages'):
        build_pair(host, METHODS['ParaX'], frozen_stages=value)
    # full fine-tuning: upstream's meaning
    build_pair(host, frozen_stages=value)


# -- a new method is one small class -------------------------------------
class Probe(PEFTModule):
    """Records its input and returns 2x it (or a zero delta in parallel)."""

    def __init__(self, parallel=False):
        super().__init__()
        self.parallel = parallel
        self.seen = None
        self.weight = nn.Parameter(torch.ones(1))

    def forward(self, x, hw_shape):
        self.seen, self.hw_shape = x, hw_shape
        return x * 0 * self.weight if self.parallel else 2 * x * self.weight


@PEFT_METHODS.register_module(force=True)
class ProbeMethod(PEFTMethod):
    """A method in a dozen lines: one :class:`Probe` per requested site."""

    def attach(self, host):
        for i, (_, blocks) in enumerate(host.peft_stages()):
            for j in range(len(blocks)):
                for site in self.resolve_sites(host):
                    host.add_site_module(
                        i, j, site, Probe(parallel=site == 'mlp_parallel'))


def _tokens(x):
    return x.flatten(2).transpose(1, 2) if x.dim() == 4 else x


@pytest.mark.parametrize('host', list(HOSTS))
def test_residual_sites_receive_the_residual_stream(host):
    """What the module at each residual site receives, computed from the
    frozen block's own layers (pins where the adapters sit)."""
    model = build_pair(host,
                       dict(type='ProbeMethod', sites=['residual'])).eval()
    _, blocks = model.peft_stages()[1]
    block = blocks[0]
    seen_input = {}
    first = {'Swin': 'norm1', 'ConvNeXt': 'depthwise_conv',
             'VMamba': 'norm', 'ViT': 'ln1'}[host]
    getattr(block, first).register_forward_pre_hook(
        lambda m, args: seen_input.setdefault('x', args[0]))
    with torch.no_grad():
        model(torch.randn(*HOSTS[host][2]))
        x = seen_input['x']
        if host == 'Swin':
            hw = block.adapter1.hw_shape
            a1 = x + block.attn(block.norm1(x), hw)
            torch.testing.assert_close(block.adapter1.seen, a1)
            y = 2 * a1
            a2 = block.ffn(block.norm2(y), identity=y)
            torch.testing.assert_close(block.adapter2.seen, a2)
        elif host == 'ConvNeXt':
            torch.testing.assert_close(block.adapter.seen,
                                       _tokens(block(x)))
        elif host == 'ViT':  # patch tokens only: the class token bypasses
            a1 = x + block.attn(block.ln1(x))
            torch.testing.assert_close(block.adapter1.seen, a1[:, 1:])
            y = torch.cat((a1[:, :1], 2 * a1[:, 1:]), dim=1)
            a2 = block.ffn(block.ln2(y), identity=y)
            torch.testing.assert_close(block.adapter2.seen, a2[:, 1:])
        else:
            a1 = x + block.op(block.norm(x))
            torch.testing.assert_close(block.adapter1.seen, _tokens(a1))
            y = 2 * a1
            a2 = y + block.mlp(block.norm2(y))
            torch.testing.assert_close(block.adapter2.seen, _tokens(a2))


@pytest.mark.parametrize('host, mixer', [('Swin', 'attn'), ('VMamba', 'ssm')])
def test_branch_and_parallel_sites(host, mixer):
    """pre_<mixer> / pre_mlp change only what the branch reads (the residual
    keeps the stream); mlp_parallel reads the stream before norm2 and adds
    to the MLP's output."""
    sites = [f'pre_{mixer}', 'pre_mlp', 'mlp_parallel']
    model = build_pair(host, dict(type='ProbeMethod', sites=sites)).eval()
    block = model.peft_stages()[1][1][0]
    for probe in block.children():
        if isinstance(probe, Probe) and probe.parallel:
            probe.parallel = False  # return 2x: its output must show up
    torch.manual_seed(0)
    with torch.no_grad():
        if host == 'Swin':
            hw = (6, 5)
            x = torch.randn(2, 30, 32)
            out = model.forward_block(block, x, hw)
            s1 = x + block.attn(block.norm1(2 * x), hw)
            expected = block.ffn(block.norm2(2 * s1), identity=s1) + 2 * s1
            seen = [block.pre_attn_adapter.seen, block.pre_mlp_adapter.seen,
                    block.mlp_adapter.seen]
            tokens = [x, s1, s1]
        else:
            x = torch.randn(2, 32, 6, 5)
            out = model.forward_block(block, x)
            s1 = x + block.op(block.norm(2 * x))
            expected = s1 + block.mlp(block.norm2(2 * s1)) + 2 * s1
            seen = [block.pre_ssm_adapter.seen, block.pre_mlp_adapter.seen,
                    block.mlp_adapter.seen]
            tokens = [_tokens(x), _tokens(s1), _tokens(s1)]
    torch.testing.assert_close(out, expected)
    for got, want in zip(seen, tokens):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize('method, host', UNFIT)
def test_a_method_on_a_host_it_does_not_fit_names_why(method, host):
    with pytest.raises(ValueError) as info:
        build_pair(host, METHODS[method])
    message = str(info.value)
    assert message.startswith(f'{method} cannot adapt {host}: ')
    offered = HOSTS[host][0].block_sites
    assert str(tuple(offered)) in message  # what the host offers


def test_the_pairs_follow_the_declarations():
    """Prompt tokens need attention; CoLoRA needs ConvNeXt's blocks."""
    assert hosts_of('VPT') == ['Swin', 'ViT']
    assert hosts_of('CoLoRA') == ['ConvNeXt']
    assert all(len(hosts_of(m)) == len(HOSTS) for m in METHODS
               if m not in ('VPT', 'CoLoRA'))


@PEFT_METHODS.register_module(force=True)
class WindowProbe(ProbeMethod):
    """:class:`ProbeMethod` on hosts with windowed attention only."""

    requires = ('window_attention', )


@pytest.mark.parametrize('host', list(HOSTS))
def test_a_required_capability_is_checked_before_attaching(host):
    peft = dict(type='WindowProbe', sites=['residual'])
    if 'window_attention' in HOSTS[host][0].capabilities:
        assert build_pair(host, peft).peft_trainable_names()
        return
    with pytest.raises(ValueError) as info:
        build_pair(host, peft)
    message = str(info.value)
    assert message.startswith(
        f'WindowProbe cannot adapt {host}: WindowProbe needs the capability '
        "'window_attention' (self-attention within local windows")
    assert f'capabilities {tuple(HOSTS[host][0].capabilities)}' in message


class ExtraTokens(PEFTModule):
    """Two learnt tokens for the attention; records how it is called."""

    def __init__(self, channels):
        super().__init__()
        self.tokens = nn.Parameter(torch.randn(2, channels))

    def forward(self, x, hw_shape):
        self.seen = (x, hw_shape)
        return self.tokens


@PEFT_METHODS.register_module(force=True)
class ExtraTokensMethod(PEFTMethod):
    default_sites = ('attn_tokens', )

    def attach(self, host):
        self.add_site_modules(host, lambda channels, *_: ExtraTokens(channels))


@pytest.mark.parametrize('host', ['Swin', 'ViT'])
def test_attn_tokens_is_called_like_every_site_and_joins_the_attention(
        host):
    plain = build_pair(host).eval()
    model = build_pair(host, dict(type='ExtraTokensMethod')).eval()
    model.load_state_dict(plain.state_dict(), strict=False)
    channels, blocks = model.peft_stages()[1]
    x = torch.randn(2, 20 + plain.num_extra_tokens if host == 'ViT' else 20,
                    channels)
    with torch.no_grad():
        out = model.forward_block(blocks[0], x, (4, 5))
        expected = plain.forward_block(plain.peft_stages()[1][1][0], x,
                                       (4, 5))
    seen = model.block_sites['attn_tokens']
    assert getattr(blocks[0], seen).seen[0] is x
    assert getattr(blocks[0], seen).seen[1] == (4, 5)
    assert out.shape == expected.shape
    assert not torch.allclose(out, expected)


@pytest.mark.parametrize('host, mixer', [('Swin', 'attn'), ('VMamba', 'ssm')])
def test_normalised_input_sites(host, mixer):
    """<mixer>_in / mlp_in read the output of norm1 / norm2 and feed the
    mixer / the MLP; the residuals keep the stream."""
    model = build_pair(host, dict(type='ProbeMethod',
                             sites=[f'{mixer}_in', 'mlp_in'])).eval()
    block = model.peft_stages()[1][1][0]
    torch.manual_seed(0)
    with torch.no_grad():
        if host == 'Swin':
            hw = (6, 5)
            x = torch.randn(2, 30, 32)
            out = model.forward_block(block, x, hw)
            s1 = x + block.attn(2 * block.norm1(x), hw)
            expected = block.ffn(2 * block.norm2(s1), identity=s1)
            seen = [block.attn_in_adapter.seen, block.mlp_in_adapter.seen]
            tokens = [block.norm1(x), block.norm2(s1)]
        else:
            x = torch.randn(2, 32, 6, 5)
            out = model.forward_block(block, x)
            s1 = x + block.op(2 * block.norm(x))
            expected = s1 + block.mlp(2 * block.norm2(s1))
            seen = [block.ssm_in_adapter.seen, block.mlp_in_adapter.seen]
            tokens = [_tokens(block.norm(x)), _tokens(block.norm2(s1))]
    torch.testing.assert_close(out, expected)
    for got, want in zip(seen, tokens):
        torch.testing.assert_close(got, want)


def test_convnext_branch_and_parallel_sites():
    """pre_dwconv changes what the branch reads (the shortcut keeps the
    stream); block_parallel reads the block input and adds to its output;
    the rest of the block is mmpretrain's."""
    model = build_pair('ConvNeXt',
                  dict(type='ProbeMethod',
                       sites=['pre_dwconv', 'block_parallel'])).eval()
    block = model.peft_stages()[1][1][0]
    block.parallel_adapter.parallel = False  # return 2x: it must show up
    torch.manual_seed(0)
    x = torch.randn(2, block.depthwise_conv.in_channels, 6, 5)
    with torch.no_grad():
        out = model.forward_block(block, x)
        branch = block(2 * x) - 2 * x  # mmpretrain's block minus its input
        expected = x + branch + 2 * x
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(block.pre_dwconv_adapter.seen, _tokens(x))
    torch.testing.assert_close(block.parallel_adapter.seen, _tokens(x))


@pytest.mark.parametrize('host, mixer', [('Swin', 'attn'), ('VMamba', 'ssm')])
def test_branch_output_sites(host, mixer):
    """<mixer>_out / mlp_out take the output of the mixer / MLP branch
    (drop path applied) before its residual add."""
    model = build_pair(host, dict(type='ProbeMethod',
                             sites=[f'{mixer}_out', 'mlp_out'])).eval()
    block = model.peft_stages()[1][1][0]
    torch.manual_seed(0)
    with torch.no_grad():
        if host == 'Swin':
            hw = (6, 5)
            x = torch.randn(2, 30, 32)
            out = model.forward_block(block, x, hw)
            a = block.attn(block.norm1(x), hw)
            s1 = x + 2 * a
            m = block.ffn(block.norm2(s1), identity=0)
            seen = [block.attn_out_adapter.seen, block.mlp_out_adapter.seen]
            tokens = [a, m]
        else:
            x = torch.randn(2, 32, 6, 5)
            out = model.forward_block(block, x)
            a = block.op(block.norm(x))
            s1 = x + 2 * a
            m = block.mlp(block.norm2(s1))
            seen = [block.ssm_out_adapter.seen, block.mlp_out_adapter.seen]
            tokens = [_tokens(a), _tokens(m)]
        expected = s1 + 2 * m
    torch.testing.assert_close(out, expected)
    for got, want in zip(seen, tokens):
        torch.testing.assert_close(got, want)
