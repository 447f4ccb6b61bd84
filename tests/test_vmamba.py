"""VMamba and ParaXVMamba: data flow, strict loading, freezing, counts."""
import math
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from mmparax.models import ParaXVMamba, VMamba
from mmparax.models.backbones.vmamba import SS2D, cross_merge, cross_scan
from mmparax.ops import selective_scan_reference
from mmparax.testing import switch_off
from mmparax.utils.restricted_load import OpaqueObject, load_weights_file

TINY = dict(
    arch=dict(dims=16, depths=(1, 1, 2, 1), ssm_ratio=2.0),
    drop_path_rate=0.1)
PARAX = dict(hidden_dim=8, router_hidden=4)
BASE_DIMS = (128, 256, 512, 1024)


def build(cls=VMamba, path=None, seed=0, **overrides):
    kwargs = dict(TINY, **overrides)
    if cls is ParaXVMamba:
        kwargs.setdefault('parax', PARAX)
    init_cfg = dict(type='Pretrained', checkpoint=str(path)) if path else None
    torch.manual_seed(seed)
    return cls(init_cfg=init_cfg, **kwargs)


# -- scan orders ---------------------------------------------------------
def test_cross_scan_orders_and_merge_round_trip():
    B, C, H, W = 2, 3, 4, 5
    x = torch.randn(B, C, H, W)
    xs = cross_scan(x)
    assert xs.shape == (B, 4, C, H * W)
    for h in range(H):
        for w in range(W):
            assert torch.equal(xs[:, 0, :, h * W + w], x[:, :, h, w])
            assert torch.equal(xs[:, 1, :, w * H + h], x[:, :, h, w])
    assert torch.equal(xs[:, 2], xs[:, 0].flip(-1))
    assert torch.equal(xs[:, 3], xs[:, 1].flip(-1))
    # merging undoes every order
    torch.testing.assert_close(cross_merge(xs, (H, W)), 4 * x)
    ys = torch.randn_like(xs)
    for k in range(4):
        only = torch.zeros_like(xs)
        only[:, k] = xs[:, k]
        assert torch.equal(cross_merge(only, (H, W)), x)
    # and is the adjoint of the scan (gradients flow back to the right pixel)
    lhs = (cross_scan(x) * ys).sum()
    rhs = (x * cross_merge(ys, (H, W))).sum()
    torch.testing.assert_close(lhs, rhs)


def _order(k, H, W):
    """Pixel index (row-major) read at each step of direction k."""
    rows = torch.arange(H * W)
    cols = torch.arange(H * W).view(H, W).t().reshape(-1)
    return [rows, cols, rows.flip(0), cols.flip(0)][k]


def test_ss2d_equals_direct_per_direction_scans():
    """SS2D against four explicit scans (float64 reference), one per order."""
    torch.manual_seed(0)
    op = SS2D(dim=8, d_state=2, ssm_ratio=1.5).double()
    with torch.no_grad():
        for p in op.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    B, H, W = 2, 3, 5
    x = torch.randn(B, 8, H, W, dtype=torch.float64)
    E, N, R = op.d_inner, op.d_state, op.dt_rank
    with torch.no_grad():
        inner = F.silu(op.conv2d(op.in_proj(x))).flatten(2)  # [B, E, L]
        A = -torch.exp(op.A_logs).view(4, E, N)
        y = torch.zeros_like(inner)
        for k in range(4):
            order = _order(k, H, W)
            seq = inner[:, :, order]
            proj = torch.einsum('ce,bel->bcl', op.x_proj_weight[k], seq)
            dt, Bk, Ck = proj.split([R, N, N], dim=1)
            dt = torch.einsum('er,brl->bel', op.dt_projs_weight[k], dt)
            yk = selective_scan_reference(
                seq, dt, A[k], Bk[:, None], Ck[:, None],
                op.Ds.view(4, E)[k], op.dt_projs_bias[k])
            y[:, :, order] += yk
        y = F.layer_norm(y.transpose(1, 2), (E, ), op.out_norm.weight,
                         op.out_norm.bias, op.out_norm.eps).transpose(1, 2)
        expected = torch.einsum('ce,bel->bcl', op.out_proj.weight, y)
        out = op(x)
    torch.testing.assert_close(
        out.flatten(2), expected, rtol=1e-4, atol=1e-5)


# -- architecture --------------------------------------------------------
def test_arch_table_and_overrides():
    assert VMamba._arch('base') == dict(
        dims=128, depths=(2, 2, 15, 2), ssm_ratio=2.0)
    assert VMamba._arch('small') == dict(
        dims=96, depths=(2, 2, 15, 2), ssm_ratio=2.0)
    assert VMamba._arch('tiny') == dict(
        dims=96, depths=(2, 2, 8, 2), ssm_ratio=1.0)
    model = VMamba(arch='tiny', depths=(1, 1, 1, 1), out_indices=(1, 3))
    assert model.dims == (96, 192, 384, 768)
    assert [len(s.blocks) for s in model.layers] == [1, 1, 1, 1]
    op = model.layers[0].blocks[0].op
    assert op.in_proj.weight.shape == (96, 96)  # ssm_ratio 1
    assert op.dt_rank == 6 and op.x_proj_weight.shape == (4, 8, 96)
    assert [n for n, _ in model.named_children()
            if n.startswith('outnorm')] == ['outnorm1', 'outnorm3']
    outs = model(torch.randn(1, 3, 32, 32))
    assert [tuple(o.shape) for o in outs] == [(1, 192, 4, 4), (1, 768, 1, 1)]
    with pytest.raises(ValueError, match='unknown VMamba arch'):
        VMamba(arch='huge')


def test_outputs_and_drop_path():
    model = build()
    x = torch.randn(2, 3, 64, 72)
    outs = model(x)
    assert [tuple(o.shape) for o in outs] == [
        (2, 16, 16, 18), (2, 32, 8, 9), (2, 64, 4, 5), (2, 128, 2, 3)]
    rates = [b.drop_path.drop_prob for s in model.layers for b in s.blocks
             if hasattr(b.drop_path, 'drop_prob')]
    # linear over the 5 blocks; the first block's rate 0 is no drop path
    assert rates == pytest.approx([0.025, 0.05, 0.075, 0.1])


def test_frozen_stages():
    model = build(frozen_stages=1)
    frozen = {n.split('.')[0] + '.' + n.split('.')[1]
              for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {'patch_embed.0', 'patch_embed.2', 'patch_embed.5',
                      'patch_embed.7', 'layers.0', 'layers.1'}
    model.train()
    assert not model.layers[1].training and model.layers[2].training


# -- ParaX ---------------------------------------------------------------
def test_switched_off_equals_plain_vmamba():
    plain = build(VMamba).eval()
    adapted = build(ParaXVMamba).eval()
    missing, unexpected = adapted.load_state_dict(
        plain.state_dict(), strict=False)
    assert not unexpected
    assert missing and all('adapter' in k or 'expert_centers' in k
                           for k in missing)
    switch_off(adapted)
    x = torch.randn(2, 3, 64, 56)
    with torch.no_grad():
        for a, b in zip(adapted(x), plain(x)):
            assert a.shape == b.shape
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        adapted.layers[1].blocks[0].adapter2.layer_scale.fill_(1.0)
        outs = adapted(x)
        assert torch.equal(outs[0], plain(x)[0])
        assert not torch.allclose(outs[1], plain(x)[1])


def test_freeze_set_and_centers():
    model = build(ParaXVMamba)
    for name, p in model.named_parameters():
        parts = name.split('.')
        # the reference VMamba leaves its output norms frozen
        # (set_only_parax_trainable)
        trained = 'adapter1' in parts or 'adapter2' in parts or \
            'expert_centers' in parts
        assert p.requires_grad == trained, name
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert {n.split('.')[0] for n in frozen} == {
        'patch_embed', 'layers', 'outnorm0', 'outnorm1', 'outnorm2',
        'outnorm3'}
    assert any('.downsample.' in n for n in frozen)
    assert any(n.endswith('op.A_logs') for n in frozen)
    groups = model.peft_components()
    assert set(groups) == {
        'adapters', 'expert_centers', 'output_norms', 'pretrained'
    }
    assert set(groups['pretrained']) == frozen - set(groups['output_norms'])
    for stage, centers in zip(model.layers, model.expert_centers):
        assert len(centers) == 1
        assert centers[0].num_experts == len(stage.blocks)
    model.train()  # keeps the freeze, drop path stays active
    assert {n for n, p in model.named_parameters()
            if not p.requires_grad} == frozen
    assert model.layers[2].blocks[1].drop_path.training
    # names of the pretrained parameters are those of the plain backbone
    assert set(dict(build(VMamba).named_parameters())) == frozen


def test_encoder_decoder_forward_backward():
    """mmseg UperNet with ParaXVMamba: loss, backward, gradients where due."""
    from mmengine.config import ConfigDict
    from mmengine.registry import MODELS, init_default_scope
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    import mmparax  # noqa: F401

    init_default_scope('mmseg')
    norm_cfg = dict(type='BN', requires_grad=True)
    head = dict(
        num_classes=5,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0))
    torch.manual_seed(0)
    model = MODELS.build(
        ConfigDict(
            type='EncoderDecoder',
            data_preprocessor=dict(
                type='SegDataPreProcessor',
                mean=[123.675, 116.28, 103.53],
                std=[58.395, 57.12, 57.375],
                bgr_to_rgb=True,
                size=(64, 64),
                pad_val=0,
                seg_pad_val=255),
            backbone=dict(type='mmparax.ParaXVMamba', parax=PARAX, **TINY),
            decode_head=dict(
                type='UPerHead',
                in_channels=[16, 32, 64, 128],
                in_index=[0, 1, 2, 3],
                pool_scales=(1, 2, 3, 6),
                channels=16,
                dropout_ratio=0.1,
                **head),
            auxiliary_head=dict(
                type='FCNHead',
                in_channels=64,
                in_index=2,
                channels=8,
                num_convs=1,
                concat_input=False,
                **dict(head, loss_decode=dict(
                    type='CrossEntropyLoss', loss_weight=0.4))),
            train_cfg=dict(),
            test_cfg=dict(mode='whole')))
    model.train()
    samples = []
    for _ in range(2):
        sample = SegDataSample(
            metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64)))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 5, (1, 64, 64)))
        samples.append(sample)
    data = dict(
        inputs=[torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
                for _ in range(2)],
        data_samples=samples)
    data = model.data_preprocessor(data, True)
    losses = model(**data, mode='loss')
    loss = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(loss)
    loss.backward()
    backbone = model.backbone
    for name, p in backbone.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, name
        else:
            assert p.grad is None, name
    assert backbone.expert_centers[0][0].down.grad.abs().sum() > 0
    assert backbone.outnorm3.weight.grad is None  # frozen, as the reference
    assert model.decode_head.conv_seg.weight.grad is not None
    model.eval()
    with torch.no_grad():
        preds = model(data['inputs'], data['data_samples'], mode='predict')
    assert preds[0].pred_sem_seg.data.shape == (1, 64, 64)


# -- checkpoints in the official layout ----------------------------------
def official_state_dict(seed=1, pointwise_4d=False, **overrides):
    """What the official ImageNet files hold under 'model', every tensor
    random: the plain backbone without output norms, plus the classifier."""
    model = build(VMamba, seed=seed, **overrides)
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith('outnorm'):
            continue
        value = torch.randn(value.shape, generator=g)
        if pointwise_4d and key.endswith(('in_proj.weight', 'out_proj.weight',
                                          'fc1.weight', 'fc2.weight')):
            value = value[:, :, None, None]
        state[key] = value
    dim = model.dims[-1]
    state.update({
        'classifier.norm.weight': torch.ones(dim),
        'classifier.norm.bias': torch.zeros(dim),
        'classifier.head.weight': torch.randn(1000, dim, generator=g),
        'classifier.head.bias': torch.zeros(1000),
    })
    return state


@pytest.fixture
def fake_training_code():
    """Modules named like the training code's, gone again at load time."""
    yacs = types.ModuleType('yacs')
    config = types.ModuleType('yacs.config')

    class CfgNode(dict):
        """Shaped like yacs' CfgNode: a dict with attributes."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.__dict__['__immutable__'] = False
            self.__dict__['__deprecated_keys__'] = set()

    CfgNode.__module__ = 'yacs.config'
    CfgNode.__qualname__ = 'CfgNode'
    config.CfgNode = CfgNode
    yacs.config = config

    calls = []
    trap = types.ModuleType('training_trap')

    def triggered(tag):
        calls.append(tag)
        return tag

    class Trap:

        def __reduce__(self):
            return triggered, ('ran',)

    triggered.__module__ = Trap.__module__ = 'training_trap'
    triggered.__qualname__ = 'triggered'
    Trap.__qualname__ = 'Trap'
    trap.triggered, trap.Trap = triggered, Trap
    modules = {'yacs': yacs, 'yacs.config': config, 'training_trap': trap}
    sys.modules.update(modules)
    try:
        yield CfgNode, Trap, calls
    finally:
        for name in modules:
            sys.modules.pop(name, None)


def assert_loaded(model, state):
    own = model.state_dict()
    for key, value in state.items():
        if key.startswith('classifier.'):
            continue
        expected = value.flatten(1) if value.dim() == 4 and \
            own[key].dim() == 2 else value
        assert torch.equal(own[key], expected), key


@pytest.mark.parametrize('cls', [VMamba, ParaXVMamba])
def test_loads_official_training_checkpoint(tmp_path, fake_training_code,
                                            cls):
    """Weights under 'model' next to optimizer state, a config object and
    a payload that would run code if unpickled normally."""
    CfgNode, Trap, calls = fake_training_code
    state = official_state_dict()
    first = next(iter(state))
    cfg = CfgNode(MODEL=CfgNode(TYPE='vssm', DROP_PATH_RATE=0.6))
    path = tmp_path / 'vssm_ckpt_epoch_1.pth'
    torch.save({
        'model': state,
        'optimizer': {
            'state': {0: {'exp_avg': torch.zeros(3)}},
            'param_groups': [{'lr': 1e-3, 'params': [0]}]
        },
        'lr_scheduler': {'last_epoch': 1},
        'max_accuracy': 83.9,
        'epoch': 1,
        'config': cfg,
        'trap': Trap(),
    }, path)
    for name in ('yacs', 'yacs.config'):
        sys.modules.pop(name)  # not importable while loading
    model = build(cls, path=path)
    model.init_weights()
    assert_loaded(model, state)
    assert 'yacs' not in sys.modules
    assert calls == []  # nothing from the file ran
    # the foreign objects come back inert, their contents readable
    raw = load_weights_file(str(path))
    assert isinstance(raw['config'], OpaqueObject)
    assert raw['config']['MODEL']['TYPE'] == 'vssm'
    assert isinstance(raw['trap'], OpaqueObject) and calls == []
    assert raw['optimizer']['param_groups'][0]['lr'] == 1e-3
    # pretrained weights went in, the new modules kept their init
    assert not torch.equal(model.state_dict()[first],
                           build(cls).state_dict()[first])
    if cls is ParaXVMamba:
        assert model.layers[0].blocks[0].adapter1.layer_scale.eq(1).all()


def test_loads_4d_pointwise_weights_and_plain_files(tmp_path):
    state = official_state_dict(pointwise_4d=True)
    assert state['layers.0.blocks.0.op.in_proj.weight'].dim() == 4
    path = tmp_path / 'weights.pth'
    torch.save(state, path)  # a bare state dict, weights-only loadable
    model = build(ParaXVMamba, path=path)
    model.init_weights()
    assert_loaded(model, state)
    assert model.layers[0].blocks[0].op.in_proj.weight.dim() == 2


def test_mismatched_checkpoints_raise_naming_the_keys(tmp_path):
    path = tmp_path / 'wider.pth'
    torch.save({'model': official_state_dict(dims=24)}, path)
    with pytest.raises(RuntimeError, match='shapes differ') as info:
        build(VMamba, path=path).init_weights()
    assert 'layers.0.blocks.0.op.in_proj.weight' in str(info.value)

    state = official_state_dict()
    del state['layers.2.blocks.1.op.A_logs']
    state['layers.0.blocks.0.op.conv2d.bias'] = torch.zeros(32)
    path = tmp_path / 'other.pth'
    torch.save({'model': state}, path)
    with pytest.raises(RuntimeError) as info:
        build(ParaXVMamba, path=path).init_weights()
    message = str(info.value)
    assert 'missing' in message and 'layers.2.blocks.1.op.A_logs' in message
    assert 'layers.0.blocks.0.op.conv2d.bias' in message


def test_unreadable_file_raises_naming_it_damaged(tmp_path):
    path = tmp_path / 'broken.pth'
    path.write_bytes(b'not a checkpoint')
    with pytest.raises(RuntimeError,
                       match='is damaged or is not a PyTorch checkpoint'
                       ) as info:
        build(VMamba, path=path).init_weights()
    assert str(path) in str(info.value) and '(16 bytes)' in str(info.value)


def test_dt_rank_and_inner_width_follow_the_release():
    op = SS2D(dim=128)
    assert op.dt_rank == math.ceil(128 / 16) and op.d_inner == 256
    assert op.x_proj_weight.shape == (4, 8 + 2, 256)
    assert op.conv2d.bias is None and op.conv2d.weight.shape == (256, 1, 3, 3)
    # init: softplus(bias) in [1e-3, 0.1], A = -1
    dt = F.softplus(op.dt_projs_bias)
    assert dt.min() >= 1e-4 and dt.max() <= 0.1 + 1e-6
    assert torch.equal(op.A_logs, torch.zeros(4 * 256, 1))


def test_exact_counts_vmamba_b():
    """Built on the CPU at full size: the paper's 4.6M and 88.6M."""
    model = ParaXVMamba(arch='base')
    assert model.dims == BASE_DIMS and model.depths == (2, 2, 15, 2)
    named = dict(model.named_parameters())
    groups = model.peft_components()

    def count(names):
        return sum(named[n].numel() for n in names)

    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # the reference trains no output norm on VMamba: 686,736 on its small
    # model, 4,563,624 on VMamba-B
    assert trainable == 4_563_624
    assert count(groups['output_norms']) == 2 * sum(BASE_DIMS)
    # the ImageNet model: backbone + classifier norm and 1000-class head
    classifier = 2 * 1024 + 1024 * 1000 + 1000
    assert count(groups['pretrained']) == 87_530_752
    assert round((87_530_752 + classifier) / 1e6, 1) == 88.6
