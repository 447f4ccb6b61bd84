"""mmseg's ``IoUMetric``, reporting ground-truth labels it cannot score."""
from typing import Dict, Sequence

from mmengine.logging import print_log
from mmseg.evaluation import IoUMetric as MMSegIoUMetric

from mmparax.registry import METRICS
from .checked import CHECK_TOOL, bad_label_values, describe_bad_labels

WARNING = 30


@METRICS.register_module()
class IoUMetric(MMSegIoUMetric):
    """mmseg's ``IoUMetric`` (same arguments and results) that warns about
    ground-truth pixels whose value is neither a class nor the ignore index.

    mmseg drops such pixels from every count without a word. Here they are
    still dropped, and one warning per evaluation gives the number of
    pixels and of label files, and names the first files.
    """

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        start = len(self.results)
        super().process(data_batch, data_samples)
        if len(self.results) - start != len(data_samples):
            return  # format_only: no ground truth
        num_classes = len(self.dataset_meta['classes'])
        for i, sample in enumerate(data_samples):
            labels = sample['gt_sem_seg']['data'].cpu().numpy()
            bad = bad_label_values(labels, num_classes, self.ignore_index)
            # kept with the areas: the results of all ranks are collected
            self.results[start + i] = (*self.results[start + i],
                                       (sample.get('seg_map_path'), bad))

    def compute_metrics(self, results: list) -> Dict[str, float]:
        bad = [found for *_, found in results if found[1].size]
        if bad:
            num_classes = len(self.dataset_meta['classes'])
            pixels = sum(values.size for _, values in bad)
            first = '; '.join(
                path + ': ' +
                describe_bad_labels(values, num_classes, self.ignore_index)
                for path, values in bad[:5])
            print_log(
                f'{pixels} ground-truth pixels in {len(bad)} of '
                f'{len(results)} label files are neither a class nor the '
                'ignore index; the metric leaves them out. '
                f'{first}{" ..." if len(bad) > 5 else ""}. {CHECK_TOOL} lists '
                'every such file.',
                logger='current',
                level=WARNING)
        return super().compute_metrics([r[:4] for r in results])
