"""MODEL.WEIGHTS and checkpoints: checked before a long run starts, loaded with one summary line.

`check_weights(path)` fails early, with advice, when MODEL.WEIGHTS cannot be fetched or found.
`MaskFormerCheckpointer` is detectron2's DetectionCheckpointer (official model-zoo .pkl files,
detectron2 checkpoints, plain state dicts) with three changes:

- a file that is not a readable checkpoint (corrupt, truncated, not a state dict) is one line;
- instead of a warning per parameter ("Skip loading parameter ...", "Some model parameters or
  buffers are not found ..."), one summary: how many of the model's weights were loaded and a few
  names of those missing, of another shape and unused. With `allow_partial=False` (evaluation,
  the demo) a checkpoint that leaves any weight of the model unloaded is refused; training may
  start from a partial one (ImageNet backbone weights, a model with another number of classes);
- under `--resume`, a `last_checkpoint` naming a truncated or missing file falls back to the
  newest complete checkpoint of the run, with a warning.
"""
import logging
import os
import pickle
import zipfile
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.file_io import PathManager

from .errors import UserError
from .modeling.meta_arch.mask_former_head import PixelDecoderHead, move_pixel_decoder_weights

logger = logging.getLogger(__name__)

HOW_TO_GET_WEIGHTS = (
    "To proceed: download the file on a machine with internet access and pass its local path "
    "(MODEL.WEIGHTS /path/to/file); convert ImageNet backbones with "
    "tools/convert-torchvision-to-d2.py (ResNet) or tools/convert-pretrained-swin-model-to-d2.py "
    "(Swin); official MaskFormer model-zoo .pkl files load as they are; or train from scratch "
    "with MODEL.WEIGHTS ''."
)

# What unpickling a file that is not a checkpoint raises (found by feeding torch.load and
# pickle.load random bytes, truncated and non-dict files): the pickle machinery fails in all of
# these ways, torch's zip reader with RuntimeError, detectron2's .pkl reader with
# TypeError/AttributeError on a pickle that is not a dict.
UNREADABLE_FILE_ERRORS = (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, KeyError,
                          IndexError, OverflowError, TypeError, AttributeError, ImportError,
                          AssertionError)

# How many names an error or warning lists before "...".
NAMES_SHOWN = 3


class WeightsError(UserError, ValueError):
    """Weights that do not fit the model, or no weights where they are needed."""


class UnreadableWeightsError(WeightsError):
    """A weight file that is not a readable checkpoint (corrupt, truncated, of another kind)."""


class WeightsNotFoundError(UserError, FileNotFoundError):
    """A weight file that does not exist or cannot be fetched."""


def check_weights(path: str, advice: str = HOW_TO_GET_WEIGHTS, required: bool = False) -> str:
    """The local path of MODEL.WEIGHTS `path` ("" for none: training from scratch).

    Raises WeightsNotFoundError, ending with `advice`, when it cannot be fetched or found, and
    WeightsError when it is empty but `required` (evaluation needs trained weights).
    """
    if not path:
        if required:
            raise WeightsError(
                "MODEL.WEIGHTS is empty: there are no trained weights to use (a randomly "
                "initialised model would be); pass MODEL.WEIGHTS /path/to/model_final.pth")
        return ""
    try:
        local = PathManager.get_local_path(path)
    except OSError as error:  # URLError, timeouts, connection errors: all OSErrors
        raise WeightsNotFoundError(
            f"MODEL.WEIGHTS={path} could not be fetched ({type(error).__name__}: "
            f"{' '.join(str(error).split())}). " + advice
        ) from None
    if not os.path.isfile(local):
        raise WeightsNotFoundError(f"MODEL.WEIGHTS={path}: no such file. " + advice)
    return local


def is_complete_checkpoint(path: str) -> bool:
    """Whether `path` is a whole checkpoint as torch.save writes them (a zip archive whose
    members all pass their CRC check): false for a file cut short by a killed or full-disk save."""
    if not os.path.isfile(path) or not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError):
        return False


def _names(keys: Sequence[str]) -> str:
    shown = ", ".join(keys[:NAMES_SHOWN])
    return shown + (", ..." if len(keys) > NAMES_SHOWN else "")


def _shapes(incorrect: Sequence[tuple]) -> str:
    shown = ", ".join(f"{key}: {tuple(ckpt)} in the checkpoint, {tuple(model)} in the model"
                      for key, ckpt, model in incorrect[:NAMES_SHOWN])
    return shown + (", ..." if len(incorrect) > NAMES_SHOWN else "")


class MaskFormerCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer with one-line errors, one summary warning and a resume fallback.

    Args:
        model: the model (a DistributedDataParallel model is unwrapped, as detectron2 does).
        save_dir: where checkpoints are saved and `last_checkpoint` is found.
        allow_partial: load a checkpoint that leaves some of the model's weights at their
            initial values (training from backbone weights, or with another number of classes),
            with one summary warning. When False (evaluation, demo), such a checkpoint and an
            empty path are refused with a WeightsError.
        checkpointables: saved and resumed with the model, as detectron2's (e.g. trainer=...).
    """

    def __init__(self, model: torch.nn.Module, save_dir: str = "", *, allow_partial: bool = False,
                 **checkpointables: Any):
        super().__init__(model, save_dir, **checkpointables)
        self.allow_partial = allow_partial
        self._loading: Optional[str] = None  # the path being loaded, for the messages

    def load(self, path: str, checkpointables: Optional[List[str]] = None) -> Dict[str, Any]:
        check_weights(path, required=not self.allow_partial)
        self._loading = path
        try:
            return super().load(path, checkpointables)
        finally:
            self._loading = None

    def resume_or_load(self, path: str, *, resume: bool = True) -> Dict[str, Any]:
        """The last checkpoint of `save_dir` with all checkpointables when `resume` and there is
        one (the newest complete one, with a warning, where `last_checkpoint` names a truncated
        or missing file); else the model weights of `path`."""
        if not (resume and self.has_checkpoint()):
            return self.load(path, checkpointables=[])
        last = self.get_checkpoint_file()
        if is_complete_checkpoint(last):
            return self.load(last)
        complete = sorted((f for f in self.get_all_checkpoint_files()
                           if os.path.abspath(f) != os.path.abspath(last)
                           and is_complete_checkpoint(f)), key=os.path.getmtime)
        state = "missing" if not os.path.exists(last) else "truncated or corrupt"
        if not complete:
            raise UnreadableWeightsError(
                f"--resume: {os.path.join(self.save_dir, 'last_checkpoint')} names {last}, which is "
                f"{state}, and {self.save_dir} holds no other complete checkpoint; start again "
                "without --resume (with a new OUTPUT_DIR, or --overwrite)")
        logger.warning(f"--resume: {last} (named by last_checkpoint) is {state}; resuming from "
                       f"{complete[-1]}, the newest complete checkpoint")
        return self.load(complete[-1])

    def _load_file(self, filename: str) -> Dict[str, Any]:
        try:
            checkpoint = super()._load_file(filename)
        except UNREADABLE_FILE_ERRORS as error:
            # The first sentence: torch's zip reader goes on about likely causes.
            reason = " ".join(str(error).split()).split(". ")[0][:200] or type(error).__name__
            raise UnreadableWeightsError(
                f"{self._loading or filename}: not a readable checkpoint, perhaps truncated or "
                f"corrupt ({type(error).__name__}: {reason})") from None
        weights = checkpoint.get("model") if isinstance(checkpoint, dict) else None
        # Any array will do: Caffe2-era .pkl files mix a few other entries in.
        if not isinstance(weights, dict) or not any(
                isinstance(value, (torch.Tensor, np.ndarray)) for value in weights.values()):
            raise UnreadableWeightsError(
                f"{self._loading or filename}: not a checkpoint of model weights (expected a "
                "state dict of tensors, or a dict with one under 'model')")
        return checkpoint

    def _load_model(self, checkpoint: Any):
        # The official model zoo keeps the pixel decoder directly under sem_seg_head.; moved under
        # sem_seg_head.pixel_decoder. before detectron2 compares shapes (the head would move them
        # itself while loading, after the comparison, and a shape mismatch would then raise).
        for name, module in self.model.named_modules():
            if isinstance(module, PixelDecoderHead):
                move_pixel_decoder_weights(checkpoint["model"], name + ".")
        return super()._load_model(checkpoint)

    def _log_incompatible_keys(self, incompatible) -> None:
        """One summary warning (or a WeightsError) instead of a line per parameter."""
        model_keys = set(self.model.state_dict())
        incorrect = incompatible.incorrect_shapes
        # detectron2 drops the weights of another shape from the checkpoint before loading, so
        # torch reports them as missing too.
        other_shape = {key for key, _, _ in incorrect}
        missing = [key for key in incompatible.missing_keys if key not in other_shape]
        unexpected = incompatible.unexpected_keys
        loaded = len(model_keys) - len(missing) - len(other_shape)
        path = self._loading
        unused = (f"{len(unexpected)} weights of the checkpoint are not in the model ("
                  f"{_names(unexpected)})") if unexpected else ""
        if not missing and not incorrect:
            if unused:
                logger.warning(f"{path}: {unused}; they are ignored")
            return
        parts = []
        if missing:
            parts.append(f"{len(missing)} are not in the checkpoint ({_names(missing)})")
        if incorrect:
            parts.append(f"{len(incorrect)} have another shape ({_shapes(incorrect)})")
        summary = f"{loaded} of the model's {len(model_keys)} weights loaded; " + " and ".join(parts)
        if not self.allow_partial or loaded == 0:
            has_head = any(key.startswith("sem_seg_head.") for key in model_keys - set(missing))
            hint = ("" if has_head or not loaded else
                    " It holds no segmentation head (sem_seg_head.*) weights: backbone weights are "
                    "a starting point for training, not a segmentation model.")
            raise WeightsError(
                f"{path} does not fit the model of this config: {summary}.{hint} Use the config "
                "the weights were trained with, or weights trained with this one.")
        logger.warning(f"{path}: {summary}; those keep their initial values"
                       + (f"; {unused}" if unused else ""))
