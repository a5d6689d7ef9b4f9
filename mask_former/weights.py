"""Checks that MODEL.WEIGHTS can be read before a long run starts, with advice when it cannot."""
import logging
import os

from detectron2.utils.file_io import PathManager

logger = logging.getLogger(__name__)

HOW_TO_GET_WEIGHTS = (
    "To proceed: download the file on a machine with internet access and pass its local path "
    "(MODEL.WEIGHTS /path/to/file); convert ImageNet backbones with "
    "tools/convert-torchvision-to-d2.py (ResNet) or tools/convert-pretrained-swin-model-to-d2.py "
    "(Swin); official MaskFormer model-zoo .pkl files load as they are; or train from scratch "
    "with MODEL.WEIGHTS ''."
)


def check_weights(path: str) -> None:
    """Raises a clear error when MODEL.WEIGHTS names a file that cannot be fetched or found."""
    if not path:
        return
    try:
        local = PathManager.get_local_path(path)
    except Exception as error:  # network errors come in many types
        raise RuntimeError(
            f"MODEL.WEIGHTS={path!r} could not be fetched ({type(error).__name__}: {error}). "
            + HOW_TO_GET_WEIGHTS
        ) from error
    if not os.path.isfile(local):
        raise FileNotFoundError(f"MODEL.WEIGHTS={path!r}: no such file. " + HOW_TO_GET_WEIGHTS)
