"""Convert a checkpoint of the ParaX reference code to mmparax.

The reference trains ParaX with OpenMMLab 1.x (mmseg 0.x, mmdet 2.x). This
renames its expert tensors, adapters and output norms to mmparax's, converts
the frozen backbone from the official layout it keeps (Swin: Microsoft,
ConvNeXt: Facebook, VMamba: official) to the host's, and keeps the heads of
a whole segmentor / detector as they are. The input is read without running
code from it; the output loads with ``torch.load(weights_only=True)``.

Example::

    python tools/model_converters/parax_reference_to_mmparax.py \
        upernet_swin_b_parax_iter_160000.pth parax_swin-b_upernet_ade20k.pth
    python tools/test.py \
        configs/parax/parax_swin-b_upernet_8xb2-160k_ade20k-512x512.py \
        parax_swin-b_upernet_ade20k.pth
"""
import argparse
import os
import os.path as osp
import sys

import torch

from mmparax.utils.reference_converter import (
    BACKBONES,
    reference_checkpoint_to_mmparax,
)
from mmparax.utils.restricted_load import load_weights_file


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert a reference ParaX (OpenMMLab 1.x) checkpoint '
        'to the mmparax key layout')
    parser.add_argument('src', help='reference checkpoint (path or URL)')
    parser.add_argument('dst', help='output checkpoint path')
    parser.add_argument(
        '--backbone',
        choices=BACKBONES,
        help='backbone family; detected from the keys when omitted')
    parser.add_argument(
        '--keep-prefix',
        action='append',
        default=[],
        metavar='PREFIX',
        help='keep the keys of one more top-level module of a whole model '
        'unchanged (besides decode_head, auxiliary_head, neck, rpn_head, '
        'roi_head, bbox_head, mask_head, semantic_head, '
        'panoptic_fusion_head); repeatable')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if '://' not in args.src and osp.exists(args.dst) \
            and osp.samefile(args.src, args.dst):
        sys.exit('dst must not be the source file')
    checkpoint = load_weights_file(args.src, map_location='cpu')
    converted = reference_checkpoint_to_mmparax(
        checkpoint,
        backbone=args.backbone,
        source=args.src,
        extra_prefixes=args.keep_prefix)
    converted['state_dict'] = {
        k: v.detach().cpu().contiguous()
        for k, v in converted['state_dict'].items()
    }
    folder = osp.dirname(osp.abspath(args.dst))
    os.makedirs(folder, exist_ok=True)
    torch.save(converted, args.dst)
    torch.load(args.dst, map_location='cpu', weights_only=True)  # check
    print(f'saved {len(converted["state_dict"])} tensors '
          f'({converted["meta"]["backbone"]}) to {args.dst}')


if __name__ == '__main__':
    main()
