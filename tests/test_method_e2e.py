"""One real ADE20K config of every comparison method, unchanged but for data
paths and sizes, through tools/train.py (two iterations) and tools/test.py.

The backbones are the real Swin-B / ConvNeXt-B widths and depths, loaded
from random checkpoints in the official Microsoft / Facebook layouts; the
data is a tiny ADE20K set (150 classes) of 64x64 images. Each run must
load the checkpoint, pass the PEFT check, leave every pretrained tensor
untouched, train the method's parameters, write the method-only
``*_peft.safetensors`` file, and give a finite mIoU through tools/test.py.
"""
import glob
import json
import math
import os.path as osp
import re

import pytest
import torch

from mmparax.apis.peft_checkpoint import load_safetensors
from mmparax.testing import (
    check_ok,
    convnext_to_facebook,
    make_ade20k,
    run_tool,
    swin_to_microsoft,
    tiny_convnext_state_dict,
    tiny_swin_state_dict,
    two_iteration_options,
    write_checkpoint,
)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
ADE = '_upernet_8xb2-160k_ade20k-512x512.py'
SWIN_B = dict(embed_dims=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))
CONVNEXT_B = dict(arch='base', layer_scale_init_value=1e-6)
SIZE = 64
# config -> (backbone, a key of the method's parameters in the state dict)
RUNS = {
    f'vpt/vpt_swin-b{ADE}': ('swin-b', 'prompt'),
    f'lora/lora_convnext-b{ADE}': ('convnext-b', '.lora.'),
    f'adaptformer/adaptformer_swin-b{ADE}': ('swin-b', 'mlp_adapter'),
    f'repadapter/repadapter_convnext-b{ADE}': ('convnext-b',
                                               'pre_dwconv_adapter'),
    f'lorand/lorand_swin-b{ADE}': ('swin-b', 'attn_out_adapter'),
    f'snell/snell_swin-b{ADE}': ('swin-b', 'snell'),
    f'colora/colora_convnext-b{ADE}': ('convnext-b', 'colora'),
    f'mona/mona_swin-b{ADE}': ('swin-b', 'adapter2'),
}


@pytest.fixture(scope='module')
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp('method_e2e')
    data_root = make_ade20k(
        str(root / 'ade'), num_train=2, num_val=1, img_size=(SIZE, SIZE),
        num_classes=150, seed=0)
    swin = tiny_swin_state_dict(seed=0, drop_path_rate=0.0, **SWIN_B)
    convnext = tiny_convnext_state_dict(seed=0, **CONVNEXT_B)
    checkpoints = {
        'swin-b': write_checkpoint(
            str(root / 'swin_base_patch4_window7_224_22k.pth'),
            swin_to_microsoft(swin, num_classes=None)),
        'convnext-b': write_checkpoint(
            str(root / 'convnext_base_22k_224.pth'),
            convnext_to_facebook(convnext, num_classes=None)),
    }
    options = two_iteration_options(data_root, SIZE)
    return dict(options=options, checkpoints=checkpoints,
                pretrained={'swin-b': swin, 'convnext-b': convnext})


@pytest.mark.e2e
@pytest.mark.parametrize('name', sorted(RUNS))
def test_two_iterations_then_test(assets, name, tmp_path):
    backbone, method_key = RUNS[name]
    config = osp.join(REPO, 'configs', name)
    options = ['--cfg-options', *assets['options'],
               'model.backbone.init_cfg.checkpoint='
               f"{assets['checkpoints'][backbone]}"]
    work_dir = tmp_path / 'work_dir'
    proc = run_tool('train.py', config, '--work-dir', work_dir, *options,
                    cwd=tmp_path)
    check_ok(proc)
    log = proc.stdout + proc.stderr
    assert 'converting a' in log  # official layout converted, loaded
    assert 'trainable params' in log  # PEFTCheckHook passed
    assert 'Iter(train) [2/2]' in log

    state = torch.load(work_dir / 'iter_2.pth', map_location='cpu',
                       weights_only=False)['state_dict']
    # every pretrained tensor untouched (the output norms norm<i> are new)
    pretrained = {
        'backbone.' + k: v
        for k, v in assets['pretrained'][backbone].items()
        if not re.match(r'norm\d\.', k)
    }
    for key, value in pretrained.items():
        assert torch.equal(state[key], value), key
    method = [k for k in state
              if k.startswith('backbone.') and method_key in k]
    assert method, f'no {method_key!r} parameter in the checkpoint'
    peft = load_safetensors(
        str(work_dir / 'iter_2_peft.safetensors'))['state_dict']
    assert set(method) <= set(peft)
    assert not set(peft) & set(pretrained)

    proc = run_tool('test.py', config, work_dir / 'iter_2.pth',
                    '--work-dir', work_dir, *options, cwd=tmp_path)
    check_ok(proc)
    (metrics_file, ) = glob.glob(str(work_dir / '*' / '*.json'))
    with open(metrics_file) as f:
        miou = json.load(f)['mIoU']
    assert math.isfinite(miou) and 0.0 <= miou <= 100.0
