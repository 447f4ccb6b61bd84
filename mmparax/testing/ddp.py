"""A few DDP training steps of every method on a tiny segmentor.

Each method (on the tiny Swin of :data:`mmparax.testing.peft.HOSTS`, CoLoRA
on the tiny ConvNeXt) drives an mmseg ``EncoderDecoder`` whose BN-free head
reads every backbone output (as UperHead does), wrapped as
``tools/train.py`` wraps it on the CPU: ``MMDistributedDataParallel`` with
``broadcast_buffers=False``, ``find_unused_parameters=False`` (the configs'
setting) and ``device_ids=None``. Each rank trains on its share of one fixed
global batch, so a run of N processes must give the weights of one process
on the whole batch. Run on the CPU as::

    python -m torch.distributed.run --nproc_per_node 2 \\
        -m mmparax.testing.ddp OUT_DIR

which writes ``OUT_DIR/<method>_rank<r>.pth``: the gradients each step
applied and the trained parameters.
"""
import os.path as osp
import sys
from typing import Dict

import torch
import torch.distributed as dist
from mmengine.model import MMDistributedDataParallel
from mmengine.optim import build_optim_wrapper
from mmengine.registry import MODELS, init_default_scope
from mmengine.structures import PixelData

from .peft import HOSTS, METHODS, hosts_of

GLOBAL_BATCH = 4
STEPS = 3
IMG_SIZE = (64, 64)
NUM_CLASSES = 4


def ddp_host(method: str) -> str:
    """The tiny host of ``method``'s run: Swin, or its only host."""
    hosts = hosts_of(method)
    return 'Swin' if 'Swin' in hosts else hosts[0]


def tiny_segmentor(method: str) -> torch.nn.Module:
    """``EncoderDecoder``: the method's tiny host (no drop path) and an
    FCN head on the concatenated outputs of every stage (no norm layer, no
    dropout: the same maths in every process)."""
    init_default_scope('mmseg')
    host = ddp_host(method)
    cls, kwargs, _ = HOSTS[host]
    torch.manual_seed(0)
    widths = [16, 32, 64, 128]  # both tiny hosts
    return MODELS.build(
        dict(
            type='EncoderDecoder',
            data_preprocessor=dict(
                type='SegDataPreProcessor',
                mean=[123.675, 116.28, 103.53],
                std=[58.395, 57.12, 57.375],
                bgr_to_rgb=True,
                size=IMG_SIZE),
            backbone=dict(
                type=f'mmparax.{host}',
                peft=METHODS[method],
                **dict(kwargs, drop_path_rate=0.0)),
            decode_head=dict(
                type='FCNHead',
                in_channels=widths,
                in_index=[0, 1, 2, 3],
                input_transform='resize_concat',
                channels=sum(widths),
                num_convs=0,
                concat_input=False,
                dropout_ratio=0.0,
                num_classes=NUM_CLASSES,
                loss_decode=dict(
                    type='CrossEntropyLoss', use_sigmoid=False,
                    loss_weight=1.0))))


def global_batch(step: int) -> Dict[str, list]:
    """The ``step``-th batch of :data:`GLOBAL_BATCH` random images and
    label maps (every pixel labelled)."""
    from mmseg.structures import SegDataSample
    gen = torch.Generator().manual_seed(step)
    inputs, samples = [], []
    for _ in range(GLOBAL_BATCH):
        inputs.append(
            torch.randint(0, 256, (3, *IMG_SIZE), generator=gen,
                          dtype=torch.uint8))
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=torch.randint(
            0, NUM_CLASSES, (1, *IMG_SIZE), generator=gen))
        sample.set_metainfo(
            dict(img_shape=IMG_SIZE, ori_shape=IMG_SIZE, pad_shape=IMG_SIZE))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def train(method: str, rank: int = 0, world_size: int = 1) -> dict:
    """:data:`STEPS` SGD steps; with ``world_size`` > 1 (a process group
    being initialised) under DDP on this rank's share of the batch.

    Returns ``grads`` (per step, the gradient of each trainable parameter
    that has one) and ``params`` (the trained parameters).
    """
    model = tiny_segmentor(method)
    optim_wrapper = build_optim_wrapper(
        model,
        dict(
            type='OptimWrapper',
            constructor='mmparax.PEFTOptimWrapperConstructor',
            optimizer=dict(type='SGD', lr=0.1, momentum=0.9)))
    names = {p: n for n, p in model.named_parameters() if p.requires_grad}
    grads = []
    optim_wrapper.optimizer.register_step_pre_hook(
        lambda opt, args, kwargs: grads.append({
            names[p]: p.grad.clone()
            for group in opt.param_groups for p in group['params']
            if p.grad is not None
        }))
    wrapped = model
    if world_size > 1:
        wrapped = MMDistributedDataParallel(
            module=model,
            device_ids=None,
            broadcast_buffers=False,
            find_unused_parameters=False)
    share = GLOBAL_BATCH // world_size
    model.train()
    for step in range(STEPS):
        batch = global_batch(step)
        mine = slice(rank * share, (rank + 1) * share)
        wrapped.train_step(
            {k: v[mine] for k, v in batch.items()}, optim_wrapper)
    params = {n: p.detach().clone() for p, n in names.items()}
    return dict(grads=grads, params=params)


def main(out_dir: str) -> None:
    dist.init_process_group('gloo')
    rank, world_size = dist.get_rank(), dist.get_world_size()
    for method in METHODS:
        torch.save(
            train(method, rank, world_size),
            osp.join(out_dir, f'{method}_rank{rank}.pth'))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == '__main__':
    main(sys.argv[1])
