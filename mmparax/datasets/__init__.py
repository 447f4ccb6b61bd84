from .checked import (
    ADE20KDataset,
    CheckedDataMixin,
    CocoDataset,
    CocoPanopticDataset,
    DataError,
    LoveDADataset,
    PotsdamDataset,
    bad_label_values,
)
from .metrics import IoUMetric

__all__ = [
    'ADE20KDataset', 'CheckedDataMixin', 'CocoDataset', 'CocoPanopticDataset',
    'DataError', 'IoUMetric', 'LoveDADataset', 'PotsdamDataset',
    'bad_label_values'
]
