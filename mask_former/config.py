"""Config keys of MaskFormer and Mask2Former, with the official repositories' names and defaults,
and the loading of a config file with command-line overrides that every entry point shares.

A config written for the official MaskFormer (facebookresearch/MaskFormer) or Mask2Former
(facebookresearch/Mask2Former) loads unchanged after `add_mask_former_config(cfg)`;
`load_config(config_file, opts)` does that in one call. Where the two defaults differ,
MaskFormer's is kept (TRANSFORMER_DECODER_NAME): Mask2Former's configs set theirs.
"""
import difflib
import logging
import re
from pathlib import Path
from typing import Sequence

import torch
import yaml
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg
from detectron2.projects.deeplab import add_deeplab_config

from .data.datasets.register_custom import apply_custom_root
from .errors import ConfigError

logger = logging.getLogger(__name__)

# The checkout this package lives in (an editable install): relative config paths are also
# looked up here, so that `--config-file configs/...` works from any directory.
REPO_ROOT = Path(__file__).resolve().parents[1]


def add_mask_former_config(cfg: CN) -> None:
    """Adds MaskFormer's keys to a detectron2 config, in place.

    Also adds DeepLab's keys (poly learning-rate schedule, dilated ResNet stems), which the
    official training script adds before MaskFormer's and its configs use.
    """
    add_deeplab_config(cfg)
    # ---- data
    # Dataset mapper, picked by name in train_net.py.
    cfg.INPUT.DATASET_MAPPER_NAME = "mask_former_semantic"
    # SSD-style photometric augmentation during training.
    cfg.INPUT.COLOR_AUG_SSD = False
    # Not an official key. True: the loader's workers only decode; resize, crop, colour jitter,
    # flip and the per-class targets run on MODEL.DEVICE in the training process
    # (mask_former/data/gpu_augmentation.py: the same distribution of augmentations, not the same
    # random draws). Semantic segmentation (INPUT.DATASET_MAPPER_NAME mask_former_semantic) only.
    cfg.INPUT.GPU_AUGMENTATION = False
    # The random crop is retried until no single category covers more than this fraction of it.
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0
    # Pad images and label maps to a multiple of this size in the dataset mapper (-1: no padding).
    cfg.INPUT.SIZE_DIVISIBILITY = -1
    # Large-scale jitter (Mask2Former's COCO recipes): images rescaled by a random factor in
    # [MIN_SCALE, MAX_SCALE] of IMAGE_SIZE, then cropped or padded to IMAGE_SIZE. Read by the LSJ
    # dataset mappers (coco_panoptic_lsj, coco_instance_lsj), which Mask2Former's phase 2 adds.
    cfg.INPUT.IMAGE_SIZE = 1024
    cfg.INPUT.MIN_SCALE = 0.1
    cfg.INPUT.MAX_SCALE = 2.0
    # A semantic-segmentation dataset folder in the layout of docs/custom_datasets.md
    # (classes.txt, images/{train,val}, labels/{train,val}, optional colors.txt). When set,
    # load_config registers it as custom_sem_seg_{train,val} and takes
    # MODEL.SEM_SEG_HEAD.NUM_CLASSES from classes.txt (see register_custom.apply_custom_root).
    # Not an official key.
    cfg.DATASETS.CUSTOM_ROOT = ""

    # ---- solver
    cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.0
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    # Learning rate of the backbone relative to SOLVER.BASE_LR.
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1
    # Autocast precision with SOLVER.AMP.ENABLED: "float16" (with loss scaling, as detectron2)
    # or "bfloat16" (float32's range: no loss scaling needed). Not an official key.
    cfg.SOLVER.AMP.PRECISION = "float16"

    # ---- model
    cfg.MODEL.MASK_FORMER = CN()
    # losses
    cfg.MODEL.MASK_FORMER.DEEP_SUPERVISION = True
    cfg.MODEL.MASK_FORMER.NO_OBJECT_WEIGHT = 0.1
    cfg.MODEL.MASK_FORMER.CLASS_WEIGHT = 1.0
    cfg.MODEL.MASK_FORMER.DICE_WEIGHT = 1.0
    cfg.MODEL.MASK_FORMER.MASK_WEIGHT = 20.0
    # Points per mask for Mask2Former's point-sampled matching and mask losses (its configs set
    # 12544 = 112 * 112). 0, the default here, selects MaskFormer's focal + dice losses on whole
    # masks, so that the official MaskFormer configs, which do not have the key, train as they did;
    # Mask2Former's own default is 112 * 112.
    cfg.MODEL.MASK_FORMER.TRAIN_NUM_POINTS = 0
    # Point-sampled mask losses: TRAIN_NUM_POINTS * OVERSAMPLE_RATIO random candidates, of which
    # TRAIN_NUM_POINTS * IMPORTANCE_SAMPLE_RATIO with the most uncertain predictions are kept and
    # the rest drawn uniformly (PointRend's k and beta).
    cfg.MODEL.MASK_FORMER.OVERSAMPLE_RATIO = 3.0
    cfg.MODEL.MASK_FORMER.IMPORTANCE_SAMPLE_RATIO = 0.75
    # transformer decoder
    cfg.MODEL.MASK_FORMER.NHEADS = 8
    cfg.MODEL.MASK_FORMER.DROPOUT = 0.1
    cfg.MODEL.MASK_FORMER.DIM_FEEDFORWARD = 2048
    cfg.MODEL.MASK_FORMER.ENC_LAYERS = 0
    cfg.MODEL.MASK_FORMER.DEC_LAYERS = 6
    cfg.MODEL.MASK_FORMER.PRE_NORM = False
    cfg.MODEL.MASK_FORMER.HIDDEN_DIM = 256
    cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES = 100
    # The transformer decoder (TRANSFORMER_DECODER_REGISTRY): MaskFormer's by default, as the
    # official MaskFormer configs leave it unset; Mask2Former's configs name theirs.
    # ("StandardTransformerDecoder" is the same, under Mask2Former's name; Mask2Former's own is
    # "MultiScaleMaskedTransformerDecoder", the official Mask2Former default.)
    cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME = "TransformerPredictor"
    # What it reads: a backbone feature name, "transformer_encoder" (TransformerEncoderPixelDecoder's
    # encoder output), "multi_scale_pixel_decoder" (the pixel decoder's multi-scale features) or
    # "pixel_embedding" (the mask features).
    cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE = "res5"
    cfg.MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ = False
    # inference
    cfg.MODEL.MASK_FORMER.TEST = CN()
    # Which outputs inference returns, in any combination: "sem_seg", "panoptic_seg",
    # "instances" (TEST.DETECTIONS_PER_IMAGE of them).
    cfg.MODEL.MASK_FORMER.TEST.SEMANTIC_ON = True
    cfg.MODEL.MASK_FORMER.TEST.INSTANCE_ON = False
    cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON = False
    cfg.MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD = 0.0
    cfg.MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD = 0.0
    cfg.MODEL.MASK_FORMER.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE = False
    # Images are padded to a multiple of this in the model (ResNet reports 0 on its own).
    cfg.MODEL.MASK_FORMER.SIZE_DIVISIBILITY = 32

    # ---- pixel decoder
    cfg.MODEL.SEM_SEG_HEAD.MASK_DIM = 256
    cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS = 0
    cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME = "BasePixelDecoder"
    # MSDeformAttnPixelDecoder: the features its deformable-attention encoder reads (the finer
    # IN_FEATURES go through FPN steps instead), and its heads and sampling points per head and
    # level; TRANSFORMER_ENC_LAYERS is its depth.
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS = 4
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS = 8
    # Not an official key. True: under SOLVER.AMP the encoder and FPN run in mixed precision too
    # (faster; changes results). False, as the official: they run in float32 always.
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_MIXED_PRECISION = False

    # ---- Swin Transformer backbone
    cfg.MODEL.SWIN = CN()
    cfg.MODEL.SWIN.PRETRAIN_IMG_SIZE = 224
    cfg.MODEL.SWIN.PATCH_SIZE = 4
    cfg.MODEL.SWIN.EMBED_DIM = 96
    cfg.MODEL.SWIN.DEPTHS = [2, 2, 6, 2]
    cfg.MODEL.SWIN.NUM_HEADS = [3, 6, 12, 24]
    cfg.MODEL.SWIN.WINDOW_SIZE = 7
    cfg.MODEL.SWIN.MLP_RATIO = 4.0
    cfg.MODEL.SWIN.QKV_BIAS = True
    cfg.MODEL.SWIN.QK_SCALE = None
    cfg.MODEL.SWIN.DROP_RATE = 0.0
    cfg.MODEL.SWIN.ATTN_DROP_RATE = 0.0
    cfg.MODEL.SWIN.DROP_PATH_RATE = 0.3
    cfg.MODEL.SWIN.APE = False
    cfg.MODEL.SWIN.PATCH_NORM = True
    # Activation checkpointing of every Swin block in training: recomputed in the backward pass
    # (same results) instead of stored, for less memory and about a third more backward time.
    cfg.MODEL.SWIN.USE_CHECKPOINT = False
    cfg.MODEL.SWIN.OUT_FEATURES = ["res2", "res3", "res4", "res5"]

    add_acceleration_config(cfg)


def add_acceleration_config(cfg: CN) -> None:
    """Adds cfg.ACCELERATION: the fast paths `mask_former.engine.accelerate` installs beside the
    eager model. Not official keys. Each applies only to a model on a CUDA device and gives the
    eager path's results up to float32 rounding; on a GPU they are on by default."""
    cfg.ACCELERATION = CN()
    # False: plain eager PyTorch everywhere; the keys below are then ignored.
    cfg.ACCELERATION.ENABLED = True
    # Replay the training forward and backward passes of backbone + head from CUDA graphs,
    # recorded once per batch shape (the training mappers pad batches to one size); matching,
    # losses and the optimizer stay eager around them.
    cfg.ACCELERATION.TRAIN_CUDA_GRAPH = True
    # Replay backbone + head in inference from a CUDA graph recorded once per input shape.
    cfg.ACCELERATION.TEST_CUDA_GRAPH = True
    # Graphs (training and inference, each) are recorded for at most this many input shapes;
    # other shapes run eagerly.
    cfg.ACCELERATION.CUDA_GRAPH_MAX_SHAPES = 2
    # torch.compile backbone + head, and semantic inference's upsampling and marginalisation:
    # fewer kernel launches and passes, after a first step that compiles for a minute or two.
    cfg.ACCELERATION.COMPILE = False
    # Convolution weights (and so the activations after them) in channels-last memory format,
    # cuDNN's native layout for bf16: no NCHW<->NHWC transposes around each convolution. A gain
    # where the network is compiled: one H200, MaskFormer R50 bf16 training with COMPILE 353 ->
    # 376 img/s; eager, none in training, and eager inference is several times slower
    # (docs/benchmarks.md, seventh and thirteenth rounds).
    cfg.ACCELERATION.CHANNELS_LAST = False
    # Frozen BatchNorms (the backbone's FrozenBN) folded into the convolutions before them: the
    # scaled weights and the shift as bias, one convolution instead of three passes.
    cfg.ACCELERATION.FOLD_FROZEN_BATCHNORM = True
    # The mask losses of all decoder layers, and the matcher's pairwise mask costs, as a few
    # fused (compiled) kernels (engine/fused_losses.py). One H200, MaskFormer R50 training, with
    # the losses' upsampling as shifted sums and the costs fused: 178 -> 197 img/s fp32,
    # 254 -> 296 bf16 (docs/benchmarks.md, seventh round).
    cfg.ACCELERATION.FUSED_MASK_LOSSES = True
    # Mask2Former's multi-scale deformable attention through torch.compile (fused sampling
    # kernels) instead of the eager grid_sample path.
    cfg.ACCELERATION.FAST_DEFORMABLE_ATTENTION = False
    # Mask2Former's deformable attention through Triton kernels that read the values in their
    # (B, S, M, D) layout, as the official CUDA op (ops/ms_deform_attn_triton.py); wins over
    # FAST_DEFORMABLE_ATTENTION. One H200, Mask2Former R50 training: 53.3 -> 64.0 img/s fp32,
    # 69.4 -> 88.9 bf16 (docs/benchmarks.md).
    cfg.ACCELERATION.TRITON_DEFORMABLE_ATTENTION = True
    # The matcher's Hungarian assignments solved on the GPU by a Triton kernel running scipy's
    # algorithm (the same assignment, ties included: modeling/assignment_triton.py), so that a
    # training step never waits for the GPU. One H200, MaskFormer R50 training: 155 -> 178 img/s
    # fp32 and 207 -> 254 bf16 on synthetic batches, 190 -> 228 bf16 from the real loader; CamVid
    # bf16 0.048 -> 0.033 s an iteration (docs/benchmarks.md, fifth and sixth rounds).
    cfg.ACCELERATION.TRITON_MATCHING = True
    # Semantic inference's maps as Triton kernels (modeling/semantic_maps_triton.py): the mask
    # logits' upsampling and sigmoid written once, and in bf16/fp16 their product with the class
    # probabilities (fp32 keeps cuBLAS's); wins over the compiled maps of COMPILE. One H200,
    # batch 16, eager: 660 -> 788 img/s bf16, 440 -> 465 fp32 (docs/benchmarks.md, 11th round).
    cfg.ACCELERATION.TRITON_SEMANTIC_MAPS = True
    # Training batches pinned in a background thread, copied to the GPU without a host wait.
    cfg.ACCELERATION.PINNED_BATCHES = True
    # AdamW's fused CUDA kernel.
    cfg.ACCELERATION.FUSED_OPTIMIZER = True
    # In training, the host goes on to the next step only once the GPU has at most this many
    # queued steps left to run (engine/host_lead.py): unbounded, a host that never waits for the
    # GPU fills CUDA's launch queue and spins inside a launch, a core lost to the loader.
    # 0: the host waits for each step.
    cfg.ACCELERATION.MAX_STEPS_AHEAD = 1
    # Intra-op CPU threads (torch.set_num_threads) of a process that trains on a GPU, set before
    # the model is built, so that autograd's device threads take it too. Its host only queues GPU
    # work; with one thread per core, any sizeable CPU op starts a team of OpenMP threads that
    # spin or must be woken on the cores the loader's workers use. 0: torch's default. One H200,
    # MaskFormer R50 bf16 from the real loader, the same setting through OMP_NUM_THREADS=1:
    # 171 -> 228 img/s (docs/benchmarks.md, sixth round).
    cfg.ACCELERATION.TRAINING_HOST_THREADS = 1
    # Keys of earlier versions of this project, so that old configs fail with the new name.
    for old, new in (("MODEL.MASK_FORMER.COMPILE", "ACCELERATION.COMPILE"),
                     ("MODEL.MASK_FORMER.TRAIN_CUDA_GRAPH", "ACCELERATION.TRAIN_CUDA_GRAPH"),
                     ("MODEL.MASK_FORMER.TEST.CUDA_GRAPH", "ACCELERATION.TEST_CUDA_GRAPH"),
                     ("MODEL.MASK_FORMER.CUDA_GRAPH_MAX_SHAPES", "ACCELERATION.CUDA_GRAPH_MAX_SHAPES")):
        cfg.register_renamed_key(old, new)

def resolve_config_file(name: str) -> Path:
    """The config file `name`, as given (relative to the current directory), else relative to
    the repository root."""
    if not name:
        raise ConfigError("no config file given: pass --config-file FILE")
    path = Path(name).expanduser()
    if path.is_file():
        return path.resolve()
    if not path.is_absolute() and (REPO_ROOT / path).is_file():
        return (REPO_ROOT / path).resolve()
    if path.is_dir():
        raise ConfigError(f"config file {name} is a directory, not a YAML file")
    if path.is_absolute():
        raise ConfigError(f"config file {name} not found")
    looked = Path.cwd() if Path.cwd() == REPO_ROOT else f"{Path.cwd()} and {REPO_ROOT}"
    raise ConfigError(f"config file {name} not found (looked in {looked})")


def default_config() -> CN:
    """detectron2's defaults with MaskFormer's and Mask2Former's keys (add_mask_former_config)."""
    cfg = get_cfg()
    add_mask_former_config(cfg)
    return cfg


def load_config(config_file: str, opts: Sequence[str] = ()) -> CN:
    """A MaskFormer config: the defaults, then `config_file` (with its _BASE_ files), then `opts`
    (KEY VALUE pairs, as on a command line). Not frozen.

    With DATASETS.CUSTOM_ROOT set, registers that dataset folder and takes NUM_CLASSES from its
    classes.txt (`register_custom.apply_custom_root`), so that every entry point sees it.

    Raises ConfigError, naming the file or key and what was expected, for a missing file, one
    that is not YAML or not a mapping of config keys, an unknown key and a value of the wrong type;
    ConfigError or MetadataFileError for a DATASETS.CUSTOM_ROOT that cannot be used.
    """
    path = resolve_config_file(config_file)
    cfg = default_config()
    _check_yaml_mapping(path, config_file, cfg)
    # yacs and detectron2 report an unknown key as KeyError (AssertionError in overrides), a
    # wrong type as ValueError, a missing _BASE_ file as OSError, bad YAML in a _BASE_ file as
    # yaml.YAMLError; each becomes one line naming the culprit.
    try:
        cfg.merge_from_file(str(path))
    except (KeyError, ValueError, OSError, yaml.YAMLError) as error:
        raise ConfigError(_describe_merge_error(cfg, f"config file {config_file}", error)) from None
    if len(opts) % 2:
        raise ConfigError(f"config overrides come in KEY VALUE pairs; {opts[-1]} has no value "
                          f"(overrides: {' '.join(opts)})")
    try:
        cfg.merge_from_list(list(opts))
    except (KeyError, ValueError, AssertionError) as error:
        raise ConfigError(_describe_merge_error(cfg, "config overrides", error)) from None
    apply_custom_root(cfg)
    return cfg


def _check_yaml_mapping(path: Path, name: str, cfg: CN) -> None:
    """Raises ConfigError unless `path` holds YAML whose top level is a mapping, with mappings
    where `cfg` has groups of keys (detectron2 fails on those with a TypeError of its own)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except UnicodeDecodeError:
        raise ConfigError(f"config file {name} is not a YAML file: it is not UTF-8 text") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {name} is not valid YAML: {_yaml_problem(error)}") from None
    if not isinstance(data, dict):
        what = "empty" if data is None else f"a {type(data).__name__}, not a mapping of config keys"
        raise ConfigError(f"config file {name} is not a config: its YAML is {what}")

    def check_groups(values: dict, node: CN, prefix: str) -> None:
        for key, value in values.items():
            default = node.get(key) if isinstance(key, str) else None
            if isinstance(default, CN):
                if not isinstance(value, dict):
                    raise ConfigError(f"config file {name}: {prefix}{key} is a group of keys, not a value "
                                      f"(got {value!r})")
                check_groups(value, default, f"{prefix}{key}.")

    check_groups(data, cfg, "")


def _yaml_problem(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return " ".join(f"{problem}{where}".split())


_UNKNOWN_KEY = re.compile(r"Non-existent (?:config )?key: (\S+)")
_TYPE_MISMATCH = re.compile(
    r"Type mismatch \((.+?) vs\. (.+?)\) with values \((.*) vs\. (.*)\) for config key: (\S+)$",
    re.DOTALL)
_TYPE_NAMES = {"int": "an integer", "float": "a number", "str": "a string", "bool": "True or False",
               "list": "a list", "tuple": "a list", "CfgNode": "a group of keys"}


def _describe_merge_error(cfg: CN, where: str, error: Exception) -> str:
    """One line for an error of merge_from_file/merge_from_list, from yacs's message."""
    if isinstance(error, yaml.YAMLError):
        return f"{where}: a _BASE_ file is not valid YAML: {_yaml_problem(error)}"
    if isinstance(error, OSError):
        return f"{where}: cannot read {error.filename}: {error.strerror}"
    text = str(error.args[0]) if error.args else str(error)
    unknown = _UNKNOWN_KEY.search(text)
    if unknown:
        key = unknown.group(1)
        parent, _, name = key.rpartition(".")
        node = cfg
        for part in parent.split(".") if parent else []:
            node = node.get(part) if isinstance(node, CN) else None
        siblings = list(node) if isinstance(node, CN) else []
        close = difflib.get_close_matches(name, siblings, n=1, cutoff=0.6)
        suggestion = f" (did you mean {parent + '.' if parent else ''}{close[0]}?)" if close else ""
        return f"{where}: unknown config key {key}{suggestion}"
    mismatch = _TYPE_MISMATCH.match(text)
    if mismatch:
        expected, _, default, value, key = mismatch.groups()
        expected = re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", expected)
        if expected == "CfgNode":
            return f"{where}: {key} is a group of keys, not a value (got {value})"
        example = repr(default) if expected == "str" else default
        return f"{where}: {key} expects {_TYPE_NAMES.get(expected, expected)} (like {example}), got {value}"
    return f"{where}: {' '.join(text.split())}"


def cpu_fallback(cfg: CN) -> CN:
    """`cfg`, or where it asks for CUDA and there is none, a copy on the CPU (with a warning).

    The copy is frozen when `cfg` is.
    """
    if not cfg.MODEL.DEVICE.startswith("cuda") or torch.cuda.is_available():
        return cfg
    logger.warning(f"MODEL.DEVICE is {cfg.MODEL.DEVICE} but CUDA is not available: running on the CPU")
    frozen = cfg.is_frozen()
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    if frozen:
        cfg.freeze()
    return cfg
