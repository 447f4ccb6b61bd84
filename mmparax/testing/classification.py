"""Tiny classification sets in the on-disk layouts of the Table 4 configs.

- :func:`make_cifar100` writes the CIFAR-100 "python version"
  (``cifar-100-python/{train,test,meta}`` pickles), which mmpretrain's
  ``CIFAR100`` reads;
- :func:`make_image_folders` writes ``<split>/<class>/<image>`` folders, the
  layout of mmpretrain's ``CustomDataset`` (SVHN, Food-101 and ImageNet-R in
  the configs, as ``tools/dataset_converters/`` leave them);
- :func:`make_svhn_mat`, :func:`make_food101_raw` and
  :func:`make_imagenet_r_raw` write what those converters take (the official
  ``*_32x32.mat`` files, the ``food-101`` archive, ``imagenet-r.tar``).

Every image of class ``c`` has the colour :func:`~mmparax.testing.data.
class_colour` ``(c + 1)`` and its stripe texture plus noise, so a small
network learns the labels in a few iterations.

mmpretrain's ``CIFAR100`` checks the MD5 sums of the official files, which
no synthetic file can match: :class:`UncheckedCIFAR100` is the same reader
without those checks (registered as ``'UncheckedCIFAR100'`` in mmpretrain's
``DATASETS`` when this module is imported).
"""
import io
import json
import os
import os.path as osp
import pickle
import tarfile
from typing import Dict, Sequence, Tuple, Union

import numpy as np
from mmpretrain.datasets import CIFAR100
from mmpretrain.registry import DATASETS
from PIL import Image

from .data import _texture, class_colour

Size = Union[int, Tuple[int, int]]

# The 20 CIFAR-100 superclasses and their 5 classes each (the fine names are
# mmpretrain's CIFAR100_CATEGORIES, the file's fine_label_names).
CIFAR100_SUPERCLASSES = (
    ('aquatic_mammals', ('beaver', 'dolphin', 'otter', 'seal', 'whale')),
    ('fish', ('aquarium_fish', 'flatfish', 'ray', 'shark', 'trout')),
    ('flowers', ('orchid', 'poppy', 'rose', 'sunflower', 'tulip')),
    ('food_containers', ('bottle', 'bowl', 'can', 'cup', 'plate')),
    ('fruit_and_vegetables',
     ('apple', 'mushroom', 'orange', 'pear', 'sweet_pepper')),
    ('household_electrical_devices',
     ('clock', 'keyboard', 'lamp', 'telephone', 'television')),
    ('household_furniture', ('bed', 'chair', 'couch', 'table', 'wardrobe')),
    ('insects', ('bee', 'beetle', 'butterfly', 'caterpillar', 'cockroach')),
    ('large_carnivores', ('bear', 'leopard', 'lion', 'tiger', 'wolf')),
    ('large_man-made_outdoor_things',
     ('bridge', 'castle', 'house', 'road', 'skyscraper')),
    ('large_natural_outdoor_scenes',
     ('cloud', 'forest', 'mountain', 'plain', 'sea')),
    ('large_omnivores_and_herbivores',
     ('camel', 'cattle', 'chimpanzee', 'elephant', 'kangaroo')),
    ('medium_mammals', ('fox', 'porcupine', 'possum', 'raccoon', 'skunk')),
    ('non-insect_invertebrates',
     ('crab', 'lobster', 'snail', 'spider', 'worm')),
    ('people', ('baby', 'boy', 'girl', 'man', 'woman')),
    ('reptiles', ('crocodile', 'dinosaur', 'lizard', 'snake', 'turtle')),
    ('small_mammals', ('hamster', 'mouse', 'rabbit', 'shrew', 'squirrel')),
    ('trees', ('maple_tree', 'oak_tree', 'palm_tree', 'pine_tree',
               'willow_tree')),
    ('vehicles_1', ('bicycle', 'bus', 'motorcycle', 'pickup_truck', 'train')),
    ('vehicles_2', ('lawn_mower', 'rocket', 'streetcar', 'tank', 'tractor')),
)


def _pair(size: Size) -> Tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h < 8 or w < 8:
        raise ValueError(f'img_size must be at least 8x8, got {size}')
    return int(h), int(w)


def synthetic_image(rng, label: int, size: Size) -> np.ndarray:
    """[H, W, 3] uint8 RGB image of class ``label`` (0-based)."""
    size = _pair(size)
    colour = np.array(class_colour(label + 1), dtype=np.float32)
    stripes = _texture(label + 1, size)[..., None]
    image = colour * (1.0 + 0.25 * stripes)
    image = image + rng.normal(0, 8, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def _labels(rng, num: int, num_classes: int) -> np.ndarray:
    """Every class in turn (as balanced as ``num`` allows), shuffled."""
    return rng.permutation(np.arange(num) % num_classes)


def make_cifar100(root: str,
                  num_train: int = 200,
                  num_test: int = 100,
                  num_classes: int = 100,
                  seed: int = 0) -> str:
    """Write a CIFAR-100 set in the official python layout.

    ``root/cifar-100-python/`` gets ``train`` and ``test`` (pickled dicts:
    ``data`` uint8 [N, 3072] with the 1024 red, then green, then blue values
    of each 32x32 image row by row; ``fine_labels``, ``coarse_labels``,
    ``filenames``, ``batch_label``) and ``meta`` (``fine_label_names``,
    ``coarse_label_names``), as in ``cifar-100-python.tar.gz``.

    Args:
        root (str): The data root of the configs (``data/cifar100``).
        num_train, num_test (int): Images per split.
        num_classes (int): Labels used (the first ``num_classes`` of the 100;
            the meta file always lists all 100).
        seed (int): Seed of the images and labels.

    Returns:
        str: ``root``.
    """
    if not 1 <= num_classes <= 100:
        raise ValueError(f'num_classes must be in 1..100, got {num_classes}')
    fine_names = list(CIFAR100.METAINFO['classes'])
    coarse_names = [name for name, _ in CIFAR100_SUPERCLASSES]
    coarse_of = {
        fine: i
        for i, (_, fines) in enumerate(CIFAR100_SUPERCLASSES)
        for fine in fines
    }
    folder = osp.join(root, 'cifar-100-python')
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, num in (('train', num_train), ('test', num_test)):
        labels = _labels(rng, num, num_classes)
        images = [synthetic_image(rng, int(c), 32) for c in labels]
        data = np.stack([img.transpose(2, 0, 1).reshape(-1)
                         for img in images]) if images else \
            np.zeros((0, 3072), np.uint8)
        entry = dict(
            filenames=[
                f'{fine_names[c]}_s_{i:06d}.png' for i, c in enumerate(labels)
            ],
            batch_label=f'{"training" if split == "train" else "testing"} '
            'batch 1 of 1',
            fine_labels=[int(c) for c in labels],
            coarse_labels=[coarse_of[fine_names[c]] for c in labels],
            data=data.astype(np.uint8))
        with open(osp.join(folder, split), 'wb') as f:
            pickle.dump(entry, f, protocol=2)
    with open(osp.join(folder, 'meta'), 'wb') as f:
        pickle.dump(
            dict(fine_label_names=fine_names,
                 coarse_label_names=coarse_names), f, protocol=2)
    return root


def _encode(image: np.ndarray, ext: str) -> bytes:
    buffer = io.BytesIO()
    if ext in ('.jpg', '.jpeg'):
        Image.fromarray(image).save(buffer, format='JPEG', quality=95)
    else:
        Image.fromarray(image).save(buffer, format='PNG')
    return buffer.getvalue()


def make_image_folders(root: str,
                       classes: Sequence[str],
                       splits: Dict[str, int] = None,
                       img_size: Size = 32,
                       ext: str = '.png',
                       seed: int = 0) -> str:
    """Write ``root/<split>/<class>/<class>_<i><ext>`` images.

    The layout of mmpretrain's ``CustomDataset`` without an annotation file:
    the label of an image is the index of its folder in the sorted folder
    names (as torchvision's ``ImageFolder``).

    Args:
        root (str): The data root.
        classes (Sequence[str]): Folder names; class ``i`` of the sorted names
            gets the colour and texture of label ``i``.
        splits (dict): Images per class of each split, default
            ``{'train': 4, 'test': 2}``.
        img_size (int | tuple): (H, W) of the images.
        ext (str): ``'.png'`` or ``'.jpg'``.
        seed (int): Seed of the images.

    Returns:
        str: ``root``.
    """
    if ext not in ('.png', '.jpg', '.jpeg'):
        raise ValueError(f"ext must be '.png' or '.jpg', got {ext!r}")
    splits = {'train': 4, 'test': 2} if splits is None else splits
    rng = np.random.default_rng(seed)
    for split, per_class in splits.items():
        for label, name in enumerate(sorted(classes)):
            folder = osp.join(root, split, name)
            os.makedirs(folder, exist_ok=True)
            for i in range(per_class):
                image = synthetic_image(rng, label, img_size)
                with open(osp.join(folder, f'{name}_{i}{ext}'), 'wb') as f:
                    f.write(_encode(image, ext))
    return root


def make_svhn_mat(root: str,
                  num_train: int = 40,
                  num_test: int = 20,
                  seed: int = 0) -> str:
    """Write ``train_32x32.mat`` and ``test_32x32.mat`` as published.

    Each holds ``X`` uint8 [32, 32, 3, N] (RGB) and ``y`` uint8 [N, 1] with
    the digits 1-9 as themselves and the digit 0 as 10 (the "format 2" files
    of the SVHN site, MATLAB 5 files that ``scipy.io.loadmat`` reads). The
    image of digit ``d`` has the synthetic look of label ``d``.

    Returns:
        str: ``root``.
    """
    from scipy.io import savemat
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, num in (('train', num_train), ('test', num_test)):
        digits = _labels(rng, num, 10)
        images = [synthetic_image(rng, int(d), 32) for d in digits]
        x = np.stack(images, axis=-1) if images else \
            np.zeros((32, 32, 3, 0), np.uint8)
        y = np.where(digits == 0, 10, digits).astype(np.uint8)[:, None]
        savemat(osp.join(root, f'{split}_32x32.mat'), dict(X=x, y=y))
    return root


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def make_food101_raw(root: str,
                     classes: Sequence[str] = ('apple_pie', 'baby_back_ribs',
                                               'baklava'),
                     num_train: int = 3,
                     num_test: int = 1,
                     img_size: Size = 32,
                     archive: bool = True,
                     seed: int = 0) -> str:
    """Write the Food-101 release: ``food-101/images/<class>/<id>.jpg`` and
    ``food-101/meta/{classes,labels,train,test}.txt`` and
    ``{train,test}.json`` (``train.txt`` lines ``<class>/<id>``, the JSON
    files ``{class: [<class>/<id>, ...]}``).

    Args:
        root (str): Folder to write into.
        classes (Sequence[str]): Class names (lower case, ``_``-joined as in
            the real ``meta/classes.txt``).
        num_train, num_test (int): Images per class of each split.
        img_size (int | tuple): (H, W) of the images.
        archive (bool): Write ``root/food-101.tar.gz`` (the download) instead
            of the unpacked ``root/food-101`` folder.
        seed (int): Seed of the images and ids.

    Returns:
        str: The archive or the ``food-101`` folder.
    """
    rng = np.random.default_rng(seed)
    names = sorted(classes)
    ids = rng.permutation(10**6)[:len(names) * (num_train + num_test)]
    files, lists = {}, {'train': {}, 'test': {}}
    k = 0
    for label, name in enumerate(names):
        for split, num in (('train', num_train), ('test', num_test)):
            for _ in range(num):
                rel = f'{name}/{int(ids[k])}'
                k += 1
                lists[split].setdefault(name, []).append(rel)
                files[f'food-101/images/{rel}.jpg'] = _encode(
                    synthetic_image(rng, label, img_size), '.jpg')
    files['food-101/meta/classes.txt'] = ''.join(
        f'{n}\n' for n in names).encode()
    files['food-101/meta/labels.txt'] = ''.join(
        f'{n.replace("_", " ").capitalize()}\n' for n in names).encode()
    for split, by_class in lists.items():
        files[f'food-101/meta/{split}.txt'] = ''.join(
            f'{rel}\n' for n in names for rel in by_class.get(n, [])).encode()
        files[f'food-101/meta/{split}.json'] = json.dumps(by_class).encode()
    files['food-101/README.txt'] = b'Food-101 (synthetic)\n'
    os.makedirs(root, exist_ok=True)
    if archive:
        path = osp.join(root, 'food-101.tar.gz')
        with tarfile.open(path, 'w:gz') as tar:
            for name in sorted(files):
                _tar_add(tar, name, files[name])
        return path
    for name, data in files.items():
        path = osp.join(root, name)
        os.makedirs(osp.dirname(path), exist_ok=True)
        with open(path, 'wb') as f:
            f.write(data)
    return osp.join(root, 'food-101')


# renditions in the file names of imagenet-r.tar (e.g. ``art_12.jpg``)
RENDITIONS = ('art', 'cartoon', 'deviantart', 'embroidery', 'graffiti',
              'graphic', 'misc', 'origami', 'painting', 'sculpture',
              'sketch', 'sticker', 'tattoo', 'toy', 'videogame')


def make_imagenet_r_raw(root: str,
                        wnids: Sequence[str] = ('n01443537', 'n01484850',
                                                'n01494475', 'n01496331'),
                        per_class: int = 10,
                        img_size: Size = 32,
                        archive: bool = True,
                        seed: int = 0) -> str:
    """Write ImageNet-R as released: ``imagenet-r/<wnid>/<rendition>_<i>.jpg``
    and ``imagenet-r/README.txt``.

    Args:
        root (str): Folder to write into.
        wnids (Sequence[str]): Class folders (WordNet ids).
        per_class (int): Images per class.
        img_size (int | tuple): (H, W) of the images.
        archive (bool): Write ``root/imagenet-r.tar`` (the download) instead
            of the unpacked ``root/imagenet-r`` folder.
        seed (int): Seed of the images.

    Returns:
        str: The archive or the ``imagenet-r`` folder.
    """
    rng = np.random.default_rng(seed)
    files = {'imagenet-r/README.txt': b'ImageNet-R (synthetic)\n'}
    for label, wnid in enumerate(sorted(wnids)):
        for i in range(per_class):
            rendition = RENDITIONS[int(rng.integers(len(RENDITIONS)))]
            files[f'imagenet-r/{wnid}/{rendition}_{i}.jpg'] = _encode(
                synthetic_image(rng, label, img_size), '.jpg')
    os.makedirs(root, exist_ok=True)
    if archive:
        path = osp.join(root, 'imagenet-r.tar')
        with tarfile.open(path, 'w') as tar:
            for name in sorted(files):
                _tar_add(tar, name, files[name])
        return path
    for name, data in files.items():
        path = osp.join(root, name)
        os.makedirs(osp.dirname(path), exist_ok=True)
        with open(path, 'wb') as f:
            f.write(data)
    return osp.join(root, 'imagenet-r')


@DATASETS.register_module(force=True)
class UncheckedCIFAR100(CIFAR100):
    """mmpretrain's ``CIFAR100`` without the MD5 checks of the official
    files: reads any set in the ``cifar-100-python`` layout (the synthetic
    ones of :func:`make_cifar100`) and never downloads."""
    train_list = [[name, None] for name, _ in CIFAR100.train_list]
    test_list = [[name, None] for name, _ in CIFAR100.test_list]
    meta = dict(CIFAR100.meta, md5=None)

    def __init__(self, *args, **kwargs):
        kwargs['download'] = False
        super().__init__(*args, **kwargs)
