"""MaskFormer through onnxruntime, without a torch model: the predictor of `demo.py --onnx`.

    from onnx_predictor import OnnxPredictor
    predictor = OnnxPredictor(cfg, "model.onnx")    # the config the model was exported from
    outputs = predictor(load_image("photo.jpg"))    # as MaskFormerPredictor's outputs

The ONNX file (tools/export_model.py) holds the network with its normalisation and padding; the
config supplies what surrounds it, as for the torch predictor: INPUT.FORMAT, the test-time resize
(INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST), the panoptic switches and thresholds, the metadata. The
semantic scores are the export's `sem_seg`, resized to the image; panoptic segments come from its
`pred_logits` and `pred_masks` through the model's own panoptic inference.
"""
import numpy as np
import torch
import torch.nn.functional as F
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T

from mask_former.export import ExportError, read_export_metadata
from mask_former.export.formats import onnx_runner
from mask_former.modeling.postprocessing import crop_and_resize, panoptic_inference

# pred_masks are at 1/4 of the padded input (the pixel decoder's stride).
MASK_STRIDE = 4


class OnnxPredictor:
    """One image through an exported MaskFormer: `OnnxPredictor(cfg, path)(bgr_image)` returns
    {"sem_seg": (K, H, W)} and, with MODEL.MASK_FORMER.TEST.PANOPTIC_ON, "panoptic_seg"."""

    def __init__(self, cfg, path: str):
        exported = read_export_metadata(path)
        expected = {"input_format": cfg.INPUT.FORMAT,
                    "num_classes": str(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)}
        for key, value in expected.items():
            if exported.get(key) != value:
                raise ExportError(
                    f"{path} was exported with {key} {exported.get(key)!r} but the config has "
                    f"{value!r}; pass the config it was exported from (--config-file)")
        self.run = onnx_runner(path)
        self.path = path
        self.input_format = cfg.INPUT.FORMAT
        self.aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
        test = cfg.MODEL.MASK_FORMER.TEST
        self.panoptic_on = test.PANOPTIC_ON
        self.object_mask_threshold = test.OBJECT_MASK_THRESHOLD
        self.overlap_threshold = test.OVERLAP_THRESHOLD
        self.within_masks = cfg.MODEL.MASK_FORMER.TRAIN_NUM_POINTS > 0  # Mask2Former's rule
        self.thing_ids = None
        if self.panoptic_on:
            name = cfg.DATASETS.TRAIN[0] if cfg.DATASETS.TRAIN else None
            mapping = MetadataCatalog.get(name).get("thing_dataset_id_to_contiguous_id", None) if name else None
            if mapping is None:
                raise ExportError(f"Panoptic inference needs `thing_dataset_id_to_contiguous_id` in "
                                  f"the metadata of DATASETS.TRAIN[0] ({name!r}); or set "
                                  "MODEL.MASK_FORMER.TEST.PANOPTIC_ON False")
            self.thing_ids = list(mapping.values())

    def __call__(self, original_image: np.ndarray) -> dict:
        """(H, W, 3) uint8 BGR image -> the predictions at its size."""
        height, width = original_image.shape[:2]
        image = original_image[:, :, ::-1] if self.input_format == "RGB" else original_image
        image = self.aug.get_transform(image).apply_image(image)
        resized = image.shape[:2]
        batch = np.ascontiguousarray(image.astype(np.float32).transpose(2, 0, 1)[None])
        pred_logits, pred_masks, sem_seg = (torch.from_numpy(t) for t in self.run(batch))
        result = {"sem_seg": crop_and_resize(sem_seg[0], resized, height, width)}
        if self.panoptic_on:
            padded = tuple(MASK_STRIDE * s for s in pred_masks.shape[-2:])
            masks = F.interpolate(pred_masks, size=padded, mode="bilinear", align_corners=False)
            masks = crop_and_resize(masks[0], resized, height, width)
            result["panoptic_seg"] = panoptic_inference(
                pred_logits[0], masks, self.thing_ids, self.object_mask_threshold,
                self.overlap_threshold, within_masks=self.within_masks)
        return result
