"""Small synthetic data sets in the on-disk layouts mmseg reads."""
import colorsys
import os
import os.path as osp
from typing import Tuple, Union

import numpy as np
from PIL import Image, ImageDraw

_SPLITS = (('training', 'train'), ('validation', 'val'))
_GOLDEN = 0.6180339887498949


def class_colour(label: int) -> Tuple[int, int, int]:
    """RGB colour of class ``label`` (1-based) in the synthetic images.

    Hues follow the golden-ratio sequence, so consecutive classes are far
    apart on the colour wheel; saturation and value alternate.
    """
    hue = ((label - 1) * _GOLDEN) % 1.0
    sat = (0.85, 0.55)[(label - 1) // 7 % 2]
    val = (0.9, 0.6)[(label - 1) % 2]
    r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
    return int(r * 255), int(g * 255), int(b * 255)


def _texture(label: int, shape: Tuple[int, int]) -> np.ndarray:
    """[H, W] stripes in [-1, 1] whose angle and period depend on the class."""
    h, w = shape
    angle = np.pi / 4 * ((label - 1) % 4)
    period = 4 + 2 * ((label - 1) // 4 % 4)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = (xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period
    return np.sin(phase)


def _shape_mask(rng, size: Tuple[int, int]) -> np.ndarray:
    """[H, W] bool mask of one large rectangle, ellipse or triangle."""
    h, w = size
    canvas = Image.new('L', (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    bh = int(rng.uniform(0.3, 0.6) * h)
    bw = int(rng.uniform(0.3, 0.6) * w)
    y0 = int(rng.integers(0, h - bh + 1))
    x0 = int(rng.integers(0, w - bw + 1))
    box = (x0, y0, x0 + bw, y0 + bh)
    kind = rng.integers(3)
    if kind == 0:
        draw.rectangle(box, fill=1)
    elif kind == 1:
        draw.ellipse(box, fill=1)
    else:
        apex = x0 + int(rng.integers(0, bw + 1))
        draw.polygon([(apex, y0), (x0, y0 + bh), (x0 + bw, y0 + bh)], fill=1)
    return np.asarray(canvas, dtype=bool)


def _sample(rng, size: Tuple[int, int], num_classes: int):
    """One image [H, W, 3] uint8 RGB and its label map [H, W] uint8.

    A background class fills the image; one to three shapes of other classes
    are painted over it; sometimes a small blob of label 0 ("other").
    Pixels of class c get colour ``class_colour(c)`` modulated by the
    class's stripe texture, plus noise.
    """
    h, w = size
    labels = np.empty((h, w), dtype=np.uint8)
    background = int(rng.integers(1, num_classes + 1))
    labels[:] = background
    for _ in range(int(rng.integers(1, 4))):
        label = int(rng.integers(1, num_classes + 1))
        if num_classes > 1:
            while label == background:
                label = int(rng.integers(1, num_classes + 1))
        labels[_shape_mask(rng, size)] = label
    if rng.random() < 0.5:
        r = max(2, min(h, w) // 12)
        cy, cx = int(rng.integers(r, h - r)), int(rng.integers(r, w - r))
        yy, xx = np.mgrid[0:h, 0:w]
        labels[(yy - cy)**2 + (xx - cx)**2 <= r * r] = 0

    image = np.zeros((h, w, 3), dtype=np.float32)
    for label in np.unique(labels):
        where = labels == label
        if label == 0:
            image[where] = rng.uniform(0, 255, size=(int(where.sum()), 3))
            continue
        colour = np.array(class_colour(int(label)), dtype=np.float32)
        stripes = _texture(int(label), size)[where][:, None]
        image[where] = colour * (1.0 + 0.2 * stripes)
    image += rng.normal(0, 6, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), labels


def make_ade20k(root: str,
                num_train: int = 8,
                num_val: int = 4,
                img_size: Union[int, Tuple[int, int]] = (64, 64),
                num_classes: int = 150,
                seed: int = 0) -> str:
    """Write a small synthetic data set in the ADE20K layout.

    Layout (what ``mmseg.datasets.ADE20KDataset`` reads)::

        root/images/training/ADE_train_00000001.jpg      RGB, img_size
        root/annotations/training/ADE_train_00000001.png uint8 labels
        root/images/validation/ADE_val_00000001.jpg
        root/annotations/validation/ADE_val_00000001.png

    Labels: 0 = "other" (mmseg's ``reduce_zero_label`` turns it into the
    ignore index 255), 1..num_classes = classes (0..num_classes-1 after
    the reduction). Each image is a textured background class with one to
    three large shapes of other classes; a class always has the same colour
    and stripe texture (see :func:`class_colour`), so a small model learns
    the set in a few hundred iterations. Deterministic given ``seed``.

    Args:
        root (str): Output folder (created; existing files are overwritten).
        num_train (int): Training images. Default: 8.
        num_val (int): Validation images. Default: 4.
        img_size (int | tuple[int, int]): (H, W). Default: (64, 64).
        num_classes (int): Classes, at most 255. Default: 150.
        seed (int): Seed. Default: 0.

    Returns:
        str: ``root``.
    """
    if isinstance(img_size, int):
        img_size = (img_size, img_size)
    h, w = img_size
    if h < 16 or w < 16:
        raise ValueError(f'img_size must be at least 16x16, got {img_size}')
    if not 1 <= num_classes <= 254:
        raise ValueError(f'num_classes must be in 1..254, got {num_classes}')
    rng = np.random.default_rng(seed)
    for (folder, tag), count in zip(_SPLITS, (num_train, num_val)):
        img_dir = osp.join(root, 'images', folder)
        ann_dir = osp.join(root, 'annotations', folder)
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        for i in range(1, count + 1):
            image, labels = _sample(rng, (h, w), num_classes)
            name = f'ADE_{tag}_{i:08d}'
            Image.fromarray(image, 'RGB').save(
                osp.join(img_dir, name + '.jpg'), quality=95)
            Image.fromarray(labels, 'L').save(osp.join(ann_dir, name + '.png'))
    return root
