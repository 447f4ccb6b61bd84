"""Data sets whose errors name the file, and label checks.

mmseg's and mmdet's data sets run their pipelines on a dict of paths; an
error inside a transform (a damaged PNG, a label beyond the classes that
only the loss notices) surfaces without the file it came from, and an empty
folder ends in numpy's ``need at least one array to concatenate``.
:class:`CheckedDataMixin` adds to a data set class:

- an empty data set is an error naming its folders (or annotation file);
- an error in a transform names the sample's files and the transform;
- in training (``test_mode=False``) a label map with values that are
  neither a class nor the ignore index stops the run, naming the file and
  the values. In evaluation the metric (:class:`IoUMetric`) counts them.

``tools/misc/check_dataset.py CONFIG`` runs the same checks over a whole
split and lists every bad file at once.
"""
from typing import List, Optional

import numpy as np
from mmdet.datasets import CocoDataset as MMDetCocoDataset
from mmdet.datasets import CocoPanopticDataset as MMDetCocoPanopticDataset
from mmseg.datasets import ADE20KDataset as MMSegADE20KDataset
from mmseg.datasets import LoveDADataset as MMSegLoveDADataset
from mmseg.datasets import PotsdamDataset as MMSegPotsdamDataset

from mmparax.registry import DATASETS

CHECK_TOOL = 'tools/misc/check_dataset.py CONFIG'


class DataError(RuntimeError):
    """A file of a data set cannot be used; the message names it.

    ``problem`` is the message without the advice that ends it.
    """

    @classmethod
    def of(cls, problem: str, advice: str) -> 'DataError':
        error = cls(f'{problem}. {advice}; {CHECK_TOOL} lists every such '
                    'file of a split.')
        error.problem = problem
        return error


def bad_label_values(labels: np.ndarray, num_classes: int,
                     ignore_index: int) -> np.ndarray:
    """[N] values of ``labels`` that are neither a class (0 to
    ``num_classes - 1``) nor ``ignore_index``, one per pixel."""
    labels = np.asarray(labels).ravel()
    return labels[((labels < 0) | (labels >= num_classes))
                  & (labels != ignore_index)]


def describe_bad_labels(values: np.ndarray, num_classes: int,
                        ignore_index: int) -> str:
    """'N pixels with values a, b (classes are 0-C-1, ignore index I)'."""
    shown = ', '.join(str(v) for v in np.unique(values)[:10])
    return (f'{values.size} pixels with values {shown} (the classes are '
            f'0-{num_classes - 1}, the ignore index {ignore_index})')


class CheckedDataMixin:
    """Errors that name the file; see the module docstring. Mixed into an
    mmengine ``BaseDataset`` subclass, before it."""

    def filter_data(self) -> List[dict]:
        data_list = super().filter_data()
        if not data_list:
            found = len(self.data_list)
            why = (f'all {found} samples were filtered out (filter_cfg='
                   f'{getattr(self, "filter_cfg", None)})') if found else \
                'no samples found'
            raise DataError(f'{type(self).__name__}: {why} in '
                            f'{self._where()}. Check data_root and the paths '
                            'of the config (--cfg-options data_root=PATH '
                            'sets every split).')
        return data_list

    def _where(self) -> str:
        parts = [f'{k}={v}' for k, v in self.data_prefix.items() if v]
        if self.ann_file:
            parts.insert(0, f'ann_file={self.ann_file}')
        for suffix in ('img_suffix', 'seg_map_suffix'):
            if getattr(self, suffix, None):
                parts.append(f'{suffix}={getattr(self, suffix)!r}')
        return ', '.join(parts)

    def prepare_data(self, idx):
        return self.run_pipeline(idx, check_labels=not self.test_mode)

    def check_sample(self, idx: int) -> Optional[str]:
        """The problem of sample ``idx`` (reading its files, its labels), or
        None: the pipeline runs up to its last ``Load*`` transform."""
        try:
            self.run_pipeline(idx, check_labels=True, loading_only=True)
        except DataError as error:
            return getattr(error, 'problem', str(error))
        return None

    def run_pipeline(self,
                     idx: int,
                     check_labels: bool = True,
                     loading_only: bool = False):
        """``self.pipeline`` on sample ``idx``, one transform at a time, so
        that an error names the sample's files and the transform.

        Args:
            check_labels (bool): Raise :class:`DataError` if the label map
                holds values that are neither a class nor the ignore index
                (checked once, right after it is loaded).
            loading_only (bool): Stop after the last ``Load*`` transform.
        """
        data = self.get_data_info(idx)
        files = ', '.join(f'{k}={v}' for k, v in data.items()
                          if k.endswith('_path') and v)
        transforms = self.pipeline.transforms
        if loading_only:
            loads = [i for i, t in enumerate(transforms)
                     if type(t).__name__.startswith('Load')]
            transforms = transforms[:loads[-1] + 1] if loads else []
        checked = not check_labels
        for transform in transforms:
            try:
                data = transform(data)
            except Exception as error:
                raise DataError.of(
                    f'{type(self).__name__}: sample {idx} ({files}): '
                    f'{type(transform).__name__} failed with '
                    f'{type(error).__name__}: {error}',
                    'Check or replace the file') from error
            if data is None:
                return None
            if not checked and 'gt_seg_map' in data:
                checked = True
                self._check_labels(data['gt_seg_map'], data)
        return data

    def _check_labels(self, labels: np.ndarray, data: dict) -> None:
        num_classes = len(self.metainfo['classes'])
        ignore_index = getattr(self, 'ignore_index', 255)
        bad = bad_label_values(labels, num_classes, ignore_index)
        if bad.size:
            reduced = ''
            if data.get('reduce_zero_label'):
                reduced = (' after reduce_zero_label (values '
                           f'{", ".join(map(str, np.unique(bad)[:10] + 1))} '
                           'in the file)')
            raise DataError.of(
                f'{type(self).__name__}: {data.get("seg_map_path")} has '
                f'{describe_bad_labels(bad, num_classes, ignore_index)}'
                f'{reduced}', 'Fix the label file (or the classes of the '
                'config)')


def _checked(base):
    """Register ``base`` with :class:`CheckedDataMixin` as
    ``mmparax.<name>``."""
    cls = type(base.__name__, (CheckedDataMixin, base), dict(
        __doc__=f'{base.__module__}.{base.__name__} whose errors name the '
        'file (:class:`CheckedDataMixin`).', __module__=__name__))
    return DATASETS.register_module(module=cls)


ADE20KDataset = _checked(MMSegADE20KDataset)
PotsdamDataset = _checked(MMSegPotsdamDataset)
LoveDADataset = _checked(MMSegLoveDADataset)
CocoDataset = _checked(MMDetCocoDataset)
CocoPanopticDataset = _checked(MMDetCocoPanopticDataset)
