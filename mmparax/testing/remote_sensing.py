"""Tiny ISPRS Potsdam and LoveDA sets in the layouts mmseg's converters write.

``make_potsdam`` and ``make_loveda`` write what
``tools/dataset_converters/{potsdam,loveda}.py`` of mmseg leave on disk (and
``PotsdamDataset`` / ``LoveDADataset`` read); ``make_potsdam_raw`` and
``make_loveda_raw`` write the same content as the downloaded archives those
converters take, so that the converters themselves can be checked against
the writers.
"""
import io
import math
import os
import os.path as osp
import zipfile
from typing import Iterator, Tuple, Union

import numpy as np
from PIL import Image

from .data import _shape_mask, _texture, class_colour

Size = Union[int, Tuple[int, int]]

# The converter's split of the 38 Potsdam tiles: these 24 are training tiles,
# every other tile id goes to validation (the 14 below in the real set).
POTSDAM_TRAIN_TILES = (
    '2_10', '2_11', '2_12', '3_10', '3_11', '3_12', '4_10', '4_11', '4_12',
    '5_10', '5_11', '5_12', '6_10', '6_11', '6_12', '6_7', '6_8', '6_9',
    '7_10', '7_11', '7_12', '7_7', '7_8', '7_9')
POTSDAM_VAL_TILES = ('5_15', '6_15', '6_13', '3_13', '4_14', '6_14', '5_14',
                     '2_13', '4_15', '2_14', '5_13', '4_13', '3_14', '7_13')
# RGB colours of labels 1..6 in the ISPRS label tifs (impervious surface,
# building, low vegetation, tree, car, clutter: PotsdamDataset's classes in
# order); black (label 0) marks the eroded boundaries of *_noBoundary.tif.
POTSDAM_COLOURS = ((255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0),
                   (255, 255, 0), (255, 0, 0))
POTSDAM_CLASSES = 6
# LoveDA masks: 0 = no-data, 1..7 = background, building, road, water,
# barren, forest, agricultural (LoveDADataset's classes in order).
LOVEDA_CLASSES = 7


def _pair(size: Size, name: str) -> Tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h < 16 or w < 16:
        raise ValueError(f'{name} must be at least 16x16, got {size}')
    return int(h), int(w)


def _scene(rng, size: Tuple[int, int], num_classes: int,
           background: int) -> Tuple[np.ndarray, np.ndarray]:
    """Labels [H, W] uint8 in 1..num_classes and the image [H, W, 3] uint8.

    ``background`` fills the image; one to three shapes of other classes are
    painted over it. A class always has the colour :func:`class_colour` and
    its stripe texture, plus noise (as ``make_ade20k``).
    """
    labels = np.full(size, background, dtype=np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        label = int(rng.integers(1, num_classes + 1))
        while label == background:
            label = int(rng.integers(1, num_classes + 1))
        labels[_shape_mask(rng, size)] = label
    image = np.zeros(size + (3, ), dtype=np.float32)
    for label in np.unique(labels):
        where = labels == label
        colour = np.array(class_colour(int(label)), dtype=np.float32)
        stripes = _texture(int(label), size)[where][:, None]
        image[where] = colour * (1.0 + 0.2 * stripes)
    image += rng.normal(0, 6, size=image.shape)
    return labels, np.clip(image, 0, 255).astype(np.uint8)


def _erode_boundaries(labels: np.ndarray, radius: int) -> np.ndarray:
    """``labels`` with 0 wherever another class lies within ``radius``
    pixels (city-block distance): the ISPRS eroded reference."""
    out = labels.copy()
    h, w = labels.shape
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if abs(dy) + abs(dx) > radius or (dy, dx) == (0, 0):
                continue
            ys, yd = slice(max(dy, 0), h + min(dy, 0)), \
                slice(max(-dy, 0), h + min(-dy, 0))
            xs, xd = slice(max(dx, 0), w + min(dx, 0)), \
                slice(max(-dx, 0), w + min(-dx, 0))
            differs = labels[yd, xd] != labels[ys, xs]
            out[yd, xd][differs] = 0
    return out


def _potsdam_tiles(num_train, num_val, tile_size, boundary,
                   seed) -> Iterator[Tuple[str, str, np.ndarray, np.ndarray]]:
    """(split, tile id, image [H, W, 3] RGB, labels [H, W] in 0..6) of each
    tile: the first ``num_train`` / ``num_val`` ids of the converter's
    lists."""
    if not 0 <= num_train <= len(POTSDAM_TRAIN_TILES):
        raise ValueError(f'num_train must be in 0..{len(POTSDAM_TRAIN_TILES)}'
                         f' (Potsdam training tiles), got {num_train}')
    if not 0 <= num_val <= len(POTSDAM_VAL_TILES):
        raise ValueError(f'num_val must be in 0..{len(POTSDAM_VAL_TILES)} '
                         f'(Potsdam validation tiles), got {num_val}')
    if boundary < 0:
        raise ValueError(f'boundary must be >= 0, got {boundary}')
    size = _pair(tile_size, 'tile_size')
    rng = np.random.default_rng(seed)
    tiles = [('train', t) for t in POTSDAM_TRAIN_TILES[:num_train]] + \
        [('val', t) for t in POTSDAM_VAL_TILES[:num_val]]
    for k, (split, tile) in enumerate(tiles):
        labels, image = _scene(rng, size, POTSDAM_CLASSES,
                               background=1 + k % POTSDAM_CLASSES)
        if boundary:
            labels = _erode_boundaries(labels, boundary)
        yield split, tile, image, labels


def potsdam_clip_boxes(height: int, width: int, clip_size: int = 512,
                       stride_size: int = 256):
    """The (x0, y0, x1, y1) windows mmseg's Potsdam converter cuts from a
    ``height`` x ``width`` tile, without its duplicates.

    As in ``tools/dataset_converters/potsdam.py``: the number of windows per
    axis comes from ``stride_size``, but window k starts at
    ``k * clip_size``, moved back to ``size - clip_size`` where it would
    cross the border; windows that coincide overwrite each other. A 6000 x
    6000 tile at the defaults gives 12 x 12 windows starting at 0, 512, ...,
    5120 and 5488.
    """

    def starts(length):
        steps = math.ceil((length - clip_size) / stride_size)
        if steps * stride_size + clip_size < length:
            steps += 1
        return sorted({min(k * clip_size, length - clip_size)
                       for k in range(steps + 1)})

    if clip_size > min(height, width):
        raise ValueError(f'clip_size {clip_size} exceeds the tile '
                         f'{height}x{width}')
    return [(x, y, x + clip_size, y + clip_size) for y in starts(height)
            for x in starts(width)]


def make_potsdam(root: str,
                 num_train: int = 2,
                 num_val: int = 1,
                 tile_size: Size = (128, 128),
                 clip_size: int = 64,
                 stride_size: int = 32,
                 boundary: int = 1,
                 seed: int = 0) -> str:
    """Write a small synthetic ISPRS Potsdam set as mmseg's converter does.

    Layout (``tools/dataset_converters/potsdam.py``; what
    ``mmseg.datasets.PotsdamDataset`` reads)::

        root/img_dir/train/2_10_0_0_64_64.png   RGB, clip_size x clip_size
        root/ann_dir/train/2_10_0_0_64_64.png   uint8 labels, same name
        root/img_dir/val/5_15_0_0_64_64.png
        root/ann_dir/val/5_15_0_0_64_64.png

    Each tile (ids from the converter's train / val lists, e.g. ``2_10``)
    is cut into the windows of :func:`potsdam_clip_boxes`, named
    ``{tile}_{x0}_{y0}_{x1}_{y1}.png``. Labels: 1..6 = impervious surface,
    building, low vegetation, tree, car, clutter; 0 = boundary pixels
    (black in the eroded ``*_label_noBoundary.tif`` reference; ignored:
    ``reduce_zero_label`` makes it 255 and the classes 0..5). The real set:
    6000 x 6000 tiles, 512 clips, stride 256, 3456 training and 2016
    validation images.

    Args:
        root (str): Output folder (created; existing files are overwritten).
        num_train (int): Training tiles (1..24). Default: 2.
        num_val (int): Validation tiles (1..14). Default: 1.
        tile_size (int | tuple[int, int]): (H, W) of a tile. Default: 128.
        clip_size (int): Side of the clips. Default: 64.
        stride_size (int): The converter's ``--stride_size``. Default: 32.
        boundary (int): Radius in pixels of the eroded boundaries (label 0)
            between classes; 0 for none. Default: 1.
        seed (int): Seed. Default: 0.

    Returns:
        str: ``root``.
    """
    for split in ('train', 'val'):
        for kind in ('img_dir', 'ann_dir'):
            os.makedirs(osp.join(root, kind, split), exist_ok=True)
    for split, tile, image, labels in _potsdam_tiles(
            num_train, num_val, tile_size, boundary, seed):
        for x0, y0, x1, y1 in potsdam_clip_boxes(*labels.shape, clip_size,
                                                 stride_size):
            name = f'{tile}_{x0}_{y0}_{x1}_{y1}.png'
            Image.fromarray(image[y0:y1, x0:x1], 'RGB').save(
                osp.join(root, 'img_dir', split, name))
            Image.fromarray(labels[y0:y1, x0:x1], 'L').save(
                osp.join(root, 'ann_dir', split, name))
    return root


def _tif_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, 'RGB').save(buffer, format='TIFF')
    return buffer.getvalue()


def make_potsdam_raw(root: str,
                     num_train: int = 2,
                     num_val: int = 1,
                     tile_size: Size = (128, 128),
                     boundary: int = 1,
                     seed: int = 0) -> str:
    """Write the tiles of :func:`make_potsdam` as the ISPRS download.

    ``root/2_Ortho_RGB.zip`` holds ``2_Ortho_RGB/top_potsdam_{tile}_RGB.tif``
    and ``root/5_Labels_all_noBoundary.zip`` holds
    ``top_potsdam_{tile}_label_noBoundary.tif`` (RGB colours
    :data:`POTSDAM_COLOURS`, black boundaries): the input of
    ``tools/dataset_converters/potsdam.py root``, which then writes what
    :func:`make_potsdam` writes with the same arguments (and its
    ``--clip_size`` / ``--stride_size``).

    Returns:
        str: ``root``.
    """
    os.makedirs(root, exist_ok=True)
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[1:POTSDAM_CLASSES + 1] = POTSDAM_COLOURS
    with zipfile.ZipFile(osp.join(root, '2_Ortho_RGB.zip'), 'w') as images, \
            zipfile.ZipFile(osp.join(root, '5_Labels_all_noBoundary.zip'),
                            'w') as labels_zip:
        for _, tile, image, labels in _potsdam_tiles(
                num_train, num_val, tile_size, boundary, seed):
            images.writestr(f'2_Ortho_RGB/top_potsdam_{tile}_RGB.tif',
                            _tif_bytes(image))
            labels_zip.writestr(f'top_potsdam_{tile}_label_noBoundary.tif',
                                _tif_bytes(palette[labels]))
    return root


def _loveda_images(num_train, num_val, num_test, img_size, no_data, seed):
    """(split, domain, file name, image, mask) of each LoveDA image; masks
    in 0..7, None for the test split."""
    for name, value in (('num_train', num_train), ('num_val', num_val),
                        ('num_test', num_test)):
        if value < 0:
            raise ValueError(f'{name} must be >= 0, got {value}')
    if not 0.0 <= no_data <= 1.0:
        raise ValueError(f'no_data must be in [0, 1], got {no_data}')
    size = _pair(img_size, 'img_size')
    rng = np.random.default_rng(seed)
    index = 0
    for split, count in (('train', num_train), ('val', num_val),
                         ('test', num_test)):
        for k in range(count):
            # the first half of a split is rural, the rest urban
            domain = 'Rural' if k < (count + 1) // 2 else 'Urban'
            mask, image = _scene(rng, size, LOVEDA_CLASSES,
                                 background=1 + index % LOVEDA_CLASSES)
            if rng.random() < no_data:
                # a no-data band (black pixels, label 0) along one border
                band = max(2, size[0] // 8)
                side = int(rng.integers(4))
                region = [np.s_[:band, :], np.s_[-band:, :],
                          np.s_[:, :band], np.s_[:, -band:]][side]
                mask[region] = 0
                image[region] = 0
            yield (split, domain, f'{index}.png', image,
                   None if split == 'test' else mask)
            index += 1


def _png_bytes(array: np.ndarray, mode: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, format='PNG')
    return buffer.getvalue()


def make_loveda(root: str,
                num_train: int = 4,
                num_val: int = 2,
                num_test: int = 0,
                img_size: Size = (64, 64),
                no_data: float = 0.5,
                seed: int = 0) -> str:
    """Write a small synthetic LoveDA set as mmseg's converter does.

    Layout (``tools/dataset_converters/loveda.py``, which moves the
    ``images_png`` / ``masks_png`` files of both domains, Rural and Urban,
    of Train.zip, Val.zip and Test.zip; what ``mmseg.datasets.LoveDADataset``
    reads)::

        root/img_dir/train/0.png   RGB, img_size
        root/ann_dir/train/0.png   uint8 mask, same name
        root/img_dir/val/4.png     (numbering continues over the splits)
        root/ann_dir/val/4.png
        root/img_dir/test/6.png    (no masks for the test split)

    Masks: 1..7 = background, building, road, water, barren, forest,
    agricultural; 0 = no-data (ignored: ``reduce_zero_label`` makes it 255
    and the classes 0..6), here a black band along one border of some
    images. The real set: 1024 x 1024 images, 2522 / 1669 / 1796 for
    train / val / test.

    Args:
        root (str): Output folder (created; existing files are overwritten).
        num_train (int): Training images. Default: 4.
        num_val (int): Validation images. Default: 2.
        num_test (int): Test images (no masks). Default: 0.
        img_size (int | tuple[int, int]): (H, W). Default: (64, 64).
        no_data (float): Share of the images with a no-data band.
            Default: 0.5.
        seed (int): Seed. Default: 0.

    Returns:
        str: ``root``.
    """
    for split in ('train', 'val', 'test'):
        os.makedirs(osp.join(root, 'img_dir', split), exist_ok=True)
    for split in ('train', 'val'):
        os.makedirs(osp.join(root, 'ann_dir', split), exist_ok=True)
    for split, _, name, image, mask in _loveda_images(
            num_train, num_val, num_test, img_size, no_data, seed):
        Image.fromarray(image, 'RGB').save(
            osp.join(root, 'img_dir', split, name))
        if mask is not None:
            Image.fromarray(mask, 'L').save(
                osp.join(root, 'ann_dir', split, name))
    return root


def make_loveda_raw(root: str,
                    num_train: int = 4,
                    num_val: int = 2,
                    num_test: int = 0,
                    img_size: Size = (64, 64),
                    no_data: float = 0.5,
                    seed: int = 0) -> str:
    """Write the images of :func:`make_loveda` as the LoveDA download.

    ``root/{Train,Val,Test}.zip`` hold
    ``{Split}/{Rural,Urban}/images_png/{n}.png`` and, but for Test,
    ``{Split}/{Rural,Urban}/masks_png/{n}.png``: the input of
    ``tools/dataset_converters/loveda.py root``, which then writes what
    :func:`make_loveda` writes with the same arguments.

    Returns:
        str: ``root``.
    """
    os.makedirs(root, exist_ok=True)
    archives = {
        split: zipfile.ZipFile(osp.join(root, f'{split.title()}.zip'), 'w')
        for split in ('train', 'val', 'test')
    }
    try:
        for split, archive in archives.items():
            kinds = ('images_png', ) if split == 'test' else \
                ('images_png', 'masks_png')
            for domain in ('Rural', 'Urban'):
                for kind in kinds:  # the converter lists every folder
                    archive.writestr(f'{split.title()}/{domain}/{kind}/', b'')
        for split, domain, name, image, mask in _loveda_images(
                num_train, num_val, num_test, img_size, no_data, seed):
            folder = f'{split.title()}/{domain}'
            archives[split].writestr(f'{folder}/images_png/{name}',
                                     _png_bytes(image, 'RGB'))
            if mask is not None:
                archives[split].writestr(f'{folder}/masks_png/{name}',
                                         _png_bytes(mask, 'L'))
    finally:
        for archive in archives.values():
            archive.close()
    return root
