#!/usr/bin/env python
"""MaskFormer training and evaluation script, on detectron2's DefaultTrainer.

    python train_net.py --config-file configs/ade20k/maskformer_R50.yaml --num-gpus 8
    python train_net.py --config-file CONFIG --eval-only MODEL.WEIGHTS model_final.pth
    python train_net.py --config-file CONFIG --resume        # continue from OUTPUT_DIR/last_checkpoint

Options after the flags are config overrides (KEY VALUE pairs). Multi-machine: --num-machines,
--machine-rank and --dist-url, as every detectron2 tool. Before training, the datasets of
DATASETS.TRAIN and DATASETS.TEST are checked: registered and loadable always; every file decoded
and checked on a first start (not with --resume; --skip-dataset-check skips it). A problem with
the config, the data, the weights or OUTPUT_DIR is reported in one line, with exit status 1.
"""
import importlib.util
import logging
import os
import sys
import weakref
from collections import OrderedDict
from typing import List

import torch
from detectron2.data import MetadataCatalog
from detectron2.engine import (AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase,
                               create_ddp_model, default_argument_parser, default_setup, hooks,
                               launch)
from detectron2.evaluation import DatasetEvaluators, verify_results
from detectron2.utils.events import CommonMetricPrinter, JSONWriter
from detectron2.projects.deeplab import build_lr_scheduler
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from torch.multiprocessing import ProcessExitedException

from mask_former.config import cpu_fallback, load_config
from mask_former.data import build_test_loader, build_train_loader
from mask_former.data.dataset_check import (check_datasets_registered_and_loadable,
                                            scan_before_training)
from mask_former.engine import (HostLeadHook, accelerate, build_host_lead, fused_optimizer,
                                limit_host_threads, pin_batches)
from mask_former.errors import ConfigError, UserError
from mask_former.evaluation import (CheckedSemSegEvaluator, InstanceSegEvaluator,
                                    PanopticQualityEvaluator)
from mask_former.solver import build_optimizer
from mask_former.test_time_augmentation import SemanticSegmentorWithTTA
from mask_former.weights import MaskFormerCheckpointer, check_weights

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
    loop = AMPTrainer(model, data_loader, optimizer, grad_scaler=scaler, precision=precision)
    # AMPTrainer takes async_write_metrics but does not hand it to SimpleTrainer (detectron2 of
    # April 2024), so its steps would wait for the GPU to read the losses.
    loop.async_write_metrics = True
    return loop


class Trainer(DefaultTrainer):
    """DefaultTrainer with MaskFormer's mappers, evaluators, optimizer and poly schedule."""

    def __init__(self, cfg):
        # A copy of DefaultTrainer.__init__, which cannot be told the acceleration step (the
        # loop runs the accelerated model, the checkpointer saves the eager one; the host's CPU
        # threads are limited before the model is built), the training
        # loop (bf16 AMP and metrics written off the step, build_train_loop), DDP's device_ids
        # (None on CPU workers) or the checkpointer (MaskFormerCheckpointer's one-line summaries).
        TrainerBase.__init__(self)
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        limit_host_threads(cfg)
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        device_ids = [comm.get_local_rank()] if cfg.MODEL.DEVICE.startswith("cuda") else None
        ddp_model = create_ddp_model(accelerate(model, cfg), broadcast_buffers=False,
                                     device_ids=device_ids)
        self._trainer = build_train_loop(cfg, ddp_model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = MaskFormerCheckpointer(model, cfg.OUTPUT_DIR, allow_partial=True,
                                                   trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.eval_results = OrderedDict()  # of the last evaluation (empty before one)
        self.register_hooks(self.build_hooks())

    def build_hooks(self):
        """detectron2's hooks, with an evaluation hook that keeps its results in `eval_results`,
        after the bound on the host's lead over the GPU (ACCELERATION.MAX_STEPS_AHEAD) on CUDA."""
        built = [hooks.EvalHook(self.cfg.TEST.EVAL_PERIOD, self.evaluate)
                 if isinstance(hook, hooks.EvalHook) else hook for hook in super().build_hooks()]
        lead = build_host_lead(self.cfg)
        # First, so that the iteration timer counts the wait for the GPU as part of the step.
        return built if lead is None else [HostLeadHook(lead)] + built

    def evaluate(self):
        self.eval_results = self.test(self.cfg, self.model)
        return self.eval_results

    def train(self):
        """Trains from `start_iter`; returns the last evaluation's results (empty without one)."""
        TrainerBase.train(self, self.start_iter, self.max_iter)
        if self.cfg.TEST.EXPECTED_RESULTS and comm.is_main_process():
            verify_results(self.cfg, self.eval_results)
        return self.eval_results

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
            evaluators.append(semantic_evaluator(dataset_name, output_folder))
        if "panoptic_seg" in tasks:
            evaluators.append(PanopticQualityEvaluator(dataset_name, output_dir=output_folder))
        if "instances" in tasks:
            evaluators.append(InstanceSegEvaluator(dataset_name, output_dir=output_folder))
        return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)

    @classmethod
    def build_train_loader(cls, cfg):
        return pin_batches(build_train_loader(cfg), cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_test_loader(cfg, dataset_name)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model, fused=fused_optimizer(cfg))

    @classmethod
    def test_with_TTA(cls, cfg, model):
        """Semantic metrics of the test-time augmented model (SemanticSegmentorWithTTA averages
        semantic outputs; a panoptic dataset gets its semantic metrics, as the official code)."""
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


def semantic_evaluator(dataset_name: str, output_folder: str) -> CheckedSemSegEvaluator:
    return CheckedSemSegEvaluator(dataset_name, distributed=True, output_dir=output_folder)


def argument_parser():
    """detectron2's arguments (default_argument_parser), --overwrite and --skip-dataset-check."""
    parser = default_argument_parser()
    parser.add_argument(
        "--overwrite", action="store_true",
        help="train into an OUTPUT_DIR that holds checkpoints of another run, replacing them "
             "as the new run saves its own (without it, such a directory is refused)")
    parser.add_argument(
        "--skip-dataset-check", action="store_true",
        help="start training without first decoding and checking every image and label file of "
             "DATASETS.TRAIN and DATASETS.TEST (done on a start without --resume, once per "
             "OUTPUT_DIR; tools/check_dataset.py runs the same check on its own)")
    return parser


def load_and_check(args):
    """The config of `args` (not frozen), checked against what the run will do.

    Raises ConfigError where training would replace the checkpoints of a previous run
    (without --resume or --overwrite), or test-time augmentation has nothing to evaluate, and
    a weights error where MODEL.WEIGHTS is needed (evaluation) and empty, or not found.
    """
    cfg = load_config(args.config_file, args.opts)
    if not args.eval_only and not args.resume and not args.overwrite:
        check_output_dir(cfg.OUTPUT_DIR)
    if args.eval_only and cfg.TEST.AUG.ENABLED:
        for name in cfg.DATASETS.TEST:
            evaluator_type = MetadataCatalog.get(name).get("evaluator_type", None)
            if "sem_seg" not in EVALUATORS.get(evaluator_type, ()):
                raise ConfigError(
                    f"TEST.AUG.ENABLED: test-time augmentation averages semantic outputs, and "
                    f"{name} (evaluator_type {evaluator_type!r}) has no semantic metrics; set "
                    "TEST.AUG.ENABLED False")
    if not (args.resume and os.path.exists(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"))):
        check_weights(cfg.MODEL.WEIGHTS, required=args.eval_only)
    return cfg


def check_output_dir(output_dir: str) -> None:
    """Raises ConfigError where `output_dir` holds a previous run's checkpoints."""
    found = [name for name in ("model_final.pth", "last_checkpoint")
             if os.path.exists(os.path.join(output_dir, name))]
    if found:
        state = "a finished run" if "model_final.pth" in found else "an unfinished run"
        raise ConfigError(
            f"OUTPUT_DIR {output_dir} holds {state} ({', '.join(found)}), which training would "
            "replace; pass --resume to continue it, set OUTPUT_DIR to a new directory, or pass "
            "--overwrite")


def setup(args):
    """The frozen config of `args`, and detectron2's logging, seeds and config dump."""
    cfg = cpu_fallback(load_and_check(args))
    cfg.freeze()
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="mask_former")
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
        if "sem_seg_TTA" in metrics:
            parts.append(f"mIoU with test-time augmentation {metrics['sem_seg_TTA']['mIoU']:.2f}")
        if parts:
            logger.info(f"Final results on {dataset}: " + ", ".join(parts))


def main(args):
    cfg = setup(args)
    check_datasets_registered_and_loadable(cfg, train=not args.eval_only)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        # Refuses weights that leave any of the model's weights unloaded.
        MaskFormerCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
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

    if not args.resume and not args.skip_dataset_check:
        scan_before_training(cfg)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    results = trainer.train()
    log_final_metrics(results, cfg.DATASETS.TEST)
    return results


# A worker's exit status after it reported a UserError (the launching process then exits quietly).
USER_ERROR_STATUS = 1


def report(error: UserError) -> None:
    print(f"train_net.py: error: {error}", file=sys.stderr, flush=True)


def launched_main(args):
    """main() in a launched worker; a UserError is reported in one line and ends the worker with
    USER_ERROR_STATUS. Closes the process group, whose threads otherwise abort the worker at
    exit (seen with Gloo)."""
    try:
        results = main(args)
    except UserError as error:
        report(error)
        if torch.distributed.is_initialized():  # no barrier: the other workers may not reach it
            torch.distributed.destroy_process_group()
        sys.exit(USER_ERROR_STATUS)
    if torch.distributed.is_initialized():
        comm.synchronize()  # no worker closes its connections while another still uses them
        torch.distributed.destroy_process_group()
    return results


def cli(argv=None) -> int:
    """train_net.py with command-line arguments `argv`; returns the exit status."""
    args = argument_parser().parse_args(argv)
    try:
        load_and_check(args)  # config problems: reported once, before any worker starts
    except UserError as error:
        report(error)
        return USER_ERROR_STATUS
    try:
        launch(launched_main, args.num_gpus, num_machines=args.num_machines,
               machine_rank=args.machine_rank, dist_url=args.dist_url, args=(args,))
    except SystemExit as stop:  # one process: launched_main ran here
        return stop.code
    except ProcessExitedException as error:
        if error.exit_code != USER_ERROR_STATUS:
            raise
        return USER_ERROR_STATUS  # the worker has reported its error
    return 0


if __name__ == "__main__":
    sys.exit(cli())
