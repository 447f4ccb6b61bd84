"""The analysis tools: linear CKA, effective receptive fields and ParaX
expert activations (library functions and the three CLIs end to end on the
demo config)."""
import copy
import importlib.util
import json
import os.path as osp

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from mmparax.analysis import (
    GateRecorder,
    Normalizer,
    build_model,
    cka_matrix,
    high_contribution_ratio,
    input_gradient_map,
    linear_cka,
    load_checkpoint_strict,
    load_config,
    mean_erf,
    record_gates,
    stage_adapters,
)
from mmparax.analysis.cka import collect_features, stage_layers
from mmparax.analysis.inputs import list_images, parse_model_specs
from mmparax.apis.peft_checkpoint import save_peft_checkpoint
from mmparax.apis.runner import CheckpointMismatchError
from mmparax.models.backbones import Swin
from mmparax.testing import (
    check_ok,
    run_tool,
    swin_to_microsoft,
    tiny_swin_kwargs,
    tiny_swin_state_dict,
    write_checkpoint,
)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CFG = osp.join(REPO, 'configs', 'demo',
               'parax_swin-tiny_upernet_1xb4-300i_demo-64x64.py')
PNG = b'\x89PNG\r\n\x1a\n'
ONE_THREAD = dict(OMP_NUM_THREADS='1')
SWIN_ARGS = dict(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8))


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tool(name):
    """The ``main`` of tools/analysis/<name>.py, imported in-process."""
    spec = importlib.util.spec_from_file_location(
        f'analysis_tool_{name}',
        osp.join(REPO, 'tools', 'analysis', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def pretrained_option(path):
    return f'model.backbone.init_cfg.checkpoint={path}'


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    """Four 64x64 images, a tiny random full checkpoint of the demo config
    and a Microsoft-layout pretrained Swin for it."""
    root = tmp_path_factory.mktemp('analysis')
    images = root / 'images'
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f'img_{i}.png')
    pretrained = write_checkpoint(
        str(root / 'swin_pretrained.pth'),
        swin_to_microsoft(tiny_swin_state_dict(0, **SWIN_ARGS)))
    cfg = load_config(CFG, {'model.backbone.init_cfg.checkpoint': pretrained})
    model = build_model(cfg, random_weights=True, seed=1)
    ckpt = str(root / 'random_full.pth')
    torch.save({'state_dict': model.state_dict()}, ckpt)
    return dict(root=root, images=str(images), ckpt=ckpt, cfg=cfg,
                pretrained=pretrained, model=model)


# -- (a) linear CKA -----------------------------------------------------------
def test_linear_cka_invariances():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 12, generator=gen)
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=gen))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, 3.5 * x @ q) == pytest.approx(1.0, abs=1e-10)
    assert linear_cka(x, x + 7.0) == pytest.approx(1.0, abs=1e-10)
    unrelated = linear_cka(x, torch.randn(200, 12, generator=gen))
    assert unrelated < 0.3
    # a non-orthogonal (anisotropic) map changes the similarity
    assert linear_cka(x, x * torch.linspace(0.1, 10, 12)) < 0.99


def test_cka_gram_and_feature_forms_agree():
    gen = torch.Generator().manual_seed(1)
    wide = torch.randn(10, 50, generator=gen)  # N < p: Gram matrices
    other = wide[:, :20] @ torch.randn(20, 30, generator=gen)
    x = wide - wide.mean(0)
    y = other - other.mean(0)
    expected = (y.T @ x).square().sum() / (
        (x.T @ x).norm() * (y.T @ y).norm())
    assert linear_cka(wide, other) == pytest.approx(float(expected),
                                                    rel=1e-6)
    tall = torch.randn(300, 5, generator=gen)  # N > p: feature space
    feats = [tall, tall @ torch.randn(5, 3, generator=gen),
             torch.randn(300, 4, generator=gen)]
    matrix = cka_matrix(feats)
    assert np.allclose(np.diag(matrix), 1.0)
    assert np.allclose(matrix, matrix.T)
    for i in range(3):
        for j in range(3):
            assert matrix[i, j] == pytest.approx(
                linear_cka(feats[i], feats[j]), rel=1e-9)


# -- (b) effective receptive field --------------------------------------------
@pytest.mark.parametrize('k', [3, 5])
def test_erf_of_one_conv_is_its_footprint(k):
    conv = nn.Conv2d(3, 4, k, padding=k // 2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.rand(conv.weight.shape) + 0.1)
    x = torch.randn(1, 3, 17, 17)
    expected = torch.zeros(17, 17, dtype=torch.bool)
    expected[8 - k // 2:9 + k // 2, 8 - k // 2:9 + k // 2] = True
    assert torch.equal(input_gradient_map(conv, x, relu=False) > 0,
                       expected)
    positive = [torch.rand(1, 3, 17, 17) + 0.1 for _ in range(2)]
    assert torch.equal(input_gradient_map(conv, positive[0]) > 0, expected)
    mean = mean_erf(conv, positive)
    assert np.array_equal(mean > 0, expected.numpy())
    ratios = high_contribution_ratio(mean, (0.99, 1.0))
    assert ratios['1.0'] == dict(side=k, area_ratio=k * k / 17**2)
    assert ratios['0.99']['side'] <= k


def test_erf_through_a_fresh_layer_norm():
    """The plain channel sum of LN(x) with unit weights is constant: only
    the ReLU gives the map a gradient."""
    conv = nn.Conv2d(3, 8, 3, padding=1)

    def normed(x):
        y = conv(x).permute(0, 2, 3, 1)
        return nn.functional.layer_norm(y, (8, )).permute(0, 3, 1, 2)

    x = torch.randn(1, 3, 9, 9)
    assert input_gradient_map(normed, x, relu=False).abs().max() < 1e-5
    assert input_gradient_map(normed, x).abs().max() > 1e-3


def test_erf_needs_a_feature_map():
    with pytest.raises(ValueError, match='feature map'):
        input_gradient_map(lambda x: x.mean((2, 3)), torch.randn(1, 3, 8, 8))


# -- (c) expert gates ---------------------------------------------------------
def tiny_parax_swin(**peft):
    torch.manual_seed(0)
    return Swin(
        **tiny_swin_kwargs(),
        peft=dict(type='ParaX', hidden_dim=4, router_hidden=4, **peft)).eval()


@torch.no_grad()
def test_recorded_gates_are_the_routes():
    backbone = tiny_parax_swin()
    adapters = stage_adapters(backbone, 2)
    assert [label for label, _ in adapters] == ['b0.post_mlp', 'b1.post_mlp']
    modules = [a for _, a in adapters]
    logits = {}
    for i, a in enumerate(modules):
        a.router.register_forward_hook(
            lambda m, args, out, i=i: logits.__setitem__(i, out))
    x = torch.randn(3, 3, 64, 64)
    with GateRecorder(modules, keep_inputs=True) as recorder:
        backbone(x)
        gates = recorder.pop()
    groups, m = modules[0].num_groups, modules[0].num_experts
    assert gates.shape == (3, 2, groups, m) == (3, 2, 5, 2)
    for i, a in enumerate(modules):
        pooled = recorder.inputs[i][0]
        assert pooled.shape == (3, a.dim)
        assert torch.allclose(gates[:, i], a.route(pooled))
        assert torch.allclose(
            gates[:, i], logits[i].view(3, groups, m).softmax(-1))
        assert 'route' not in vars(a)  # the method is back
    assert torch.allclose(gates.sum(-1), torch.ones(3, 2, groups))
    per_image = record_gates(backbone, modules, [x[:1], x[1:]])
    assert per_image.shape == (3, 2, groups, m)
    assert np.allclose(per_image, gates.numpy(), atol=1e-6)


def test_stage_adapters_errors():
    torch.manual_seed(0)
    plain = Swin(**tiny_swin_kwargs())
    with pytest.raises(ValueError, match='not ParaX'):
        stage_adapters(plain, 2)
    parax = tiny_parax_swin(sites=['post_attn'])
    with pytest.raises(ValueError, match=r"sit at \['post_attn'\]"):
        stage_adapters(parax, 2)
    with pytest.raises(ValueError, match='stage 4 does not exist'):
        stage_adapters(parax, 4, 'post_attn')
    # CKA falls back to the blocks of a model without adapters
    kind, layers = stage_layers(plain, 2)
    assert kind == 'blocks' and [n for n, _ in layers] == ['b0', 'b1']
    feats = collect_features(plain.eval(), kind, layers,
                             [torch.randn(1, 3, 64, 64)] * 2, pool=2)
    assert [tuple(f.shape) for f in feats] == [(2, 64 * 4)] * 2


def test_normalizer_is_the_data_preprocessor(demo):
    bgr = np.random.default_rng(1).integers(0, 256, (64, 64, 3),
                                            dtype=np.uint8)
    theirs = demo['model'].data_preprocessor(
        {'inputs': [torch.from_numpy(bgr).permute(2, 0, 1)]},
        False)['inputs']
    assert torch.allclose(Normalizer(demo['cfg'])(bgr), theirs)


# -- checkpoints --------------------------------------------------------------
def test_strict_and_peft_checkpoints(demo, tmp_path):
    cfg = demo['cfg']
    model = build_model(cfg, demo['ckpt'])
    state = demo['model'].state_dict()
    assert all(torch.equal(v, state[k])
               for k, v in model.state_dict().items())

    bad = dict(state)
    key = next(k for k in bad if 'adapter2' in k)
    bad.pop(key)
    bad['decode_head.extra.weight'] = torch.zeros(1)
    path = str(tmp_path / 'bad.pth')
    torch.save({'state_dict': bad}, path)
    with pytest.raises(CheckpointMismatchError) as error:
        load_checkpoint_strict(model, cfg, path)
    assert key in str(error.value) and 'decode_head.extra.weight' in str(
        error.value)
    # the message names the config
    assert f'does not fit the model of {cfg.filename}:' in str(error.value)

    # a PEFT checkpoint loads over the config's pretrained backbone
    pretrained = build_model(cfg, 'pretrained')
    peft_path = str(tmp_path / 'peft.safetensors')
    save_peft_checkpoint(pretrained, peft_path, cfg)
    again = build_model(cfg, peft_path)
    expected = pretrained.state_dict()
    assert all(torch.equal(v, expected[k])
               for k, v in again.state_dict().items())
    # ... with the method settings it records
    other = copy.deepcopy(cfg)
    width = cfg.model.backbone.peft.hidden_dim
    other.model.backbone.peft.hidden_dim = width + 1
    with pytest.raises(CheckpointMismatchError,
                       match='other method settings') as error:
        build_model(other, peft_path)
    assert f'peft.hidden_dim: file {width} vs config {width + 1}' \
        in str(error.value)
    # ... and only over the backbone it was trained on
    save_peft_checkpoint(model, peft_path)  # a random backbone
    with pytest.raises(CheckpointMismatchError,
                       match='another pretrained') as error:
        build_model(cfg, peft_path)
    assert f'than that of {cfg.filename} (' in str(error.value)


# -- (d) the CLIs end to end --------------------------------------------------
def png_ok(path):
    with open(path, 'rb') as f:
        return f.read(8) == PNG


@pytest.mark.e2e
def test_expert_activations_cli(demo, tmp_path):
    out = tmp_path / 'experts'
    check_ok(run_tool('analysis/expert_activations.py', CFG, demo['ckpt'],
                      '--images', demo['images'], '--all-groups',
                      '--out-dir', out, cwd=tmp_path, env=ONE_THREAD))
    gates = np.load(out / 'experts_per_image.npz')['gates']
    assert gates.shape == (4, 2, 5, 2)  # images, blocks, groups, experts
    assert np.allclose(gates.sum(-1), 1.0, atol=1e-5)
    with open(out / 'experts_mean.json') as f:
        info = json.load(f)
    assert info['stage'] == 2 and info['site'] == 'post_mlp'
    assert np.allclose(info['mean'], gates.mean(0), atol=1e-6)
    assert png_ok(out / 'experts_mean.png')
    assert png_ok(out / 'experts_per_image.png')


@pytest.mark.e2e
def test_erf_cli(demo, tmp_path):
    out = tmp_path / 'erf'
    check_ok(run_tool('analysis/erf.py', CFG, demo['ckpt'], CFG, 'pretrained',
                      '--labels', 'trained', 'pretrained', '--images',
                      demo['images'], '--max-images', 2, '--out-dir', out,
                      '--cfg-options', pretrained_option(demo['pretrained']),
                      cwd=tmp_path, env=ONE_THREAD))
    data = np.load(out / 'erf.npz')
    assert data['erf'].shape == (2, 64, 64)
    assert (data['erf'].max(axis=(1, 2)) > 1e-3).all()  # not rounding noise
    assert list(data['labels']) == ['trained', 'pretrained']
    with open(out / 'erf.json') as f:
        info = json.load(f)
    assert info['num_images'] == 2 and len(info['models']) == 2
    ratio = info['models'][0]['raw']['0.5']['area_ratio']
    assert 0 < ratio <= 1
    assert png_ok(out / 'erf.png')


@pytest.mark.e2e
def test_cka_cli(demo, tmp_path):
    out = tmp_path / 'cka'
    check_ok(run_tool('analysis/cka.py', CFG, demo['ckpt'], CFG,
                      '--random-weights', '--stage', 2, '--images',
                      demo['images'], '--out-dir', out, cwd=tmp_path,
                      env=ONE_THREAD))
    data = np.load(out / 'cka.npz')
    for i in range(2):
        matrix = data[f'cka_{i}']
        assert matrix.shape == (4, 4)  # 2 blocks x (post_attn, post_mlp)
        assert np.allclose(np.diag(matrix), 1.0)
    assert list(data['layers_0']) == [
        'b0.post_attn', 'b0.post_mlp', 'b1.post_attn', 'b1.post_mlp']
    with open(out / 'cka.json') as f:
        info = json.load(f)
    assert info['models'][0]['layers_kind'] == 'adapters'
    assert png_ok(out / 'cka.png')


@pytest.mark.e2e
def test_cka_blocks_in_process(demo, tmp_path):
    results = tool('cka')([
        CFG, demo['ckpt'], '--blocks', '--all-stages', '--pool', '2',
        '--images', demo['images'], '--max-images', '3', '--out-dir',
        str(tmp_path)
    ])
    assert results[0]['layers'] == [f's{i}.b{j}' for i in range(4)
                                    for j in range(2)]
    assert results[0]['features'][0] == 16 * 4
    assert png_ok(tmp_path / 'cka.png')


# -- (e) clear errors ---------------------------------------------------------
@pytest.mark.e2e
def test_errors(demo, tmp_path):
    empty = tmp_path / 'empty'
    (empty / 'sub').mkdir(parents=True)
    (empty / 'notes.txt').write_text('no image')
    with pytest.raises(FileNotFoundError, match=r"no images .*\['sub'\]"):
        list_images(str(empty))
    with pytest.raises(FileNotFoundError, match='no images'):
        tool('erf')([CFG, demo['ckpt'], '--images', str(empty),
                     '--out-dir', str(tmp_path / 'o')])
    with pytest.raises(ValueError, match='--random-weights'):
        tool('erf')([CFG, '--images', demo['images'], '--out-dir',
                     str(tmp_path / 'o')])
    with pytest.raises(ValueError, match='no checkpoint given'):
        parse_model_specs([CFG, CFG, demo['ckpt']])
    with pytest.raises(FileNotFoundError, match='missing.pth does not exist'):
        tool('cka')([CFG, str(tmp_path / 'missing.pth'), '--images',
                     demo['images'], '--out-dir', str(tmp_path / 'o')])
    with pytest.raises(ValueError, match='not ParaX'):
        tool('expert_activations')([
            CFG, 'pretrained', '--images', demo['images'], '--out-dir',
            str(tmp_path / 'o'), '--cfg-options', 'model.backbone.peft=None',
            pretrained_option(demo['pretrained'])
        ])
    with pytest.raises(CheckpointMismatchError, match='pretrained backbone'):
        tool('expert_activations')([
            CFG, 'pretrained', '--images', demo['images'], '--out-dir',
            str(tmp_path / 'o'), '--cfg-options',
            'model.backbone.init_cfg=None'
        ])
    with pytest.raises(FileNotFoundError, match='config .* does not exist'):
        load_config(str(tmp_path / 'nope.py'))
