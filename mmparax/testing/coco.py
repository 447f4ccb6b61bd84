"""Small synthetic COCO data sets in the on-disk layouts mmdet reads.

Instance segmentation (``mmdet.datasets.CocoDataset``)::

    root/train2017/000000000001.jpg
    root/val2017/000000000101.jpg
    root/annotations/instances_{train,val}2017.json

Panoptic segmentation (``mmdet.datasets.CocoPanopticDataset`` and
``CocoPanopticMetric``)::

    root/{train,val}2017/*.jpg
    root/annotations/panoptic_{train,val}2017.json
    root/annotations/panoptic_{train,val}2017/*.png   RGB segment ids
    root/annotations/instances_{train,val}2017.json   the thing segments

Categories keep COCO's ids and names, so mmdet's class-subset mapping
(``metainfo=dict(classes=...)``) applies. ``categories='coco'`` writes the
full tables instead of the three default classes (:func:`coco_categories`):
the 80 thing classes of ``mmdet.datasets.CocoDataset`` and the 53 stuff
classes of ``CocoPanopticDataset``, under their official COCO ids, so the
real COCO configs read the files without a ``metainfo`` override.
"""
import functools
import json
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pycocotools.mask as mask_utils
from PIL import Image

from .data import class_colour

# (COCO id, name)
COCO_THINGS = ((1, 'person'), (3, 'car'), (18, 'dog'))
COCO_STUFF = ((149, 'road'), (187, 'sky-other-merged'), (193, 'grass-merged'))

# The official COCO category ids. Things: 1..90 without the ten ids COCO
# 2017 never uses (80 classes). Stuff: the 53 (partly merged) stuff classes
# of COCO panoptic 2017, ids 92..200, as listed with ``isthing: 0`` in the
# panoptic annotation files' ``categories`` (and in the category table of
# mmdet's ``tools/dataset_converters/
# prepare_coco_semantic_annos_from_panoptic_annos.py``). Both run in the
# order of the class names of mmdet's ``CocoDataset.METAINFO['classes']``
# and ``CocoPanopticDataset.METAINFO['stuff_classes']``.
COCO_UNUSED_THING_IDS = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)
COCO_THING_IDS = tuple(
    i for i in range(1, 91) if i not in COCO_UNUSED_THING_IDS)
COCO_STUFF_IDS = (92, 93, 95, 100, 107, 109, 112, 118, 119, 122, 125, 128,
                  130, 133, 138, 141, 144, 145, 147, 148, 149, 151, 154, 155,
                  156, 159, 161, 166, 168, 171, 175, 176, 177, 178, 180, 181,
                  184, 185, 186, 187, 188, 189, 190, 191, 192, 193, 194, 195,
                  196, 197, 198, 199, 200)

_SPLITS = (('train2017', 1), ('val2017', 101))  # folder, first image id
Size = Union[int, Tuple[int, int]]


@functools.lru_cache()
def coco_categories(kind: str = 'things') -> Tuple[Tuple[int, str], ...]:
    """The real COCO category table: ``((COCO id, name), ...)``.

    Args:
        kind (str): ``'things'``: the 80 classes of
            ``mmdet.datasets.CocoDataset.METAINFO['classes']`` with ids
            :data:`COCO_THING_IDS` (1..90 minus the unused ten).
            ``'stuff'``: the 53 panoptic stuff classes of
            ``CocoPanopticDataset.METAINFO['stuff_classes']`` with ids
            :data:`COCO_STUFF_IDS` (92..200).

    Returns:
        tuple[tuple[int, str]]: In mmdet's class order (ascending ids).
    """
    from mmdet.datasets import CocoDataset, CocoPanopticDataset
    if kind == 'things':
        names, ids = CocoDataset.METAINFO['classes'], COCO_THING_IDS
    elif kind == 'stuff':
        names = CocoPanopticDataset.METAINFO['stuff_classes']
        ids = COCO_STUFF_IDS
    else:
        raise ValueError(f"kind must be 'things' or 'stuff', got {kind!r}")
    if len(names) != len(ids):
        raise RuntimeError(f'mmdet lists {len(names)} COCO {kind} classes, '
                           f'COCO has {len(ids)} ids')
    return tuple(zip(ids, names))


Categories = Union[str, Sequence[Tuple[int, str]]]


def _categories(categories: Categories, kind: str):
    if isinstance(categories, str):
        if categories != 'coco':
            raise ValueError(f"categories must be 'coco' or a sequence of "
                             f'(COCO id, name), got {categories!r}')
        return coco_categories(kind)
    return tuple(categories)


def _size(img_size: Size) -> Tuple[int, int]:
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    if h < 32 or w < 32:
        raise ValueError(f'img_size must be at least 32x32 (mmdet filters '
                         f'smaller images), got {img_size}')
    return h, w


def _shape_polygon(rng, size: Tuple[int, int]) -> List[float]:
    """Flat [x0, y0, x1, y1, ...] of a rectangle, ellipse or triangle
    covering 20-50% of each side."""
    h, w = size
    bh = rng.uniform(0.2, 0.5) * h
    bw = rng.uniform(0.2, 0.5) * w
    y0 = rng.uniform(1, h - bh - 1)
    x0 = rng.uniform(1, w - bw - 1)
    kind = rng.integers(3)
    if kind == 0:
        points = [(x0, y0), (x0 + bw, y0), (x0 + bw, y0 + bh), (x0, y0 + bh)]
    elif kind == 1:
        t = np.linspace(0, 2 * np.pi, 16, endpoint=False)
        points = list(zip(x0 + bw / 2 * (1 + np.cos(t)),
                          y0 + bh / 2 * (1 + np.sin(t))))
    else:
        apex = x0 + rng.uniform(0, bw)
        points = [(apex, y0), (x0 + bw, y0 + bh), (x0, y0 + bh)]
    return [round(float(v), 2) for p in points for v in p]


def _polygon_mask(polygon: List[float], size: Tuple[int, int]) -> np.ndarray:
    """[H, W] bool mask of a polygon, rasterised as pycocotools does."""
    h, w = size
    rle = mask_utils.merge(mask_utils.frPyObjects([polygon], h, w))
    return mask_utils.decode(rle).astype(bool)


def _uncompressed_rle(mask: np.ndarray) -> Dict:
    """COCO's crowd encoding: column-major run lengths, starting with 0s."""
    flat = np.asfortranarray(mask).ravel(order='F').astype(np.uint8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0] + counts
    return {'size': list(mask.shape), 'counts': counts}


def _compressed_rle(mask: np.ndarray) -> Dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {'size': list(rle['size']), 'counts': rle['counts'].decode()}


def _bbox_area(mask: np.ndarray) -> Tuple[List[float], int]:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return [float(v) for v in mask_utils.toBbox(rle)], int(
        mask_utils.area(rle))


def _paint(image: np.ndarray, mask: np.ndarray, label: int) -> None:
    """Colour pixels of ``mask`` with the class colour and stripe texture."""
    h, w = mask.shape
    yy, xx = np.mgrid[0:h, 0:w]
    period = 4 + 2 * (label % 4)
    stripes = np.sin((xx + yy * (label % 3)) * 2 * np.pi / period)[mask]
    colour = np.array(class_colour(label), dtype=np.float32)
    image[mask] = colour * (1.0 + 0.2 * stripes[:, None])


def _save_image(image: np.ndarray, path: str, rng) -> None:
    """Save [H, W, 3] float RGB with a little noise as JPEG."""
    noisy = image + rng.normal(0, 4, size=image.shape)
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), 'RGB').save(
        path, quality=95)


def _image_entry(image_id: int, size: Tuple[int, int]) -> Dict:
    return {
        'id': image_id,
        'file_name': f'{image_id:012d}.jpg',
        'height': size[0],
        'width': size[1],
        'license': 1,
    }


def _dump(obj: Dict, path: str) -> None:
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(obj, f)


def _header() -> Dict:
    return {
        'info': {'description': 'mmparax synthetic COCO-layout data',
                 'version': '1.0', 'year': 2026},
        'licenses': [{'id': 1, 'name': 'synthetic', 'url': ''}],
    }


def make_coco_instance(root: str,
                       num_train: int = 4,
                       num_val: int = 2,
                       img_size: Size = (128, 128),
                       categories: Categories = COCO_THINGS,
                       crowd_prob: float = 0.25,
                       seed: int = 0) -> str:
    """Write a small synthetic COCO instance-segmentation set.

    Each image has a plain textured background and one to three objects
    (rectangles, ellipses, triangles) of the given categories, each with its
    class colour and stripe texture, annotated with a polygon
    (``iscrowd=0``). With probability ``crowd_prob`` an image also holds a
    crowd region annotated with an uncompressed RLE (``iscrowd=1``), as in
    COCO. Boxes and areas are computed by pycocotools from the masks; shapes
    may overlap, and each annotation covers its whole shape.

    Args:
        root (str): Output folder (created; files are overwritten).
        num_train (int): Training images. Default: 4.
        num_val (int): Validation images. Default: 2.
        img_size (int | tuple[int, int]): (H, W), at least 32. Default: 128.
        categories (Sequence[tuple[int, str]] | str): (COCO id, name) of
            the object classes, or ``'coco'`` for COCO's 80 thing classes
            (:func:`coco_categories`). Default: person, car, dog.
        crowd_prob (float): Chance of a crowd region per image. Default: 0.25.
        seed (int): Seed. Default: 0.

    Returns:
        str: ``root``.
    """
    size = _size(img_size)
    categories = _categories(categories, 'things')
    rng = np.random.default_rng(seed)
    cats = [{'id': cid, 'name': name, 'supercategory': 'thing'}
            for cid, name in categories]
    ann_id = 1
    for (folder, first_id), count in zip(_SPLITS, (num_train, num_val)):
        os.makedirs(osp.join(root, folder), exist_ok=True)
        images, annotations = [], []
        for image_id in range(first_id, first_id + count):
            entry = _image_entry(image_id, size)
            images.append(entry)
            image = np.zeros((*size, 3), dtype=np.float32)
            _paint(image, np.ones(size, dtype=bool), 0)
            image *= 0.35  # dark background
            objects = []
            for _ in range(int(rng.integers(1, 4))):
                label = int(rng.integers(len(cats)))
                polygon = _shape_polygon(rng, size)
                objects.append((label, polygon, False))
            if rng.random() < crowd_prob:
                objects.append((int(rng.integers(len(cats))),
                                _shape_polygon(rng, size), True))
            for label, polygon, crowd in objects:
                mask = _polygon_mask(polygon, size)
                if not mask.any():
                    continue
                _paint(image, mask, label + 1)
                bbox, area = _bbox_area(mask)
                segmentation = _uncompressed_rle(mask) if crowd else [polygon]
                annotations.append({
                    'id': ann_id,
                    'image_id': image_id,
                    'category_id': cats[label]['id'],
                    'segmentation': segmentation,
                    'area': area,
                    'bbox': bbox,
                    'iscrowd': int(crowd),
                })
                ann_id += 1
            _save_image(image, osp.join(root, folder, entry['file_name']), rng)
        _dump(dict(_header(), images=images, annotations=annotations,
                   categories=cats),
              osp.join(root, 'annotations', f'instances_{folder}.json'))
    return root


def id2rgb(segment_ids: np.ndarray) -> np.ndarray:
    """[H, W] segment ids -> [H, W, 3] uint8 RGB, id = R + 256 G + 256^2 B."""
    ids = segment_ids.astype(np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // 256**2 % 256],
                    axis=-1).astype(np.uint8)


def make_coco_panoptic(root: str,
                       num_train: int = 4,
                       num_val: int = 2,
                       img_size: Size = (128, 128),
                       things: Categories = COCO_THINGS,
                       stuff: Categories = COCO_STUFF,
                       void_prob: float = 0.5,
                       seed: int = 0,
                       instances: bool = True,
                       categories: Optional[str] = None) -> str:
    """Write a small synthetic COCO panoptic set.

    Each image is split into two or three horizontal bands of stuff classes;
    one to three thing objects (one segment each) are painted over it; with
    probability ``void_prob`` a small disc is left unlabelled (id 0, void).
    Panoptic PNGs encode the segment id as ``R + 256 G + 256^2 B``; segment
    ids are ``category_id * 1000 + k``. The panoptic json lists
    ``segments_info`` (id, category_id, iscrowd, bbox, area) per image and
    the categories with ``isthing``; the instances json holds the thing
    segments as compressed RLE, as COCO's instances files do.

    Args:
        root (str): Output folder (created; files are overwritten).
        num_train (int): Training images. Default: 4.
        num_val (int): Validation images. Default: 2.
        img_size (int | tuple[int, int]): (H, W), at least 32. Default: 128.
        things (Sequence[tuple[int, str]] | str): (COCO id, name) of thing
            classes, or ``'coco'`` for COCO's 80.
        stuff (Sequence[tuple[int, str]] | str): (COCO panoptic id, name)
            of stuff classes, at least two, or ``'coco'`` for COCO's 53.
        void_prob (float): Chance of a void disc per image. Default: 0.5.
        seed (int): Seed. Default: 0.
        instances (bool): Also write ``instances_*.json``. Default: True.
        categories (str, optional): ``'coco'`` sets both ``things`` and
            ``stuff`` to COCO's full tables (80 + 53 classes, the classes of
            ``CocoPanopticDataset``). Default: None (use ``things`` and
            ``stuff``).

    Returns:
        str: ``root``.
    """
    size = _size(img_size)
    h, w = size
    if categories is not None:
        if categories != 'coco':
            raise ValueError(f"categories must be None or 'coco', got "
                             f'{categories!r}')
        things = stuff = 'coco'
    things = _categories(things, 'things')
    stuff = _categories(stuff, 'stuff')
    if len(stuff) < 2:
        raise ValueError('give at least two stuff classes')
    rng = np.random.default_rng(seed)
    pan_cats = [{'id': cid, 'name': name, 'supercategory': 'thing',
                 'isthing': 1, 'color': list(class_colour(i + 1))}
                for i, (cid, name) in enumerate(things)]
    pan_cats += [{'id': cid, 'name': name, 'supercategory': 'stuff',
                  'isthing': 0,
                  'color': list(class_colour(len(things) + i + 1))}
                 for i, (cid, name) in enumerate(stuff)]
    colour_of = {c['id']: i + 1 for i, c in enumerate(pan_cats)}
    ins_cats = [{'id': c['id'], 'name': c['name'], 'supercategory': 'thing'}
                for c in pan_cats if c['isthing']]
    ann_id = 1
    for (folder, first_id), count in zip(_SPLITS, (num_train, num_val)):
        seg_dir = osp.join(root, 'annotations', f'panoptic_{folder}')
        os.makedirs(seg_dir, exist_ok=True)
        os.makedirs(osp.join(root, folder), exist_ok=True)
        images, pan_anns, ins_anns = [], [], []
        for image_id in range(first_id, first_id + count):
            entry = _image_entry(image_id, size)
            images.append(entry)
            ids = np.zeros(size, dtype=np.int64)
            segments = []  # (segment id, category id)
            bands = int(rng.integers(2, 4))
            cuts = np.sort(rng.choice(np.arange(h // 5, h - h // 5),
                                      bands - 1, replace=False))
            edges = [0, *cuts.tolist(), h]
            used = {}
            for b in range(bands):
                cid = stuff[int(rng.integers(len(stuff)))][0]
                # one segment per stuff class and image, as in COCO
                if cid not in used:
                    used[cid] = cid * 1000
                    segments.append((used[cid], cid))
                ids[edges[b]:edges[b + 1]] = used[cid]
            for k in range(int(rng.integers(1, 4))):
                cid = things[int(rng.integers(len(things)))][0]
                mask = _polygon_mask(_shape_polygon(rng, size), size)
                seg_id = cid * 1000 + k + 1
                ids[mask] = seg_id
                segments.append((seg_id, cid))
            if rng.random() < void_prob:
                r = max(3, min(h, w) // 10)
                cy = int(rng.integers(r, h - r))
                cx = int(rng.integers(r, w - r))
                yy, xx = np.mgrid[0:h, 0:w]
                ids[(yy - cy)**2 + (xx - cx)**2 <= r * r] = 0

            image = np.zeros((h, w, 3), dtype=np.float32)
            segments_info = []
            for seg_id, cid in segments:
                mask = ids == seg_id
                if not mask.any():  # fully covered by later segments
                    continue
                _paint(image, mask, colour_of[cid])
                bbox, area = _bbox_area(mask)
                segments_info.append({
                    'id': int(seg_id),
                    'category_id': int(cid),
                    'iscrowd': 0,
                    'bbox': [int(v) for v in bbox],
                    'area': area,
                })
                if cid in {c for c, _ in things}:
                    ins_anns.append({
                        'id': ann_id,
                        'image_id': image_id,
                        'category_id': int(cid),
                        'segmentation': _compressed_rle(mask),
                        'area': area,
                        'bbox': bbox,
                        'iscrowd': 0,
                    })
                    ann_id += 1
            image[ids == 0] = 127.0
            _save_image(image, osp.join(root, folder, entry['file_name']), rng)
            png = entry['file_name'].replace('.jpg', '.png')
            Image.fromarray(id2rgb(ids), 'RGB').save(osp.join(seg_dir, png))
            pan_anns.append({
                'image_id': image_id,
                'file_name': png,
                'segments_info': segments_info,
            })
        _dump(dict(_header(), images=images, annotations=pan_anns,
                   categories=pan_cats),
              osp.join(root, 'annotations', f'panoptic_{folder}.json'))
        if instances:
            _dump(dict(_header(), images=images, annotations=ins_anns,
                       categories=ins_cats),
                  osp.join(root, 'annotations', f'instances_{folder}.json'))
    return root


def coco_metainfo(categories: Categories = COCO_THINGS,
                  stuff: Optional[Categories] = None) -> Dict:
    """``metainfo`` selecting the classes of a synthetic set in mmdet.

    Instance sets: ``dict(classes=...)``; panoptic sets (``stuff`` given):
    ``classes`` (things then stuff), ``thing_classes`` and ``stuff_classes``.
    ``'coco'`` stands for the full tables (:func:`coco_categories`).
    """
    categories = _categories(categories, 'things')
    if stuff is not None:
        stuff = _categories(stuff, 'stuff')
    thing_names = tuple(name for _, name in categories)
    if stuff is None:
        return dict(classes=thing_names)
    stuff_names = tuple(name for _, name in stuff)
    return dict(
        classes=thing_names + stuff_names,
        thing_classes=thing_names,
        stuff_classes=stuff_names)
