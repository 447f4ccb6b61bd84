"""Bad data names its file: label values beyond the classes, a damaged
label PNG, an empty folder; the evaluation warning; the dataset check of
tools/misc/check_dataset.py; ``--cfg-options data_root=PATH``."""
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.registry import DATASETS, init_default_scope
from mmengine.structures import PixelData
from mmseg.evaluation import IoUMetric as MMSegIoUMetric
from PIL import Image

from mmparax.apis.runtime import load_config
from mmparax.datasets import DataError, IoUMetric
from mmparax.datasets import metrics as metrics_module
from mmparax.testing import load_tool, make_ade20k

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TINY_CFG = osp.join(REPO, 'tests', 'configs',
                    'tiny_parax_swin_upernet_ade20k.py')
CHECK_TOOL = 'tools/misc/check_dataset.py CONFIG'


@pytest.fixture(scope='module')
def bad_data(tmp_path_factory):
    """A tiny ADE20K: training label 2 has 15 pixels of value 200 (199
    after reduce_zero_label, beyond the 150 classes), training label 3 is
    not a PNG, validation label 1 has 6 pixels of value 180."""
    root = make_ade20k(
        str(tmp_path_factory.mktemp('bad') / 'ade'),
        num_train=3,
        num_val=2,
        img_size=(32, 32),
        num_classes=4)
    ann = osp.join(root, 'annotations', 'training')
    out_of_range = osp.join(ann, 'ADE_train_00000002.png')
    labels = np.array(Image.open(out_of_range))
    labels[:3, :5] = 200
    Image.fromarray(labels).save(out_of_range)
    damaged = osp.join(ann, 'ADE_train_00000003.png')
    with open(damaged, 'wb') as f:
        f.write(b'<html>not a png</html>')
    val_label = osp.join(root, 'annotations', 'validation',
                         'ADE_val_00000001.png')
    labels = np.array(Image.open(val_label))
    labels[:2, :3] = 180
    Image.fromarray(labels).save(val_label)
    return dict(
        root=root,
        out_of_range=out_of_range,
        damaged=damaged,
        val_label=val_label)


def build(split, data_root):
    cfg = load_config(TINY_CFG, dict(data_root=data_root))
    init_default_scope('mmseg')
    return DATASETS.build(cfg[f'{split}_dataloader'].dataset)


def test_out_of_range_labels_stop_training_naming_the_file(bad_data):
    dataset = build('train', bad_data['root'])
    dataset[0]
    with pytest.raises(DataError) as info:
        dataset[1]
    message = str(info.value)
    assert bad_data['out_of_range'] in message
    assert '15 pixels with values 199 (the classes are 0-149, the ignore ' \
        'index 255) after reduce_zero_label (values 200 in the file)' \
        in message
    assert CHECK_TOOL in message


def test_damaged_label_names_the_file(bad_data):
    dataset = build('train', bad_data['root'])
    with pytest.raises(DataError) as info:
        dataset[2]
    message = str(info.value)
    assert f'seg_map_path={bad_data["damaged"]}' in message
    assert 'LoadAnnotations failed with UnidentifiedImageError' in message


def test_empty_folder_names_the_folder(tmp_path):
    for folder in ('images', 'annotations'):
        (tmp_path / folder / 'validation').mkdir(parents=True)
    with pytest.raises(DataError) as info:
        build('val', str(tmp_path))
    message = str(info.value)
    assert 'ADE20KDataset: no samples found in ' \
        f'img_path={tmp_path}/images/validation, ' \
        f'seg_map_path={tmp_path}/annotations/validation, ' \
        "img_suffix='.jpg', seg_map_suffix='.png'" in message
    assert 'need at least one array' not in message


def test_evaluation_warns_with_pixels_and_files(bad_data, monkeypatch):
    dataset = build('val', bad_data['root'])
    assert dataset.test_mode  # evaluation reads out-of-range labels
    ours, theirs = IoUMetric(), MMSegIoUMetric()
    for metric in (ours, theirs):
        metric.dataset_meta = dataset.metainfo
    for i in range(len(dataset)):
        sample = dataset[i]['data_samples']
        sample.pred_sem_seg = PixelData(
            data=torch.zeros_like(sample.gt_sem_seg.data))
        for metric in (ours, theirs):
            metric.process({}, [sample.to_dict()])
    logged = []
    monkeypatch.setattr(metrics_module, 'print_log',
                        lambda msg, **kw: logged.append(msg))
    assert ours.evaluate(len(dataset)) == theirs.evaluate(len(dataset))
    assert len(logged) == 1
    assert logged[0].startswith(
        '6 ground-truth pixels in 1 of 2 label files are neither a class '
        'nor the ignore index; the metric leaves them out. '
        f'{bad_data["val_label"]}: 6 pixels with values 179')


@pytest.mark.e2e
def test_check_dataset_lists_every_bad_file(bad_data, capsys):
    tool = load_tool('misc/check_dataset.py')
    code = tool.main([
        TINY_CFG, '--cfg-options', f'data_root={bad_data["root"]}',
        '--no-progress'
    ])
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert len(out) == 3
    assert out[0].startswith(f'ADE20KDataset: {bad_data["out_of_range"]} '
                             'has 15 pixels')
    assert f'seg_map_path={bad_data["damaged"]}' in out[1]
    assert out[2] == 'train: 2 of 3 samples have problems'
    # evaluation tolerates them, the check does not
    assert tool.main([
        TINY_CFG, '--split', 'val', '--cfg-options',
        f'data_root={bad_data["root"]}', '--no-progress'
    ]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == \
        'val: 1 of 2 samples have problems'


@pytest.mark.e2e
def test_check_dataset_of_a_good_split(tmp_path, capsys):
    root = make_ade20k(str(tmp_path), num_train=2, num_val=1, img_size=32)
    assert load_tool('misc/check_dataset.py').main([
        TINY_CFG, '--cfg-options', f'data_root={root}', '--no-progress'
    ]) == 0
    assert capsys.readouterr().out == \
        'train: all 2 samples read, labels in range\n'


@pytest.mark.parametrize('config, paths', [
    ('configs/parax/parax_swin-b_upernet_8xb2-160k_ade20k-512x512.py', {}),
    ('configs/parax/parax_swin-b_mask-rcnn_fpn_8xb2-1x_coco.py', {
        'val_evaluator.ann_file': 'annotations/instances_val2017.json'
    }),
    ('configs/parax/parax_swin-b_panoptic-fpn_8xb2-1x_coco-panoptic.py', {
        'val_evaluator.ann_file': 'annotations/panoptic_val2017.json',
        'test_evaluator.seg_prefix': 'annotations/panoptic_val2017'
    }),
])
def test_data_root_option_moves_every_path(config, paths):
    cfg = load_config(osp.join(REPO, config), dict(data_root='/data/x/'))
    for split in ('train', 'val', 'test'):
        assert cfg[f'{split}_dataloader'].dataset.data_root == '/data/x'
    for key, tail in paths.items():
        node = cfg
        for part in key.split('.'):
            node = node[part]
        assert node.rstrip('/') == f'/data/x/{tail}'


@pytest.mark.e2e
def test_train_tool_stops_at_out_of_range_labels(tmp_path):
    """tools/train.py on a config of the dataset bases: the error names the
    file, not the loss ('Target 199 is out of bounds')."""
    from mmparax.testing import (
        swin_to_microsoft,
        tiny_swin_state_dict,
        write_checkpoint,
    )
    root = make_ade20k(
        str(tmp_path / 'ade'), num_train=2, num_val=1, img_size=32,
        num_classes=4)
    for i in (1, 2):  # whichever the first batch reads
        bad = osp.join(root, 'annotations', 'training',
                       f'ADE_train_0000000{i}.png')
        labels = np.array(Image.open(bad))
        labels[0, 0] = 200
        Image.fromarray(labels).save(bad)
    pretrained = write_checkpoint(
        str(tmp_path / 'swin.pth'), swin_to_microsoft(tiny_swin_state_dict()))
    with pytest.raises(DataError, match='ADE_train_0000000[12].png has 1 '
                       'pixels with values 199'):
        load_tool('train.py').main([
            TINY_CFG, '--work-dir',
            str(tmp_path / 'work'), '--cfg-options', f'data_root={root}',
            f'model.backbone.init_cfg.checkpoint={pretrained}',
            'train_cfg.max_iters=1'
        ])


def test_coco_damaged_image_and_empty_annotations(tmp_path):
    """mmdet's data sets too: a damaged image is named with the transform;
    an annotation file listing no image names the file."""
    import json

    from mmparax.testing import make_coco_instance
    root = make_coco_instance(str(tmp_path / 'coco'), num_train=2,
                              num_val=1, img_size=32)
    config = osp.join(REPO, 'tests', 'configs',
                      'tiny_parax_swin_mask-rcnn_coco.py')
    cfg = load_config(config, dict(data_root=root))
    init_default_scope('mmdet')
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    image = dataset.get_data_info(0)['img_path']
    with open(image, 'wb') as f:
        f.write(b'')
    with pytest.raises(DataError) as info:
        dataset[0]
    assert f'img_path={image}' in str(info.value)
    assert 'LoadImageFromFile failed' in str(info.value)

    ann_file = osp.join(root, 'annotations', 'instances_val2017.json')
    with open(ann_file) as f:
        annotations = json.load(f)
    with open(ann_file, 'w') as f:
        json.dump(dict(annotations, images=[], annotations=[]), f)
    with pytest.raises(DataError, match='CocoDataset: no samples found in '
                       f'ann_file={ann_file}'):
        DATASETS.build(cfg.val_dataloader.dataset)
