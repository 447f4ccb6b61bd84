"""Convert the SVHN digit files into the folder layout of ``CustomDataset``.

    python tools/dataset_converters/svhn.py SRC [-o data/svhn]

SRC holds ``train_32x32.mat`` and ``test_32x32.mat`` ("format 2", cropped
digits, from http://ufldl.stanford.edu/housenumbers/). Each image becomes a
PNG (lossless, the original pixels) in ``OUT/<split>/<digit>/<index>.png``:
73,257 train and 26,032 test images in folders ``0`` to ``9``. The files
store the digit 0 as label 10; it goes to folder ``0``, so the label of an
image is its digit, as in torchvision's ``SVHN`` (the ParaX reference's
loader). ``<index>`` is the position in the .mat file. ``extra_32x32.mat``
is not used: the paper trains on the train split only.
"""
import argparse
import os
import os.path as osp

import numpy as np
from PIL import Image

SPLITS = ('train', 'test')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='folder with train_32x32.mat and '
                        'test_32x32.mat')
    parser.add_argument('-o', '--out-dir', default='data/svhn',
                        help='output folder (default: data/svhn)')
    return parser.parse_args(argv)


def load_split(path: str):
    """(images [N, 32, 32, 3] uint8 RGB, digits [N] int) of one .mat file."""
    from scipy.io import loadmat
    mat = loadmat(path)
    if 'X' not in mat or 'y' not in mat:
        raise ValueError(f'{path}: expected the variables X and y of the SVHN '
                         f'cropped-digit files, found {sorted(mat)}')
    x, y = mat['X'], np.asarray(mat['y']).reshape(-1)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
        raise ValueError(f'{path}: X has shape {x.shape} and y {len(y)} '
                         'labels; expected X [32, 32, 3, N] and N labels')
    if len(y) and not ((y >= 1) & (y <= 10)).all():
        raise ValueError(f'{path}: labels must be 1-10 (10 = digit 0), got '
                         f'{sorted(set(y.tolist()))}')
    digits = np.where(y == 10, 0, y).astype(np.int64)
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2)), digits


def convert_split(src: str, out_dir: str, split: str) -> int:
    """Write one split; returns the number of images."""
    images, digits = load_split(osp.join(src, f'{split}_32x32.mat'))
    for digit in range(10):
        os.makedirs(osp.join(out_dir, split, str(digit)), exist_ok=True)
    width = max(6, len(str(len(digits))))
    for i, (image, digit) in enumerate(zip(images, digits)):
        Image.fromarray(image).save(
            osp.join(out_dir, split, str(digit), f'{i:0{width}d}.png'))
    return len(digits)


def main(argv=None):
    args = parse_args(argv)
    for split in SPLITS:
        path = osp.join(args.src, f'{split}_32x32.mat')
        if not osp.isfile(path):
            raise FileNotFoundError(
                f'{path} not found: download {split}_32x32.mat from '
                'http://ufldl.stanford.edu/housenumbers/')
    for split in SPLITS:
        num = convert_split(args.src, args.out_dir, split)
        print(f'{split}: {num} images -> '
              f'{osp.join(args.out_dir, split)}/<digit>/')


if __name__ == '__main__':
    main()
