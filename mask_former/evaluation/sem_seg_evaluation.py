"""detectron2's semantic segmentation metrics (mIoU, fwIoU, mACC, pACC) on checked ground truth."""
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from detectron2.evaluation import SemSegEvaluator

from ..data.io import read_semantic_label_map

__all__ = ["CheckedSemSegEvaluator"]


class CheckedSemSegEvaluator(SemSegEvaluator):
    """detectron2's SemSegEvaluator, whose ground-truth label maps are read and checked by
    `mask_former.data.io.read_semantic_label_map`.

    detectron2's own reader accepts a label map with a value that is neither a class nor the
    ignore label (its pixels then land in the confusion-matrix cells of other classes: a wrong
    mIoU, silently) or of a size other than the prediction's (a bare numpy error). Here both raise
    a DataError naming the label file, its image and the values or sizes. It also reads on numpy 2,
    where detectron2's reader fails (it asks numpy for `copy=False` while converting the dtype).
    """

    def __init__(self, dataset_name: str, distributed: bool = True,
                 output_dir: Optional[str] = None):
        """
        Args:
            dataset_name: a registered dataset whose dicts have "sem_seg_file_name" and whose
                metadata has stuff_classes and ignore_label.
            distributed: gather the confusion matrices of all workers in evaluate().
            output_dir: if given, predictions are written there (sem_seg_predictions.json).
        """
        super().__init__(dataset_name, distributed=distributed, output_dir=output_dir,
                         sem_seg_loading_fn=self._read_label_map)
        # (model input, prediction size (H, W)) of the image being processed: detectron2's
        # process() calls the loading function with the label's path only.
        self._scoring: Optional[Tuple[Dict, Tuple[int, int]]] = None

    def process(self, inputs: Sequence[Dict], outputs: Sequence[Dict]) -> None:
        """inputs: model inputs with "file_name"; outputs: {"sem_seg": (K, H, W) scores}."""
        for input, output in zip(inputs, outputs):
            self._scoring = (input, tuple(output["sem_seg"].shape[-2:]))
            try:
                super().process([input], [output])
            finally:
                self._scoring = None

    def _read_label_map(self, path: str, dtype=int) -> np.ndarray:
        """The checked label map of the image being scored, (H, W) of `dtype`."""
        input, prediction_size = self._scoring
        label = read_semantic_label_map(path, input, prediction_size, self._num_classes,
                                        self._ignore_label)
        return label.astype(dtype)
