"""Arrange Food-101 in train / test folders for ``CustomDataset``.

    python tools/dataset_converters/food101.py SRC [-o data/food-101]
        [--link copy|symlink|hardlink]

SRC is ``food-101.tar.gz`` (http://data.vision.ee.ethz.ch/cvl/
food-101.tar.gz) or its unpacked ``food-101`` folder (``images/<class>/
<id>.jpg``, ``meta/{train,test}.txt``). The official split (750 training and
250 test images per class: 75,750 / 25,250, the split of torchvision's
``Food101`` and of the ParaX reference) is copied to
``OUT/{train,test}/<class>/<id>.jpg``; the label of an image is the index of
its class in sorted order, as in those loaders. An archive is read twice
(its file list, then the images in archive order); unpacking it first and
passing the folder with ``--link symlink`` avoids copying the 5 GB.
"""
import argparse
import os
import os.path as osp
import shutil
import tarfile

SPLITS = ('train', 'test')
TOP = 'food-101'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='food-101.tar.gz or the food-101 folder')
    parser.add_argument('-o', '--out-dir', default='data/food-101',
                        help='output folder (default: data/food-101)')
    parser.add_argument('--link', choices=('copy', 'symlink', 'hardlink'),
                        default='copy',
                        help='how images of an unpacked SRC folder reach OUT '
                        '(default: copy; an archive is always extracted)')
    return parser.parse_args(argv)


def parse_split(text: str, name: str):
    """``[<class>/<id>, ...]`` of a ``meta/<split>.txt``."""
    entries = [line.strip() for line in text.splitlines() if line.strip()]
    for entry in entries:
        if entry.count('/') != 1:
            raise ValueError(f'{name}: expected <class>/<id> lines, got '
                             f'{entry!r}')
    return entries


class _Source:
    """Files of SRC by their path relative to the ``food-101`` folder."""

    def __init__(self, src: str):
        self.tar = None
        if osp.isdir(osp.join(src, TOP)):  # the folder holding food-101/
            src = osp.join(src, TOP)
        if osp.isdir(src):
            self.root = src
            return
        self.tar = tarfile.open(src)
        self.members = {}
        for member in self.tar.getmembers():
            if member.isfile():
                name = member.name
                if name.startswith(TOP + '/'):
                    name = name[len(TOP) + 1:]
                self.members[name] = member

    def read_text(self, rel: str) -> str:
        if self.tar is None:
            path = osp.join(self.root, rel)
            if not osp.isfile(path):
                raise FileNotFoundError(f'{path} not found')
            with open(path) as f:
                return f.read()
        if rel not in self.members:
            raise FileNotFoundError(f'{TOP}/{rel} not found in the archive')
        with self.tar.extractfile(self.members[rel]) as f:
            return f.read().decode()

    def images(self, wanted):
        """(rel path, tar member or file path) of the ``wanted`` paths, in
        archive order (sorted for a folder)."""
        if self.tar is None:
            for rel in sorted(wanted):
                yield rel, osp.join(self.root, rel)
            return
        for rel, member in self.members.items():
            if rel in wanted:
                yield rel, member

    def missing(self, wanted):
        if self.tar is None:
            return sorted(rel for rel in wanted
                          if not osp.isfile(osp.join(self.root, rel)))
        return sorted(set(wanted) - set(self.members))

    def close(self):
        if self.tar is not None:
            self.tar.close()


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


def convert(src: str, out_dir: str, link: str = 'copy'):
    """Write both splits; returns {split: number of images, 'classes': n}."""
    source = _Source(src)
    try:
        entries = {
            split: parse_split(source.read_text(f'meta/{split}.txt'),
                               f'meta/{split}.txt')
            for split in SPLITS
        }
        classes = sorted({e.split('/')[0] for es in entries.values()
                          for e in es})
        wanted = {f'images/{e}.jpg': (split, e)
                  for split, es in entries.items() for e in es}
        missing = source.missing(wanted)
        if missing:
            raise FileNotFoundError(
                f'{len(missing)} images listed in meta/ are missing, e.g. '
                f'{missing[:3]}')
        for split in SPLITS:
            for name in classes:
                os.makedirs(osp.join(out_dir, split, name), exist_ok=True)
        for rel, item in source.images(wanted):
            split, entry = wanted[rel]
            _place(item, osp.join(out_dir, split, f'{entry}.jpg'), link,
                   source.tar)
    finally:
        source.close()
    return dict(classes=len(classes),
                **{split: len(es) for split, es in entries.items()})


def main(argv=None):
    args = parse_args(argv)
    if not osp.exists(args.src):
        raise FileNotFoundError(
            f'{args.src} not found: download food-101.tar.gz from '
            'http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz')
    counts = convert(args.src, args.out_dir, args.link)
    print(f"{counts['classes']} classes: {counts['train']} train and "
          f"{counts['test']} test images -> {args.out_dir}/{{train,test}}/")


if __name__ == '__main__':
    main()
