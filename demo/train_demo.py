"""ParaX end to end on the CPU in a few minutes, without downloads.

1. writes a synthetic data set in the ADE20K layout (64x64 images, 8
   classes) with ``mmparax.testing.make_ade20k``;
2. writes a tiny Swin "ImageNet" checkpoint in the official Microsoft key
   layout, with RANDOM weights (no real checkpoint can be downloaded here);
3. fine-tunes a tiny ParaX Swin UperNet with ``tools/train.py``;
4. evaluates the last checkpoint with ``tools/test.py`` and prints mIoU.

Usage::

    .venv/bin/python demo/train_demo.py [--work-dir work_dirs/demo]
                                        [--iters 300]
"""
import argparse
import glob
import json
import os
import os.path as osp
import re
import subprocess
import sys
import time

import numpy as np
from PIL import Image

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

from mmengine.config import Config  # noqa: E402

from mmparax.testing import (  # noqa: E402
    make_ade20k,
    swin_to_microsoft,
    tiny_swin_state_dict,
    write_checkpoint,
)

CONFIG = osp.join(ROOT, 'configs', 'demo',
                  'parax_swin-tiny_upernet_1xb4-300i_demo-64x64.py')
SWIN_ARGS = ('pretrain_img_size', 'embed_dims', 'patch_size', 'window_size',
             'mlp_ratio', 'depths', 'num_heads', 'strides', 'qkv_bias',
             'patch_norm', 'use_abs_pos_embed')


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--work-dir',
        default='work_dirs/demo',
        help='folder of the data, checkpoints and logs')
    parser.add_argument(
        '--iters', type=int, default=None, help='training iterations '
        '(default: the config\'s, 300)')
    parser.add_argument(
        '--num-train', type=int, default=200, help='synthetic train images')
    parser.add_argument(
        '--num-val', type=int, default=50, help='synthetic val images')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--threads',
        type=int,
        default=int(os.environ.get('OMP_NUM_THREADS', 1)),
        help='OMP_NUM_THREADS of the training and test processes (default: '
        '$OMP_NUM_THREADS or 1; the tensors are tiny, and more threads '
        'than free cores make each step many times slower)')
    return parser.parse_args()


def banner(text):
    print(f'\n=== {text}', flush=True)


def run(cmd, log_path, threads):
    """Run ``cmd``, stream its output, save it to ``log_path``; return it."""
    print(f'$ OMP_NUM_THREADS={threads} ' + ' '.join(cmd), flush=True)
    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(threads),
        PYTHONPATH=os.pathsep.join(
            p for p in (ROOT, os.environ.get('PYTHONPATH')) if p))
    lines = []
    with open(log_path, 'w') as log, subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        for line in proc.stdout:
            sys.stdout.write(line)
            log.write(line)
            lines.append(line)
    if proc.returncode:
        sys.exit(f'{cmd[1]} failed with exit code {proc.returncode}; '
                 f'full output in {log_path}')
    return ''.join(lines)


def majority_baseline(root, num_classes):
    """mIoU of predicting the most frequent validation class everywhere."""
    counts = np.zeros(num_classes + 1, dtype=np.int64)
    for path in glob.glob(osp.join(root, 'annotations', 'validation',
                                   '*.png')):
        labels = np.asarray(Image.open(path))
        counts += np.bincount(labels.ravel(), minlength=num_classes + 1)
    counts = counts[1:]  # label 0 is ignored
    present = int((counts > 0).sum())
    return 100.0 * counts.max() / counts.sum() / present


def final_miou(test_dir, output):
    """mIoU (%) from the test run's json log, else from its output."""
    logs = sorted(glob.glob(osp.join(test_dir, '*', '*.json')),
                  key=osp.getmtime)
    if logs:
        with open(logs[-1]) as f:
            for line in f:
                record = json.loads(line)
                for key, value in record.items():
                    if key.endswith('mIoU'):
                        return float(value)
    found = re.findall(r'mIoU: ([0-9.]+)', output)
    return float(found[-1]) if found else None


def main():
    args = parse_args()
    start = time.time()
    work_dir = osp.abspath(args.work_dir)
    cfg = Config.fromfile(CONFIG)
    iters = args.iters or cfg.train_cfg.max_iters
    num_classes = cfg.num_classes
    data_root = osp.join(work_dir, 'data', 'ade20k_synthetic')
    ckpt = osp.join(work_dir, 'pretrain',
                    'swin_tiny_patch4_window7_random.pth')

    banner(f'1/4 synthetic ADE20K-layout data set -> {data_root}')
    h, w = cfg.crop_size
    make_ade20k(
        data_root,
        num_train=args.num_train,
        num_val=args.num_val,
        img_size=(h, w),
        num_classes=num_classes,
        seed=args.seed)
    print(f'{args.num_train} train / {args.num_val} val images, {h}x{w}, '
          f'{num_classes} classes (+ label 0 "other", ignored)')

    banner(f'2/4 tiny Swin checkpoint in the Microsoft layout -> {ckpt}')
    backbone = cfg.model.backbone
    swin_args = {k: backbone[k] for k in SWIN_ARGS if k in backbone}
    write_checkpoint(
        ckpt, swin_to_microsoft(tiny_swin_state_dict(args.seed, **swin_args)))
    print('NOTE: the backbone weights are RANDOM, not ImageNet-pretrained: '
          'nothing can be downloaded here. The frozen backbone is a random '
          'feature extractor, so the mIoU below shows that the pipeline '
          'learns, not what ParaX reaches with real weights.')

    paths = [
        f'{loader}.dataset.data_root={data_root}'
        for loader in ('train_dataloader', 'val_dataloader',
                       'test_dataloader')
    ]
    paths.append(f'model.backbone.init_cfg.checkpoint={ckpt}')

    banner(f'3/4 fine-tuning ParaX Swin UperNet for {iters} iterations '
           '(tools/train.py)')
    warmup = max(1, min(cfg.warmup_iters, iters // 10))
    schedule = [
        f'train_cfg.max_iters={iters}',
        f'param_scheduler.0.end={warmup}',
        f'param_scheduler.1.begin={warmup}',
        f'param_scheduler.1.end={iters}',
        f'train_cfg.val_interval={max(iters // 3, 1)}',
        f'default_hooks.checkpoint.interval={iters}',
    ]
    run([
        sys.executable, 'tools/train.py', CONFIG, '--work-dir', work_dir,
        '--cfg-options'
    ] + paths + schedule, osp.join(work_dir, 'train_demo_train.log'),
        args.threads)
    trained = osp.join(work_dir, f'iter_{iters}.pth')
    if not osp.exists(trained):
        sys.exit(f'training ended without {trained}')

    banner('4/4 evaluating the last checkpoint (tools/test.py)')
    test_dir = osp.join(work_dir, 'test')
    output = run([
        sys.executable, 'tools/test.py', CONFIG, trained, '--work-dir',
        test_dir, '--trust-checkpoint', trained, '--cfg-options'
    ] + paths, osp.join(work_dir, 'train_demo_test.log'), args.threads)

    miou = final_miou(test_dir, output)
    baseline = majority_baseline(data_root, num_classes)
    minutes = (time.time() - start) / 60
    banner('result')
    if miou is None:
        sys.exit('no mIoU found in the output of tools/test.py')
    print(f'mIoU on the synthetic validation set: {miou:.2f} '
          f'(predicting the majority class everywhere: {baseline:.2f})')
    print(f'checkpoint: {trained}\nlogs: {work_dir}\n'
          f'total time: {minutes:.1f} min')


if __name__ == '__main__':
    main()
