"""COCO end to end: tools/train.py then tools/test.py on tiny COCO-layout
data, with tiny ParaX backbones in the real COCO recipes.

- Mask R-CNN + ParaX ConvNeXt (Facebook-layout checkpoint) on
  ``make_coco_instance`` data: bbox and segm AP.
- Panoptic FPN + ParaX Swin (Microsoft-layout checkpoint) on
  ``make_coco_panoptic`` data: PQ, SQ, RQ.

The tiny configs (``tests/configs``) inherit the real ParaX configs and only
shrink the model and the images; the fp16 recipe runs in fp32 through
``--cfg-options optim_wrapper.type=OptimWrapper``.
"""
import glob
import json
import math
import os.path as osp
import re

import pytest
import torch

from mmparax.testing import (
    check_ok,
    check_weights_only,
    convnext_to_facebook,
    make_coco_instance,
    make_coco_panoptic,
    run_tool,
    swin_to_microsoft,
    tiny_convnext_state_dict,
    tiny_swin_state_dict,
    write_checkpoint,
)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = osp.join(REPO, 'tests', 'configs')
OUTPUT_NORM = re.compile(r'^norm\d+\.')

TASKS = {
    'mask-rcnn': dict(
        config='tiny_parax_convnext_mask-rcnn_coco.py',
        metrics=[
            f'coco/{kind}_mAP{suffix}' for kind in ('bbox', 'segm')
            for suffix in ('', '_50', '_75')
        ],
        scale=1.0),
    'panoptic-fpn': dict(
        config='tiny_parax_swin_panoptic-fpn_coco-panoptic.py',
        metrics=[
            f'coco_panoptic/{m}{part}' for m in ('PQ', 'SQ', 'RQ')
            for part in ('', '_th', '_st')
        ],
        scale=100.0),
}


@pytest.fixture(scope='module')
def assets(tmp_path_factory):
    """Tiny COCO instance and panoptic sets, and pretrained checkpoints in
    the official Facebook (ConvNeXt) and Microsoft (Swin) layouts."""
    root = tmp_path_factory.mktemp('coco_e2e')
    convnext = tiny_convnext_state_dict(seed=0)
    swin = tiny_swin_state_dict(seed=0)
    instance = make_coco_instance(str(root / 'coco'), num_train=4, num_val=2)
    panoptic = make_coco_panoptic(
        str(root / 'coco_panoptic'), num_train=4, num_val=2)

    def ann(data_root, name):
        return osp.join(data_root, 'annotations', name)

    roots = [
        f'{loader}_dataloader.dataset.data_root={{root}}'
        for loader in ('train', 'val', 'test')
    ]
    return {
        'mask-rcnn': dict(
            root=root,
            source=convnext,
            checkpoint=write_checkpoint(
                str(root / 'convnext_tiny_22k_224.pth'),
                convnext_to_facebook(convnext, num_classes=21841)),
            options=[r.format(root=instance) for r in roots] + [
                f'{e}_evaluator.ann_file='
                f'{ann(instance, "instances_val2017.json")}'
                for e in ('val', 'test')
            ]),
        'panoptic-fpn': dict(
            root=root,
            source=swin,
            checkpoint=write_checkpoint(
                str(root / 'swin_tiny_patch4_window7_224.pth'),
                swin_to_microsoft(swin)),
            options=[r.format(root=panoptic) for r in roots] + [
                f'{e}_evaluator.{key}={ann(panoptic, name)}'
                for e in ('val', 'test')
                for key, name in (('ann_file', 'panoptic_val2017.json'),
                                  ('seg_prefix', 'panoptic_val2017/'))
            ]),
    }


def load_state(path):
    return torch.load(path, map_location='cpu', weights_only=False)[
        'state_dict']


@pytest.mark.e2e
@pytest.mark.parametrize('task', sorted(TASKS))
def test_train_then_test(assets, task, tmp_path):
    spec, data = TASKS[task], assets[task]
    config = osp.join(CONFIGS, spec['config'])
    options = [
        '--cfg-options', 'optim_wrapper.type=OptimWrapper',
        f'model.backbone.init_cfg.checkpoint={data["checkpoint"]}',
        *data['options']
    ]
    work_dir = tmp_path / 'work_dir'

    proc = run_tool('train.py', config, '--work-dir', work_dir, *options,
                    cwd=tmp_path)
    check_ok(proc)
    log = proc.stdout + proc.stderr
    assert 'trainable params' in log  # PEFTCheckHook passed
    assert 'converting a' in log  # the official layout was converted
    check_weights_only(work_dir)  # no trust needed to resume
    first, last = (load_state(work_dir / f'iter_{i}.pth') for i in (1, 2))

    # every pretrained backbone tensor is saved unchanged
    pretrained = {
        k: v
        for k, v in data['source'].items() if not OUTPUT_NORM.match(k)
    }
    for key, value in pretrained.items():
        assert torch.equal(last['backbone.' + key], value), key
    # adapters and expert centers were trained
    peft = [k for k in last if '.adapter' in k or 'expert_centers.' in k]
    assert peft
    changed = [k for k in peft if not torch.equal(first[k], last[k])]
    assert len(changed) > len(peft) // 2

    proc = run_tool('test.py', config, work_dir / 'iter_2.pth', '--work-dir',
                    work_dir, *options, cwd=tmp_path)
    check_ok(proc)
    (metrics_file, ) = glob.glob(str(work_dir / '*' / '*.json'))
    with open(metrics_file) as f:
        metrics = json.load(f)
    print(f'{task}: ' + ', '.join(f'{k}={metrics[k]:.4f}'
                                  for k in spec['metrics']))
    for key in spec['metrics']:
        value = metrics[key]
        assert isinstance(value, float) and math.isfinite(value), key
        assert 0.0 <= value <= spec['scale'], (key, value)
