"""Deployment: MaskFormer's inference as an ONNX or TorchScript graph (tools/export_model.py)."""
from .exportable_model import INPUT_NAME, OUTPUT_NAMES, ExportableMaskFormer
from .formats import (
    EXPORTERS,
    FORMATS,
    RUNNERS,
    ExportError,
    check_export,
    check_sizes,
    export_metadata,
    read_export_metadata,
)

__all__ = ["INPUT_NAME", "OUTPUT_NAMES", "ExportableMaskFormer", "EXPORTERS", "FORMATS", "RUNNERS",
           "ExportError", "check_export", "check_sizes", "export_metadata", "read_export_metadata"]
