#!/usr/bin/env python
"""MaskFormer training and evaluation script, on detectron2's DefaultTrainer.

    python train_net.py --config-file configs/ade20k/maskformer_R50.yaml --num-gpus 8
    python train_net.py --config-file CONFIG --eval-only MODEL.WEIGHTS model_final.pth
    python train_net.py --config-file CONFIG --resume        # continue from OUTPUT_DIR/last_checkpoint

Options after the flags are config overrides (KEY VALUE pairs). Multi-machine: --num-machines,
--machine-rank and --dist-url, as every detectron2 tool.
"""
import importlib.util
import logging
import os
import weakref
from collections import OrderedDict
from typing import List

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog
from detectron2.engine import (AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase,
                               default_argument_parser, default_setup, launch)
from detectron2.evaluation import DatasetEvaluators, SemSegEvaluator, verify_results
from detectron2.utils.events import CommonMetricPrinter, JSONWriter
from detectron2.projects.deeplab import build_lr_scheduler
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import setup_logger
from PIL import Image
from torch.nn.parallel import DistributedDataParallel

from mask_former import add_mask_former_config
from mask_former.data import build_train_loader
from mask_former.engine import accelerate, fused_optimizer, pin_batches
from mask_former.errors import ConfigError
from mask_former.evaluation import InstanceSegEvaluator, PanopticQualityEvaluator
from mask_former.solver import build_optimizer
from mask_former.test_time_augmentation import SemanticSegmentorWithTTA
from mask_former.weights import check_weights

# evaluator_type -> the ground truth its datasets have: "sem_seg" (mIoU etc.), "panoptic_seg" (PQ),
# "instances" (mask AP). Each is evaluated where the model predicts it: MODEL.MASK_FORMER.TEST.
# SEMANTIC_ON, PANOPTIC_ON, INSTANCE_ON.
EVALUATORS = {
    "sem_seg": ("sem_seg",),
    "cityscapes_sem_seg": ("sem_seg",),
    "coco": ("instances",),
    "cityscapes_instance": ("instances",),
    "ade20k_panoptic_seg": ("sem_seg", "panoptic_seg", "instances"),
    # detectron2's coco_2017_*_panoptic: no semantic label maps
    "coco_panoptic_seg": ("panoptic_seg", "instances"),
    # coco_2017_*_panoptic_with_sem_seg
    "coco_panoptic_seg_with_sem_seg": ("sem_seg", "panoptic_seg", "instances"),
    # detectron2's stuff map lacks the things, which detectron2's semantic evaluator needs
    "cityscapes_panoptic_seg": ("panoptic_seg",),
    "mapillary_vistas_panoptic_seg": ("sem_seg", "panoptic_seg"),
    "synthetic_panoptic_seg": ("sem_seg", "panoptic_seg", "instances"),
}
# ground truth -> the MODEL.MASK_FORMER.TEST key that turns its prediction on
MODEL_OUTPUTS = {"sem_seg": "SEMANTIC_ON", "panoptic_seg": "PANOPTIC_ON",
                 "instances": "INSTANCE_ON"}


def load_label_map(path: str, dtype=int) -> np.ndarray:
    """Reads a label map for SemSegEvaluator.

    detectron2's default loader asks numpy for `copy=False` while converting the dtype, which
    numpy 2 refuses; this one works on numpy 1 and 2.
    """
    with PathManager.open(path, "rb") as f:
        return np.asarray(Image.open(f), dtype=dtype)


def evaluation_tasks(cfg, dataset_name: str) -> List[str]:
    """What to evaluate on a dataset: its ground truth (EVALUATORS) that the model predicts."""
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
    if evaluator_type not in EVALUATORS:
        raise NotImplementedError(
            f"No evaluator for dataset {dataset_name!r} of evaluator_type {evaluator_type!r}; "
            f"supported: {sorted(EVALUATORS)}"
        )
    ground_truth = EVALUATORS[evaluator_type]
    test = cfg.MODEL.MASK_FORMER.TEST
    tasks = [task for task in ground_truth if test[MODEL_OUTPUTS[task]]]
    if not tasks:
        keys = " or ".join(f"MODEL.MASK_FORMER.TEST.{MODEL_OUTPUTS[task]}" for task in ground_truth)
        raise ConfigError(f"Nothing to evaluate on {dataset_name!r}: it has "
                          f"{' and '.join(ground_truth)} ground truth, which the model does not "
                          f"predict; set {keys} True")
    return tasks


AMP_PRECISIONS = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def create_ddp_model(model: torch.nn.Module) -> torch.nn.Module:
    """DistributedDataParallel over all workers when there are several, on GPUs or CPUs (Gloo).

    detectron2's own helper always passes device_ids, which DDP refuses for a CPU model.
    """
    if comm.get_world_size() == 1:
        return model
    on_gpu = next(model.parameters()).device.type == "cuda"
    device_ids = [comm.get_local_rank()] if on_gpu else None
    return DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)


def build_train_loop(cfg, model, data_loader, optimizer):
    """detectron2's SimpleTrainer, or AMPTrainer in SOLVER.AMP.PRECISION (bfloat16: no loss scaling).

    Losses are written to the event storage from a worker thread, so the step itself never waits
    for the GPU to read them.
    """
    if not cfg.SOLVER.AMP.ENABLED:
        return SimpleTrainer(model, data_loader, optimizer, async_write_metrics=True)
    if cfg.SOLVER.AMP.PRECISION not in AMP_PRECISIONS:
        raise ValueError(f"SOLVER.AMP.PRECISION={cfg.SOLVER.AMP.PRECISION!r}; choose one of "
                         f"{sorted(AMP_PRECISIONS)}")
    precision = AMP_PRECISIONS[cfg.SOLVER.AMP.PRECISION]
    scaler = torch.amp.GradScaler("cuda", enabled=precision == torch.float16)
    return AMPTrainer(model, data_loader, optimizer, grad_scaler=scaler, precision=precision)


class Trainer(DefaultTrainer):
    """DefaultTrainer with MaskFormer's mappers, evaluators, optimizer and poly schedule."""

    def __init__(self, cfg):
        # DefaultTrainer.__init__ with three changes: the acceleration step (the training loop runs
        # the accelerated model, the checkpointer saves the eager one), DDP that also runs on CPU
        # workers, and the training loop of build_train_loop.
        TrainerBase.__init__(self)
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        eager = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, eager)
        data_loader = self.build_train_loader(cfg)
        model = create_ddp_model(accelerate(eager, cfg))
        self._trainer = build_train_loop(cfg, model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = DetectionCheckpointer(eager, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def build_writers(self):
        """detectron2's writers, without TensorBoard's where the tensorboard package is missing."""
        if importlib.util.find_spec("tensorboard") is not None:
            return super().build_writers()
        logging.getLogger("mask_former").warning(
            "tensorboard is not installed: metrics go to the log and metrics.json only "
            "(pip install tensorboard for TensorBoard event files).")
        return [CommonMetricPrinter(self.max_iter),
                JSONWriter(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json"))]

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference")
        tasks = evaluation_tasks(cfg, dataset_name)
        evaluators = []
        if "sem_seg" in tasks:
            evaluators.append(SemSegEvaluator(dataset_name, distributed=True,
                                              output_dir=output_folder,
                                              sem_seg_loading_fn=load_label_map))
        if "panoptic_seg" in tasks:
            evaluators.append(PanopticQualityEvaluator(dataset_name, output_dir=output_folder))
        if "instances" in tasks:
            evaluators.append(InstanceSegEvaluator(dataset_name, output_dir=output_folder))
        return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)

    @classmethod
    def build_train_loader(cls, cfg):
        return pin_batches(build_train_loader(cfg), cfg)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model, fused=fused_optimizer(cfg))

    @classmethod
    def test_with_TTA(cls, cfg, model):
        logging.getLogger("mask_former").info("Running inference with test-time augmentation ...")
        model = SemanticSegmentorWithTTA(cfg, model)
        # the augmented model predicts semantic segmentation only: evaluate nothing else
        semantic_cfg = cfg.clone()
        semantic_cfg.defrost()
        semantic_cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON = False
        semantic_cfg.MODEL.MASK_FORMER.TEST.INSTANCE_ON = False
        output_folder = os.path.join(cfg.OUTPUT_DIR, "inference_TTA")
        evaluators = [cls.build_evaluator(semantic_cfg, name, output_folder=output_folder)
                      for name in cfg.DATASETS.TEST]
        results = cls.test(cfg, model, evaluators)
        return OrderedDict((k + "_TTA", v) for k, v in results.items())


def setup(args):
    cfg = get_cfg()
    add_mask_former_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    if not torch.cuda.is_available() and cfg.MODEL.DEVICE.startswith("cuda"):
        logging.getLogger("mask_former").warning("CUDA is not available: running on the CPU.")
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=args.machine_rank, name="mask_former")
    return cfg


def log_final_metrics(results, dataset_names):
    """One line per test dataset with the headline numbers (mIoU, PQ, mask AP)."""
    if not results:
        return
    # DefaultTrainer.test returns the metrics themselves when there is one test dataset.
    per_dataset = {dataset_names[0]: results} if len(dataset_names) == 1 else results
    logger = logging.getLogger("mask_former")
    for dataset, metrics in per_dataset.items():
        parts = []
        if "sem_seg" in metrics:
            parts.append(f"mIoU {metrics['sem_seg']['mIoU']:.2f}")
        if "panoptic_seg" in metrics:
            parts.append(f"PQ {metrics['panoptic_seg']['PQ']:.2f}")
        if "segm" in metrics:
            parts.append(f"AP {metrics['segm']['AP']:.2f}")
        if parts:
            logger.info(f"Final results on {dataset}: " + ", ".join(parts))


def main(args):
    cfg = setup(args)
    if args.eval_only:
        check_weights(cfg.MODEL.WEIGHTS)
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        model = accelerate(model, cfg)
        results = Trainer.test(cfg, model)
        if cfg.TEST.AUG.ENABLED:
            results.update(Trainer.test_with_TTA(cfg, model))
        if results:
            verify_results(cfg, results)
        log_final_metrics(results, cfg.DATASETS.TEST)
        return results

    if not args.resume:
        check_weights(cfg.MODEL.WEIGHTS)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    trainer.train()
    results = getattr(trainer, "_last_eval_results", None)
    log_final_metrics(results, cfg.DATASETS.TEST)
    return results


def launched_main(args):
    """main() in a launched worker; closes the process group, whose threads otherwise abort the
    worker at exit (seen with Gloo)."""
    try:
        return main(args)
    finally:
        if torch.distributed.is_initialized():
            comm.synchronize()  # no worker closes its connections while another still uses them
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    launch(
        launched_main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
