"""Table 4 (MAE ViT-B/16 classification): the data writers and converters,
the dataset, runtime and schedule bases, the configs of every method, and a
tiny ParaX ViT through tools/train.py and tools/test.py."""
import glob
import importlib.util
import json
import math
import os.path as osp
import pickle
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import ParamSchedulerHook
from mmengine.optim import OptimWrapper
from mmengine.registry import PARAM_SCHEDULERS, init_default_scope
from PIL import Image

from mmparax.apis.peft_checkpoint import load_safetensors
from mmparax.testing import (
    check_ok,
    check_weights_only,
    run_tool,
    write_checkpoint,
)
from mmparax.testing.classification import (
    CIFAR100_SUPERCLASSES,
    UncheckedCIFAR100,
    make_cifar100,
    make_food101_raw,
    make_image_folders,
    make_imagenet_r_raw,
    make_svhn_mat,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / 'configs'
CONVERTERS = ROOT / 'tools' / 'dataset_converters'
# data set token -> (title, classes, drop path, weight decay, dataset base)
SETS = {
    'cifar100': ('CIFAR-100', 100, 0., 0., 'cifar100_bs128_224.py'),
    'svhn': ('SVHN', 10, 0., 0., 'svhn_bs128_224.py'),
    'food101': ('Food-101', 101, 0.05, 0., 'food101_bs128_224.py'),
    'imagenet-r': ('ImageNet-R', 200, 0.1, 1e-4, 'imagenet-r_bs128_224.py'),
}
HEAD_1000 = 768 * 1000 + 1000
# method folder -> (peft, exact trainable backbone parameters, paper # P)
METHODS = {
    'full': (None, 85_798_656, 86.0),
    'vpt': (dict(type='VPT', num_tokens=10), 92_160, 0.1),
    'lora': (dict(type='LoRA', rank=85, alpha=1, targets=['qkv:qv']),
             3_133_440, 3.9),
    'adaptformer': (dict(type='AdaptFormer', hidden_dim=192, scale=0.1,
                         dropout=0.1), 3_550_464, 4.3),
    'repadapter': (dict(type='RepAdapter', hidden_dim=126, groups=2,
                        scale=1.0, dropout=0.1), 3_505_104, 4.3),
    'lorand': (dict(type='LoRand', hidden_dim=128, num_branches=9,
                    branch_rank=8), 3_145_728, 3.9),
    'snell': (dict(type='SNELL', rank=18, sparsity=0.5, dropout=0.1,
                   drop_path=0.1), 2_985_984, 3.7),
    'mona': (dict(type='Mona', hidden_dim=75), 3_150_360, 3.9),
    'parax': (dict(type='ParaX', hidden_dim=128, kernel_sizes=(3, 5, 7),
                   router_hidden=16, sites=('post_mlp', )), 3_098_340, 3.9),
}
# the paper's # P counts the prompts alone for VPT, and the method plus a
# 1000-class head for the other PEFT rows (README); SNELL has no exact fit
COUNTED_WITH_HEAD = {'lora', 'adaptformer', 'repadapter', 'lorand', 'snell',
                     'mona', 'parax'}
NO_EXACT_FIT = {'full', 'snell'}
TOP1 = {  # Table 4: CIFAR-100, SVHN, Food-101, ImageNet-R
    'full': (85.9, 97.7, 90.1, 64.0),
    'vpt': (82.4, 94.0, 83.0, 65.6),
    'lora': (86.2, 97.1, 87.8, 69.1),
    'adaptformer': (86.2, 97.0, 87.9, 69.5),
    'lorand': (86.1, 96.9, 87.9, 69.7),
    'repadapter': (87.4, 96.7, 88.5, 69.9),
    'snell': (86.5, 97.1, 89.5, 71.9),
    'mona': (87.0, 97.3, 89.6, 72.7),
    'parax': (87.7, 97.7, 89.7, 74.3),
}


def _name(method, token):
    return f'{method}/{method}_vit-b-mae_8xb128-100e_{token}.py'


ALL = sorted(_name(m, t) for m in METHODS for t in SETS)


def _converter(name):
    spec = importlib.util.spec_from_file_location(
        f'mmparax_converter_{name}', CONVERTERS / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _dataset(cfg, **overrides):
    from mmpretrain.registry import DATASETS
    init_default_scope('mmpretrain')
    return DATASETS.build(dict(cfg, **overrides))


def _infos(dataset):
    """The data infos (img_path, gt_label) of a built dataset."""
    return [dataset.get_data_info(i) for i in range(len(dataset))]


def _base(name):
    return Config.fromfile(CONFIGS / '_base_' / 'datasets' / name)


# -- writers and mmpretrain's readers ----------------------------------------


def test_cifar100_writer_is_read_by_mmpretrains_cifar100(
        tmp_path, monkeypatch):
    """The official python layout: mmpretrain's CIFAR100 (its MD5 checks of
    the official files switched off) reads the images, labels and names."""
    from mmpretrain.datasets import CIFAR100
    root = make_cifar100(str(tmp_path / 'cifar100'), num_train=30,
                         num_test=12, seed=1)
    folder = tmp_path / 'cifar100' / 'cifar-100-python'
    assert sorted(p.name for p in folder.iterdir()) == ['meta', 'test',
                                                        'train']
    with open(folder / 'train', 'rb') as f:
        entry = pickle.load(f, encoding='latin1')
    assert set(entry) == {'data', 'fine_labels', 'coarse_labels',
                          'filenames', 'batch_label'}
    assert entry['data'].dtype == np.uint8
    assert entry['data'].shape == (30, 3072)
    with open(folder / 'meta', 'rb') as f:
        meta = pickle.load(f, encoding='latin1')
    assert len(meta['fine_label_names']) == 100
    assert len(meta['coarse_label_names']) == 20
    fine = meta['fine_label_names']
    for label, coarse in zip(entry['fine_labels'], entry['coarse_labels']):
        assert fine[label] in CIFAR100_SUPERCLASSES[coarse][1]

    monkeypatch.setattr(CIFAR100, 'train_list', [['train', None]])
    monkeypatch.setattr(CIFAR100, 'test_list', [['test', None]])
    monkeypatch.setattr(CIFAR100, 'meta', dict(CIFAR100.meta, md5=None))
    cfg = _base('cifar100_bs128_224.py')
    for split, num in (('train', 30), ('test', 12)):
        loader = cfg[f'{split if split == "train" else "val"}_dataloader']
        dataset = _dataset(loader.dataset, data_root=root, download=False,
                           pipeline=[])
        assert dataset.split == split and len(dataset) == num
        with open(folder / split, 'rb') as f:
            raw = pickle.load(f, encoding='latin1')
        for i in (0, num - 1):
            item = dataset[i]
            assert item['gt_label'] == raw['fine_labels'][i]
            expected = raw['data'][i].reshape(3, 32, 32).transpose(1, 2, 0)
            assert np.array_equal(item['img'], expected)  # RGB, HWC
        assert dataset.metainfo['classes'] == tuple(fine)
    unchecked = UncheckedCIFAR100(data_root=root, split='test', pipeline=[])
    assert len(unchecked) == 12 and not unchecked.download


def test_cifar100_images_are_learnable(tmp_path):
    """Images of one class are closer to each other than to other classes:
    a nearest-class-mean rule labels every test image."""
    root = make_cifar100(str(tmp_path / 'c'), num_train=200, num_test=100,
                         num_classes=10)
    train = UncheckedCIFAR100(data_root=root, split='train', pipeline=[])
    test = UncheckedCIFAR100(data_root=root, split='test', pipeline=[])

    def arrays(dataset):
        items = [dataset[i] for i in range(len(dataset))]
        return (np.stack([i['img'].astype(np.float32) for i in items]),
                np.array([i['gt_label'] for i in items]))

    x, y = arrays(train)
    means = np.stack([x[y == c].mean(0) for c in range(10)])
    xt, yt = arrays(test)
    dist = ((xt[:, None] - means[None])**2).sum(axis=(2, 3, 4))
    assert (dist.argmin(1) == yt).all()


def test_image_folders_are_read_by_custom_dataset(tmp_path):
    root = make_image_folders(
        str(tmp_path / 'folders'), classes=['b', 'a', 'c'],
        splits={'train': 3, 'test': 2}, img_size=(20, 24), ext='.jpg')
    cfg = _base('food101_bs128_224.py')
    dataset = _dataset(cfg.train_dataloader.dataset, data_root=root,
                       pipeline=[])
    assert dataset.metainfo['classes'] == ('a', 'b', 'c')
    assert len(dataset) == 9
    for info in _infos(dataset):
        folder = Path(info['img_path']).parent.name
        assert info['gt_label'] == 'abc'.index(folder)


# -- converters ---------------------------------------------------------------


@pytest.mark.e2e
def test_svhn_converter_writes_what_the_config_reads(tmp_path):
    from scipy.io import loadmat
    raw = make_svhn_mat(str(tmp_path / 'raw'), num_train=30, num_test=12)
    out = tmp_path / 'svhn'
    _converter('svhn').main([raw, '-o', str(out)])
    cfg = _base('svhn_bs128_224.py')
    for split, loader in (('train', cfg.train_dataloader),
                          ('test', cfg.test_dataloader)):
        mat = loadmat(osp.join(raw, f'{split}_32x32.mat'))
        dataset = _dataset(loader.dataset, data_root=str(out), pipeline=[])
        assert dataset.metainfo['classes'] == tuple(str(d) for d in range(10))
        assert len(dataset) == len(mat['y'])
        for info in _infos(dataset):
            index = int(Path(info['img_path']).stem)
            digit = int(mat['y'][index, 0]) % 10  # 10 is the digit 0
            assert info['gt_label'] == digit
            image = np.asarray(Image.open(info['img_path']))
            assert np.array_equal(image, mat['X'][..., index])


@pytest.mark.e2e
def test_svhn_converter_refuses_other_files(tmp_path):
    from scipy.io import savemat
    (tmp_path / 'raw').mkdir()
    for split in ('train', 'test'):
        savemat(str(tmp_path / 'raw' / f'{split}_32x32.mat'),
                dict(X=np.zeros((32, 32, 3, 2), np.uint8),
                     y=np.array([[0], [3]], np.uint8)))
    with pytest.raises(ValueError, match='labels must be 1-10'):
        _converter('svhn').main([str(tmp_path / 'raw'), '-o',
                                 str(tmp_path / 'out')])


def _listing(root):
    return sorted(
        str(Path(p).relative_to(root))
        for p in glob.glob(str(Path(root) / '*' / '*' / '*')))


@pytest.mark.e2e
def test_imagenet_r_converter_split(tmp_path):
    converter = _converter('imagenet_r')
    wnids = ('n01443537', 'n01484850', 'n01494475', 'n01496331',
             'n01498041')
    tar = make_imagenet_r_raw(str(tmp_path / 'raw'), wnids=wnids,
                              per_class=10)
    folder = make_imagenet_r_raw(str(tmp_path / 'raw2'), wnids=wnids,
                                 per_class=10, archive=False)
    converter.main([tar, '-o', str(tmp_path / 'a'), '--seed', '0'])
    converter.main([folder, '-o', str(tmp_path / 'b'), '--seed', '0',
                    '--link', 'symlink'])
    converter.main([tar, '-o', str(tmp_path / 'c'), '--seed', '1'])
    # deterministic: the archive and the folder give the same split
    a, b, c = (_listing(tmp_path / x) for x in 'abc')
    assert a == b and a != c
    for name in ('train.txt', 'test.txt'):
        assert (tmp_path / 'a' / name).read_text() == \
            (tmp_path / 'b' / name).read_text()
    assert sum(x.startswith('train/') for x in a) == 40
    assert sum(x.startswith('test/') for x in a) == 10
    assert not any(x.endswith('README.txt') for x in a)

    cfg = _base('imagenet-r_bs128_224.py')
    for split, loader, num in (('train', cfg.train_dataloader, 40),
                               ('test', cfg.test_dataloader, 10)):
        dataset = _dataset(loader.dataset, data_root=str(tmp_path / 'a'),
                           pipeline=[])
        # every class folder exists in both splits: labels agree
        assert dataset.metainfo['classes'] == wnids
        assert len(dataset) == num
        listed = {}
        for line in (tmp_path / 'a' / f'{split}.txt').read_text().split(
                '\n')[:-1]:
            path, label = line.rsplit(' ', 1)
            listed[path] = int(label)
        for info in _infos(dataset):
            rel = '/'.join(Path(info['img_path']).parts[-2:])
            assert listed[rel] == info['gt_label'] == wnids.index(
                rel.split('/')[0])


def test_imagenet_r_split_sizes():
    """30,000 images split 24,000 / 6,000, the same for the same seed."""
    split_keys = _converter('imagenet_r').split_keys
    keys = [f'n{c:08d}/art_{i}.jpg' for c in range(200) for i in range(150)]
    train, test = split_keys(keys, seed=0, train_ratio=0.8)
    assert (len(train), len(test)) == (24000, 6000)
    assert not set(train) & set(test)
    assert split_keys(reversed(keys), 0, 0.8) == (train, test)
    with pytest.raises(ValueError, match='train-ratio'):
        split_keys(keys, 0, 1.0)


@pytest.mark.slow
@pytest.mark.parametrize('archive', [True, False])
def test_food101_converter_writes_what_the_config_reads(tmp_path, archive):
    classes = ('baklava', 'apple_pie', 'beignets')
    src = make_food101_raw(str(tmp_path / 'raw'), classes=classes,
                           num_train=3, num_test=2, archive=archive)
    out = tmp_path / 'food'
    counts = _converter('food101').convert(
        src, str(out), link='copy' if archive else 'symlink')
    assert counts == dict(classes=3, train=9, test=6)
    cfg = _base('food101_bs128_224.py')
    meta = Path(src).parent if archive else Path(src)
    for split, loader in (('train', cfg.train_dataloader),
                          ('test', cfg.test_dataloader)):
        dataset = _dataset(loader.dataset, data_root=str(out), pipeline=[])
        assert dataset.metainfo['classes'] == tuple(sorted(classes))
        paths = sorted('/'.join(Path(i['img_path']).parts[-2:])[:-4]
                       for i in _infos(dataset))
        if not archive:
            listed = (meta / 'meta' / f'{split}.txt').read_text().split()
            assert paths == sorted(listed)
        assert len(paths) == (9 if split == 'train' else 6)


def test_food101_converter_reports_missing_images(tmp_path):
    src = make_food101_raw(str(tmp_path / 'raw'), archive=False)
    next(Path(src, 'images').rglob('*.jpg')).unlink()
    with pytest.raises(FileNotFoundError, match='1 images listed'):
        _converter('food101').convert(src, str(tmp_path / 'out'))


# -- the dataset bases --------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize('token', sorted(SETS))
def test_dataset_base_pipelines(token, tmp_path):
    """Training crops and test images are 224x224; the test pipeline is
    resize of the short side to 256 then a center crop."""
    title, classes, _, _, base = SETS[token]
    cfg = _base(base)
    assert cfg.data_preprocessor.num_classes == classes
    assert cfg.data_preprocessor.mean == [123.675, 116.28, 103.53]
    assert cfg.data_preprocessor.to_rgb == (token != 'cifar100')
    assert cfg.train_dataloader.batch_size == 128
    assert cfg.train_dataloader.drop_last
    assert cfg.val_evaluator == dict(type='Accuracy', topk=(1, ))
    if token == 'cifar100':
        root = make_cifar100(str(tmp_path / 'd'), num_train=2, num_test=2)
        dataset_cfg = dict(type='UncheckedCIFAR100', data_root=root)
    else:
        root = make_image_folders(str(tmp_path / 'd'), ['x', 'y'],
                                  {'train': 1, 'test': 1}, (48, 64))
        dataset_cfg = dict(data_root=root)
    for loader in (cfg.train_dataloader, cfg.test_dataloader):
        dataset = _dataset(loader.dataset, **dataset_cfg)
        sample = dataset[0]
        assert tuple(sample['inputs'].shape) == (3, 224, 224)
    test = [t.type for t in cfg.test_dataloader.dataset.pipeline]
    assert test[-3:] == ['ResizeEdge', 'CenterCrop', 'PackInputs']
    resize = cfg.test_dataloader.dataset.pipeline[-3]
    assert (resize.scale, resize.edge, resize.interpolation) == \
        (256, 'short', 'bicubic')


# -- configs ------------------------------------------------------------------


def test_every_row_of_table_4_has_a_config():
    found = sorted(
        str(p.relative_to(CONFIGS))
        for p in CONFIGS.glob('*/*_vit-b-mae_8xb128-100e_*.py'))
    assert found == ALL


@pytest.mark.slow
@pytest.mark.parametrize('name', ALL)
def test_config_recipe(name):
    method, stem = name.split('/')
    token = stem.rsplit('_', 1)[1][:-3]
    title, classes, drop_path, decay, base = SETS[token]
    peft, _, _ = METHODS[method]
    cfg = Config.fromfile(CONFIGS / name)
    assert cfg.default_scope == 'mmpretrain'
    model = cfg.model
    assert model.type == 'ImageClassifier'
    backbone = model.backbone
    assert (backbone.type, backbone.arch, backbone.patch_size,
            backbone.out_type, backbone.final_norm) == \
        ('mmparax.ViT', 'base', 16, 'cls_token', True)
    assert backbone.drop_path_rate == drop_path
    assert backbone.init_cfg == dict(
        type='Pretrained', checkpoint='pretrain/mae_pretrain_vit_base.pth')
    assert backbone.get('peft') == peft
    assert model.neck == dict(type='ClsBatchNormNeck', input_features=768,
                              affine=False, eps=1e-6)
    assert (model.head.type, model.head.in_channels,
            model.head.num_classes) == ('LinearClsHead', 768, classes)
    assert model.head.init_cfg == dict(type='TruncNormal', layer='Linear',
                                       std=0.01)
    assert cfg.train_dataloader.batch_size == 128  # x 8 GPUs = 1024
    optim = cfg.optim_wrapper
    assert optim.type == 'AmpOptimWrapper'
    assert optim.optimizer == dict(type='SGD', lr=0.4, momentum=0.9,
                                   weight_decay=decay)
    assert optim.constructor == 'mmparax.PEFTOptimWrapperConstructor'
    assert cfg.train_cfg == dict(by_epoch=True, max_epochs=100,
                                 val_interval=1)
    warmup, cosine = cfg.param_scheduler
    assert (warmup.type, warmup.begin, warmup.end) == ('LinearLR', 0, 20)
    assert (cosine.type, cosine.begin, cosine.end, cosine.T_max,
            cosine.eta_min) == ('CosineAnnealingLR', 20, 100, 80, 0.)
    hooks = [h.type for h in cfg.get('custom_hooks', [])]
    if peft is None:
        assert 'head_init' not in cfg and not hooks  # init_cfg
    else:
        # the reference re-initialises the head (truncated normal 0.01)
        assert cfg.head_init == 'init_cfg'
        assert hooks == ['mmparax.PEFTCheckHook', 'mmparax.PEFTCheckpointHook']


@pytest.fixture(scope='module')
def counts():
    """Trainable backbone parameters of each method's CIFAR-100 config (the
    backbone is the same on every set: test_config_recipe)."""
    from mmparax.utils import build_config_model
    out = {}
    for method in METHODS:
        cfg = Config.fromfile(CONFIGS / _name(method, 'cifar100'))
        backbone = build_config_model(cfg, backbone_only=True)
        assert type(backbone).__name__ == 'ViT'
        out[method] = (
            sum(p.numel() for p in backbone.parameters() if p.requires_grad),
            sum(p.numel() for p in backbone.parameters()))
        del backbone
    return out


@pytest.mark.slow
@pytest.mark.parametrize('method', sorted(METHODS))
def test_trainable_counts(counts, method):
    """Exact counts; the paper's # P printed at 0.1M by the method plus a
    1000-class head (VPT: the prompts alone), except SNELL (no rank fits)
    and full fine-tuning (its 86.0M is neither)."""
    _, exact, paper = METHODS[method]
    trainable, total = counts[method]
    assert trainable == exact
    if method == 'full':
        assert trainable == total
    else:
        assert total == 85_798_656 + trainable  # the frozen MAE ViT-B
    counted = trainable + (HEAD_1000 if method in COUNTED_WITH_HEAD else 0)
    fits = f'{counted / 1e6:.1f}' == f'{paper:.1f}'
    assert fits == (method not in NO_EXACT_FIT)
    if method == 'snell':  # rank 18: 3.755M; rank 17 would print 3.6M
        assert f'{(trainable - 165_888 + HEAD_1000) / 1e6:.1f}' == '3.6'


@pytest.mark.parametrize('method', sorted(METHODS))
def test_metafile_entries(method):
    import yaml
    meta = yaml.safe_load((CONFIGS / method / 'metafile.yml').read_text())
    entries = {m['Name']: m for m in meta['Models']}
    readme = (CONFIGS / method / 'README.md').read_text()
    for (token, (title, *_)), top1 in zip(SETS.items(), TOP1[method]):
        name = Path(_name(method, token)).stem
        entry = entries[name]
        assert entry['Config'] == f'configs/{_name(method, token)}'
        assert entry['Metadata']['Paper Table'] == '4'
        assert entry['Metadata']['Training Data'] == title
        assert entry['Metadata']['Trainable Parameters'] == \
            f'{METHODS[method][2]}M'
        (result, ) = entry['Results']
        assert (result['Task'], result['Dataset']) == \
            ('Image Classification', title)
        assert result['Metrics'] == {'Top 1 Accuracy': top1}
        assert name + '.py' in readme


def test_head_init_of_the_reference(tmp_path):
    """head_init='init_cfg' gives the head the reference's truncated normal
    (std 0.01) with a zero bias; the constructor's would be nn.Linear's."""
    from mmengine.registry import MODELS

    from mmparax.apis.runner import init_model_weights
    cfg = Config.fromfile(CONFIGS / _name('parax', 'cifar100'))
    init_default_scope('mmpretrain')
    model_cfg = cfg.model.copy()
    model_cfg.backbone = dict(model_cfg.backbone,
                              **_tiny_backbone(delete=False), init_cfg=None)
    model_cfg.neck = dict(model_cfg.neck, input_features=32)
    model_cfg.head = dict(model_cfg.head, in_channels=32)
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    init_model_weights(model, cfg.head_init)
    fc = model.head.fc
    assert fc.weight.std().item() == pytest.approx(0.01, rel=0.1)
    assert torch.equal(fc.bias, torch.zeros_like(fc.bias))
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    init_model_weights(model, 'constructor')
    assert model.head.fc.bias.abs().sum() > 0  # nn.Linear's uniform init


def test_lr_curve_against_the_reference():
    """The schedule base against the reference's util/lr_sched.py at a
    short epoch: the same cosine, a warm-up within lr / (20 L)."""
    cfg = Config.fromfile(CONFIGS / _name('parax', 'cifar100'))
    epoch_len, epochs, warmup = 7, 100, 20
    base_lr = cfg.optim_wrapper.optimizer.lr
    wrapper = OptimWrapper(
        torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base_lr))
    schedulers = [
        PARAM_SCHEDULERS.build(dict(s, optimizer=wrapper),
                               default_args=dict(epoch_length=epoch_len))
        for s in cfg.param_scheduler
    ]
    runner = SimpleNamespace(param_schedulers=schedulers)
    hook, group = ParamSchedulerHook(), wrapper.optimizer.param_groups[0]
    for i in range(epochs * epoch_len):
        epoch = i / epoch_len
        if epoch < warmup:
            ref = base_lr * epoch / warmup
            # at most one warm-up step apart (float rounding allowed)
            assert abs(group['lr'] - ref) <= \
                base_lr / (warmup * epoch_len) * (1 + 1e-9)
        else:
            ref = base_lr * 0.5 * (1 + math.cos(
                math.pi * (epoch - warmup) / (epochs - warmup)))
            assert group['lr'] == pytest.approx(ref, rel=1e-9, abs=1e-12)
        hook.after_train_iter(runner, i)


@pytest.mark.e2e
def test_count_tool_reads_the_papers_figure():
    proc = run_tool('analysis/count_params.py',
                    CONFIGS / _name('parax', 'svhn'), '--json', '--paper',
                    cwd=ROOT)
    check_ok(proc)
    result = json.loads(proc.stdout)
    assert result['trainable_backbone'] == 3_098_340
    assert result['trainable_total'] == 3_098_340 + 768 * 10 + 10
    assert result['paper_trainable_backbone_m'] == 3.9


# -- end to end ---------------------------------------------------------------


def _tiny_backbone(delete=True):
    """The sizes of ``mmparax.testing.tiny_vit_kwargs`` (``_delete_`` for
    a config inheriting ``arch='base'``)."""
    from mmparax.testing.vit import tiny_vit_kwargs
    kwargs = tiny_vit_kwargs()
    arch = dict(kwargs['arch'], _delete_=True) if delete else kwargs['arch']
    return dict(arch=arch,
                img_size=kwargs['img_size'],
                patch_size=kwargs['patch_size'])


TINY = """_base_ = [{base!r}]
# The CIFAR-100 ParaX recipe at a tiny size: a 4-block ViT of width 32 at
# 32x32, hidden_dim 8, router width 4, on make_cifar100 data
# (UncheckedCIFAR100: synthetic files cannot match the MD5 sums of the
# official ones).
custom_imports = dict(
    imports=['mmparax', 'mmparax.testing.classification'],
    allow_failed_imports=False)
model = dict(
    backbone=dict({backbone}, peft=dict(hidden_dim=8, router_hidden=4)),
    neck=dict(input_features=32),
    head=dict(in_channels=32))
train_pipeline = [
    dict(type='RandomResizedCrop', scale=32, backend='pillow',
         interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='ResizeEdge', scale=36, edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=32),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=16, num_workers=0, persistent_workers=False,
    dataset=dict(type='UncheckedCIFAR100', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=16, num_workers=0, persistent_workers=False,
    dataset=dict(type='UncheckedCIFAR100', pipeline=test_pipeline))
test_dataloader = val_dataloader
"""


@pytest.mark.e2e
def test_tiny_parax_vit_train_then_test(tmp_path):
    """Two epochs of 4 iterations through tools/train.py from an MAE-layout
    checkpoint, then tools/test.py on the full and the PEFT checkpoints."""
    from mmparax.testing.vit import tiny_vit_state_dict, vit_to_mae
    data_root = make_cifar100(str(tmp_path / 'cifar100'), num_train=64,
                              num_test=32, num_classes=10)
    pretrained = tiny_vit_state_dict(seed=0, out_type='cls_token',
                                     out_indices=-1)
    checkpoint = write_checkpoint(str(tmp_path / 'mae_pretrain_tiny.pth'),
                                  vit_to_mae(pretrained), wrapper='model')
    config = tmp_path / 'tiny_parax_vit_cifar100.py'
    config.write_text(TINY.format(
        base=str(CONFIGS / _name('parax', 'cifar100')),
        backbone=', '.join(f'{k}={v!r}' for k, v in _tiny_backbone().items())))
    options = [
        '--cfg-options', 'optim_wrapper.type=OptimWrapper',  # fp32, CPU
        'train_cfg.max_epochs=2', 'default_hooks.logger.interval=1',
        f'model.backbone.init_cfg.checkpoint={checkpoint}',
        f'train_dataloader.dataset.data_root={data_root}',
        f'val_dataloader.dataset.data_root={data_root}',
        f'test_dataloader.dataset.data_root={data_root}'
    ]
    work_dir = tmp_path / 'work'
    proc = run_tool('train.py', config, '--work-dir', work_dir, *options,
                    cwd=tmp_path)
    check_ok(proc)
    log = proc.stdout + proc.stderr
    assert 'converting a timm / Google / MAE-layout checkpoint' in log
    assert 'trainable params' in log  # PEFTCheckHook passed
    assert 'Epoch(train) [2][4/4]' in log
    check_weights_only(work_dir)  # no trust needed to resume
    assert re.search(r'Epoch\(val\) \[2\]\[2/2\]\s+accuracy/top1', log)

    state = torch.load(work_dir / 'epoch_2.pth', map_location='cpu',
                       weights_only=False)['state_dict']
    for key, value in pretrained.items():  # the backbone stays frozen
        assert torch.equal(state['backbone.' + key], value), key
    assert any(k.startswith('backbone.expert_centers.') for k in state)
    peft = load_safetensors(
        str(work_dir / 'epoch_2_peft.safetensors'))['state_dict']
    assert 'head.fc.weight' in peft and 'neck.bn.running_mean' in peft
    assert not any('backbone.' + k in peft for k in pretrained)
    assert glob.glob(str(work_dir / 'best_accuracy_top1_epoch_*.pth'))

    for i, ckpt in enumerate(('epoch_2.pth', 'epoch_2_peft.safetensors')):
        test_dir = tmp_path / f'test{i}'
        proc = run_tool('test.py', config, work_dir / ckpt, '--work-dir',
                        test_dir, *options, cwd=tmp_path)
        check_ok(proc)
        assert 'accuracy/top1' in proc.stdout + proc.stderr
        (metrics_file, ) = glob.glob(str(test_dir / '*' / '*.json'))
        with open(metrics_file) as f:
            top1 = json.load(f)['accuracy/top1']
        assert math.isfinite(top1) and 0.0 <= top1 <= 100.0
        if i == 0:
            full_top1 = top1
    assert top1 == full_top1  # the PEFT file evaluates the same model

    proc = run_tool('test.py', config, work_dir / 'epoch_2.pth',
                    '--work-dir', tmp_path / 'test2', '--show-dir', 'painted',
                    *options, 'default_hooks.visualization.interval=8',
                    cwd=tmp_path)
    check_ok(proc)
    assert len(glob.glob(str(tmp_path / 'painted' / '*.png'))) == 4
