"""Split ImageNet-R into train / test folders for ``CustomDataset``.

    python tools/dataset_converters/imagenet_r.py SRC [-o data/imagenet-r]
        [--seed 0] [--train-ratio 0.8] [--link copy|symlink|hardlink]

SRC is ``imagenet-r.tar`` (https://people.eecs.berkeley.edu/~hendrycks/
imagenet-r.tar: 30,000 images of 200 ImageNet classes in
``imagenet-r/<wnid>/``) or its unpacked ``imagenet-r`` folder. ImageNet-R
has no official split; the paper uses 24,000 training and 6,000 test images.
This script draws that split deterministically: the image paths
``<wnid>/<file>`` are sorted, permuted with ``numpy.random.RandomState(seed)``
(a generator whose stream numpy keeps fixed across versions), and the first
``round(train_ratio * N)`` go to ``train``, the rest to ``test`` (one global
draw, like ``torch.utils.data.random_split``; classes are not stratified).

Output: ``OUT/{train,test}/<wnid>/<file>`` (every class folder exists in both
splits, so that folder indices are the same labels), and ``OUT/train.txt``
/ ``OUT/test.txt`` listing ``<wnid>/<file> <label>`` (label = index of the
wnid in sorted order, torchvision ``ImageFolder``'s), the record of the
split; they also serve as ``ann_file`` of ``CustomDataset``.
"""
import argparse
import os
import os.path as osp
import shutil
import tarfile

import numpy as np

EXTENSIONS = ('.jpg', '.jpeg', '.png')
TOP = 'imagenet-r'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='imagenet-r.tar or the imagenet-r folder')
    parser.add_argument('-o', '--out-dir', default='data/imagenet-r',
                        help='output folder (default: data/imagenet-r)')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the split (default: 0)')
    parser.add_argument('--train-ratio', type=float, default=0.8,
                        help='fraction of the images for training (default: '
                        '0.8: 24,000 of 30,000)')
    parser.add_argument('--link', choices=('copy', 'symlink', 'hardlink'),
                        default='copy',
                        help='how images of an unpacked SRC folder reach OUT '
                        '(default: copy; an archive is always extracted)')
    return parser.parse_args(argv)


def image_key(path: str):
    """``<wnid>/<file>`` of an image path relative to the ``imagenet-r``
    folder, or None for anything else (README.txt, folders)."""
    parts = path.replace('\\', '/').strip('/').split('/')
    if len(parts) != 2 or not parts[1].lower().endswith(EXTENSIONS):
        return None
    return '/'.join(parts)


def list_images(src: str):
    """{``<wnid>/<file>``: tar member or file path} of SRC."""
    images = {}
    if osp.isdir(osp.join(src, TOP)):  # the folder holding imagenet-r/
        src = osp.join(src, TOP)
    if osp.isdir(src):
        for wnid in sorted(os.listdir(src)):
            folder = osp.join(src, wnid)
            if not osp.isdir(folder):
                continue
            for name in sorted(os.listdir(folder)):
                key = image_key(f'{wnid}/{name}')
                if key is not None:
                    images[key] = osp.join(folder, name)
        return images
    with tarfile.open(src) as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            name = member.name
            if name.startswith(TOP + '/'):
                name = name[len(TOP) + 1:]
            key = image_key(name)
            if key is not None:
                images[key] = member
    return images


def split_keys(keys, seed: int, train_ratio: float):
    """(train keys, test keys), each sorted."""
    if not 0.0 < train_ratio < 1.0:
        raise ValueError(f'--train-ratio must be in (0, 1), got {train_ratio}')
    keys = sorted(keys)
    order = np.random.RandomState(seed).permutation(len(keys))
    num_train = int(round(train_ratio * len(keys)))
    train = sorted(keys[i] for i in order[:num_train])
    test = sorted(keys[i] for i in order[num_train:])
    return train, test


def _place(source, dest: str, link: str, tar=None) -> None:
    os.makedirs(osp.dirname(dest), exist_ok=True)
    if osp.lexists(dest):
        os.remove(dest)
    if tar is not None:
        with tar.extractfile(source) as f, open(dest, 'wb') as out:
            shutil.copyfileobj(f, out)
    elif link == 'symlink':
        os.symlink(osp.abspath(source), dest)
    elif link == 'hardlink':
        os.link(source, dest)
    else:
        shutil.copyfile(source, dest)


def convert(src: str, out_dir: str, seed: int = 0, train_ratio: float = 0.8,
            link: str = 'copy'):
    """Write the split; returns {split: number of images}."""
    images = list_images(src)
    if not images:
        raise ValueError(f'{src}: no image found in <wnid>/<file> layout '
                         '(expected imagenet-r.tar or its imagenet-r folder)')
    wnids = sorted({key.split('/')[0] for key in images})
    labels = {wnid: i for i, wnid in enumerate(wnids)}
    train, test = split_keys(images, seed, train_ratio)
    dest = {key: 'train' for key in train}
    dest.update({key: 'test' for key in test})
    for split in ('train', 'test'):
        for wnid in wnids:
            os.makedirs(osp.join(out_dir, split, wnid), exist_ok=True)
    tar = None if osp.isdir(src) else tarfile.open(src)
    try:
        # archive order: an archive is read once, front to back
        keys = list(images) if tar is not None else sorted(images)
        for key in keys:
            _place(images[key], osp.join(out_dir, dest[key], key), link, tar)
    finally:
        if tar is not None:
            tar.close()
    for split, keys in (('train', train), ('test', test)):
        with open(osp.join(out_dir, f'{split}.txt'), 'w') as f:
            f.writelines(f'{key} {labels[key.split("/")[0]]}\n'
                         for key in keys)
    return dict(train=len(train), test=len(test), classes=len(wnids))


def main(argv=None):
    args = parse_args(argv)
    if not osp.exists(args.src):
        raise FileNotFoundError(
            f'{args.src} not found: download imagenet-r.tar from '
            'https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar')
    counts = convert(args.src, args.out_dir, args.seed, args.train_ratio,
                     args.link)
    print(f"{counts['classes']} classes: {counts['train']} train and "
          f"{counts['test']} test images -> {args.out_dir}/{{train,test}}/ "
          f'(seed {args.seed})')
    if (counts['classes'], counts['train'] + counts['test']) != (200, 30000):
        print('note: the official ImageNet-R has 30,000 images of 200 '
              'classes')


if __name__ == '__main__':
    main()
