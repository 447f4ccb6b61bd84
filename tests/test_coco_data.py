"""The tiny COCO writers produce what mmdet's datasets, transforms and
metrics read: perfect predictions made from the files score AP 1 / PQ 100."""
import json
import os.path as osp

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
from mmdet.registry import DATASETS, METRICS
from mmdet.utils import register_all_modules
from mmengine.registry import init_default_scope
from PIL import Image
from pycocotools.coco import COCO

from mmparax.testing import (
    COCO_STUFF,
    COCO_THINGS,
    coco_metainfo,
    id2rgb,
    make_coco_instance,
    make_coco_panoptic,
)


@pytest.fixture(scope='module', autouse=True)
def mmdet_scope():
    register_all_modules(init_default_scope=False)
    init_default_scope('mmdet')


def test_id2rgb_round_trip():
    from panopticapi.utils import rgb2id
    ids = np.array([[0, 1, 255], [256, 193000, 16777215]])
    assert (rgb2id(id2rgb(ids)) == ids).all()


def test_instance_set(tmp_path):
    root = make_coco_instance(
        str(tmp_path), num_train=2, num_val=3, img_size=(96, 128),
        crowd_prob=1.0, seed=3)
    ann_file = osp.join(root, 'annotations', 'instances_val2017.json')
    coco = COCO(ann_file)
    assert sorted(coco.getCatIds()) == [cid for cid, _ in COCO_THINGS]
    anns = coco.loadAnns(coco.getAnnIds())
    assert any(a['iscrowd'] for a in anns)
    for ann in anns:  # polygons and RLE agree with the stored area and box
        img = coco.loadImgs(ann['image_id'])[0]
        assert (img['height'], img['width']) == (96, 128)
        mask = coco.annToMask(ann)
        assert mask.sum() == ann['area'] > 0
        rle = mask_utils.encode(np.asfortranarray(mask))
        assert np.allclose(mask_utils.toBbox(rle), ann['bbox'])
        assert isinstance(ann['segmentation'],
                          dict if ann['iscrowd'] else list)
        assert osp.isfile(osp.join(root, 'val2017', img['file_name']))

    dataset = DATASETS.build(
        dict(
            type='CocoDataset',
            data_root=root,
            ann_file='annotations/instances_val2017.json',
            data_prefix=dict(img='val2017/'),
            metainfo=coco_metainfo(),
            test_mode=True,
            pipeline=[
                dict(type='LoadImageFromFile'),
                dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
                dict(type='PackDetInputs'),
            ]))
    assert len(dataset) == 3
    metric = METRICS.build(
        dict(type='CocoMetric', ann_file=ann_file, metric=['bbox', 'segm']))
    metric.dataset_meta = dataset.metainfo
    samples = []
    for i in range(len(dataset)):
        sample = dataset[i]['data_samples']
        assert sample.img_shape == (96, 128)
        gt = sample.gt_instances  # crowds are in ignored_instances
        assert len(gt) > 0
        masks = torch.from_numpy(gt.masks.to_ndarray()).bool()
        samples.append(
            dict(
                img_id=sample.img_id,
                ori_shape=sample.ori_shape,
                pred_instances=dict(
                    bboxes=gt.bboxes.tensor,
                    scores=torch.ones(len(gt)),
                    labels=gt.labels,
                    masks=masks)))
    metric.process({}, samples)
    results = metric.evaluate(len(dataset))
    assert results['coco/bbox_mAP'] == pytest.approx(1.0)
    assert results['coco/segm_mAP'] == pytest.approx(1.0)


def test_panoptic_set(tmp_path):
    root = make_coco_panoptic(
        str(tmp_path), num_train=2, num_val=3, img_size=(96, 128),
        void_prob=1.0, seed=5)
    ann_dir = osp.join(root, 'annotations')
    with open(osp.join(ann_dir, 'panoptic_val2017.json')) as f:
        panoptic = json.load(f)
    cats = {c['id']: c for c in panoptic['categories']}
    assert {cid for cid, c in cats.items() if c['isthing']} == \
        {cid for cid, _ in COCO_THINGS}
    assert {cid for cid, c in cats.items() if not c['isthing']} == \
        {cid for cid, _ in COCO_STUFF}
    from panopticapi.utils import rgb2id
    for ann in panoptic['annotations']:
        png = np.asarray(
            Image.open(osp.join(ann_dir, 'panoptic_val2017',
                                ann['file_name'])).convert('RGB'))
        ids = rgb2id(png)
        assert (ids == 0).any()  # void
        listed = {s['id'] for s in ann['segments_info']}
        assert set(np.unique(ids)) - {0} == listed
        for seg in ann['segments_info']:
            assert (ids == seg['id']).sum() == seg['area']
    # the instances file holds the thing segments
    instances = COCO(osp.join(ann_dir, 'instances_val2017.json'))
    things = [
        s for a in panoptic['annotations'] for s in a['segments_info']
        if cats[s['category_id']]['isthing']
    ]
    assert len(instances.getAnnIds()) == len(things)
    for ann in instances.loadAnns(instances.getAnnIds()):
        assert instances.annToMask(ann).sum() == ann['area']

    meta = coco_metainfo(COCO_THINGS, COCO_STUFF)
    dataset = DATASETS.build(
        dict(
            type='CocoPanopticDataset',
            data_root=root,
            ann_file='annotations/panoptic_val2017.json',
            data_prefix=dict(
                img='val2017/', seg='annotations/panoptic_val2017/'),
            metainfo=meta,
            test_mode=True,
            pipeline=[
                dict(type='LoadImageFromFile'),
                dict(type='LoadPanopticAnnotations'),
                dict(
                    type='PackDetInputs',
                    meta_keys=('img_id', 'img_path', 'ori_shape',
                               'img_shape', 'seg_map_path',
                               'segments_info')),
            ]))
    assert len(dataset) == 3
    metric = METRICS.build(
        dict(
            type='CocoPanopticMetric',
            ann_file=osp.join(ann_dir, 'panoptic_val2017.json'),
            seg_prefix=osp.join(ann_dir, 'panoptic_val2017/'),
            nproc=1))
    metric.dataset_meta = dataset.metainfo
    num_classes = len(meta['classes'])
    samples = []
    for i in range(len(dataset)):
        sample = dataset[i]['data_samples']
        ids = rgb2id(
            np.asarray(Image.open(sample.seg_map_path).convert('RGB')))
        # semantic labels: things 0..2, stuff 3..5 (COCO ids mapped through
        # the class subset), void 255; one mask per thing segment
        sem = sample.gt_sem_seg.sem_seg[0].numpy()
        expected = np.full(ids.shape, 255)
        for seg in sample.segments_info:
            cid = next(s['category_id']
                       for a in panoptic['annotations']
                       for s in a['segments_info'] if s['id'] == seg['id'])
            assert meta['classes'][seg['category']] == cats[cid]['name']
            expected[ids == seg['id']] = seg['category']
        assert (sem == expected).all()
        assert (sem == 255).any() and (sem < 3).any() and (sem >= 3).any()
        assert len(sample.gt_instances) == sum(
            s['is_thing'] for s in sample.segments_info)
        # a perfect panoptic prediction: label + instance * 1000, void -> N
        pan = np.full(ids.shape, num_classes, dtype=np.int64)
        for k, seg in enumerate(sample.segments_info, start=1):
            label = seg['category']
            instance = k * 1000 if seg['is_thing'] else 0
            pan[ids == seg['id']] = label + instance
        samples.append(
            dict(
                img_id=sample.img_id,
                img_path=sample.img_path,
                ori_shape=sample.ori_shape,
                pred_panoptic_seg=dict(sem_seg=torch.from_numpy(pan)[None])))
    metric.process({}, samples)
    results = metric.evaluate(len(dataset))
    for key in ('PQ', 'SQ', 'RQ', 'PQ_th', 'PQ_st'):
        assert results[f'coco_panoptic/{key}'] == pytest.approx(100.0), key


def test_real_category_tables():
    """80 thing ids (1..90 minus COCO's ten unused ones) and 53 stuff ids
    (92..200), named as mmdet's COCO dataset classes."""
    import ast
    import glob

    from mmdet.datasets import CocoDataset, CocoPanopticDataset

    from mmparax.testing.coco import (
        COCO_STUFF_IDS,
        COCO_THING_IDS,
        coco_categories,
    )
    things, stuff = coco_categories('things'), coco_categories('stuff')
    assert len(things) == 80 and len(stuff) == 53
    assert [n for _, n in things] == list(CocoDataset.METAINFO['classes'])
    assert [n for _, n in things] == list(
        CocoPanopticDataset.METAINFO['thing_classes'])
    assert [n for _, n in stuff] == list(
        CocoPanopticDataset.METAINFO['stuff_classes'])
    assert sorted(set(range(1, 91)) - set(COCO_THING_IDS)) == [
        12, 26, 29, 30, 45, 66, 68, 69, 71, 83]
    assert list(COCO_STUFF_IDS) == sorted(COCO_STUFF_IDS)
    assert COCO_STUFF_IDS[0] == 92 and COCO_STUFF_IDS[-1] == 200
    # the default classes are entries of the real tables
    assert set(COCO_THINGS) <= set(things)
    assert set(COCO_STUFF) <= set(stuff)
    # the panoptic category table shipped with mmdet's dataset converters
    import mmdet
    found = glob.glob(
        osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools',
                 'dataset_converters',
                 'prepare_coco_semantic_annos_from_panoptic_annos.py'))
    if not found:
        pytest.skip("mmdet's dataset converters are not installed")
    with open(found[0]) as f:
        tree = ast.parse(f.read())
    (table, ) = [
        ast.literal_eval(node.value) for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.List)
    ]
    assert [(c['id'], c['name']) for c in table if c['isthing']] == \
        list(things)
    assert [(c['id'], c['name']) for c in table if not c['isthing']] == \
        list(stuff)


def test_writers_with_real_categories(tmp_path):
    from mmparax.testing.coco import coco_categories
    things, stuff = coco_categories('things'), coco_categories('stuff')
    root = make_coco_instance(
        str(tmp_path / 'ins'), num_train=3, num_val=1, img_size=64,
        categories='coco', seed=1)
    coco = COCO(osp.join(root, 'annotations', 'instances_train2017.json'))
    assert [(c['id'], c['name'])
            for c in coco.loadCats(coco.getCatIds())] == list(things)
    assert coco.getAnnIds()
    # mmdet's default COCO classes read the file without a metainfo
    dataset = DATASETS.build(
        dict(
            type='CocoDataset',
            data_root=root,
            ann_file='annotations/instances_train2017.json',
            data_prefix=dict(img='train2017/'),
            pipeline=[]))
    assert len(dataset.metainfo['classes']) == 80
    assert len(dataset) == 3
    assert coco_metainfo('coco') == dict(
        classes=tuple(n for _, n in things))

    root = make_coco_panoptic(
        str(tmp_path / 'pan'), num_train=1, num_val=2, img_size=64,
        categories='coco', seed=1)
    with open(osp.join(root, 'annotations', 'panoptic_val2017.json')) as f:
        panoptic = json.load(f)
    assert [(c['id'], c['name']) for c in panoptic['categories']
            if c['isthing']] == list(things)
    assert [(c['id'], c['name']) for c in panoptic['categories']
            if not c['isthing']] == list(stuff)
    meta = coco_metainfo('coco', 'coco')
    assert len(meta['classes']) == 133
    dataset = DATASETS.build(
        dict(
            type='CocoPanopticDataset',
            data_root=root,
            ann_file='annotations/panoptic_val2017.json',
            data_prefix=dict(
                img='val2017/', seg='annotations/panoptic_val2017/'),
            test_mode=True,
            pipeline=[]))
    assert dataset.metainfo['classes'] == meta['classes']
    assert len(dataset) == 2
    with pytest.raises(ValueError, match="'coco'"):
        make_coco_instance(str(tmp_path / 'bad'), categories='voc')
