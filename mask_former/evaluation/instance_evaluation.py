"""COCO mask AP of a mask-classification model's instance predictions."""
import os
from typing import Dict, Optional, Tuple

import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.evaluation import COCOEvaluator

from ..data.io import DataError, DataFileNotFoundError

__all__ = ["InstanceSegEvaluator"]


class InstanceSegEvaluator(COCOEvaluator):
    """Mask AP ("segm": AP, AP50, AP75, APs, APm, APl and per class) with the official COCO API.

    The model's classes are the dataset's contiguous ids. On a panoptic dataset its thing classes
    are a subset of them (ADE20K panoptic: 100 of 150, the synthetic shapes: 3 of 5), which
    COCOEvaluator does not accept: it needs the thing ids to be 0..T-1. This evaluator renumbers
    the thing classes 0..T-1 in dataset-id order (the order of the COCO API's categories) for
    COCOEvaluator, drops predictions of stuff classes, and names the classes by the dataset's
    `thing_classes` (indexed by contiguous id, detectron2's convention).

    Ground truth: the metadata's "json_file" (COCO instances format, category ids = the dataset
    ids of `thing_dataset_id_to_contiguous_id`); without one, COCOEvaluator converts the dataset
    dicts' "annotations" into `output_dir`. COCOEvaluator's pure-Python evaluation
    (use_fast_impl=False): this project's detectron2 has no compiled `_C`.
    """

    def __init__(self, dataset_name: str, output_dir: Optional[str] = None,
                 distributed: bool = True):
        """
        Args:
            dataset_name: a registered dataset with `thing_classes` and instance ground truth.
            output_dir: where COCOEvaluator writes the predictions (and a converted json).
            distributed: gather the predictions of all workers in evaluate().
        """
        # Loading first: this project's registrations set root-dependent metadata when loaded,
        # and the synthetic dataset is generated then.
        DatasetCatalog.get(dataset_name)
        metadata = MetadataCatalog.get(dataset_name)
        json_file = metadata.get("json_file", None)
        if json_file is not None and not os.path.isfile(json_file):
            raise DataFileNotFoundError(
                f"Mask AP on {dataset_name!r} needs its COCO instance annotations {json_file!r}, "
                "which do not exist: see datasets/README.md to prepare them, or set "
                "MODEL.MASK_FORMER.TEST.INSTANCE_ON False to evaluate without mask AP.")
        if metadata.get("thing_classes", None) is None:
            raise DataError(f"Mask AP on {dataset_name!r}: its metadata has no thing_classes")
        super().__init__(dataset_name, tasks=("segm",), distributed=distributed,
                         output_dir=output_dir, use_fast_impl=False)
        self._to_dense, self._metadata = dense_thing_view(self._metadata)

    def process(self, inputs, outputs):
        """Keeps each output's thing predictions, their classes renumbered 0..T-1."""
        renumbered = []
        for output in outputs:
            if "instances" not in output:
                raise KeyError("The model output has no 'instances' (for MaskFormer, set "
                               "MODEL.MASK_FORMER.TEST.INSTANCE_ON True)")
            instances = output["instances"].to(self._cpu_device)
            keep = [c in self._to_dense for c in instances.pred_classes.tolist()]
            instances = instances[torch.tensor(keep, dtype=torch.bool)]
            instances.pred_classes = torch.tensor(
                [self._to_dense[c] for c in instances.pred_classes.tolist()], dtype=torch.int64)
            renumbered.append({"instances": instances})
        super().process(inputs, renumbered)


def dense_thing_view(metadata) -> Tuple[Dict[int, int], Metadata]:
    """({model class: 0..T-1}, a Metadata for COCOEvaluator with the things renumbered so).

    Without `thing_dataset_id_to_contiguous_id` the classes are the dataset ids 0..T-1 already
    (as the converted json of such a dataset has them).
    """
    thing_classes = metadata.thing_classes
    mapping = metadata.get("thing_dataset_id_to_contiguous_id", None)
    if mapping is None:
        mapping = {i: i for i in range(len(thing_classes))}
    dataset_ids = sorted(mapping)
    to_dense = {mapping[dataset_id]: k for k, dataset_id in enumerate(dataset_ids)}
    view = Metadata(
        name=metadata.name,
        json_file=metadata.json_file,
        thing_classes=[thing_classes[mapping[dataset_id]] for dataset_id in dataset_ids],
        thing_dataset_id_to_contiguous_id={d: k for k, d in enumerate(dataset_ids)},
    )
    return to_dense, view
