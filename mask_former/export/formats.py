"""Writing an `ExportableMaskFormer` as ONNX or TorchScript, running the written file, and
checking it against PyTorch.

Both formats start from a trace (`torch.jit.trace`), which records the size arithmetic as graph
operations, so one file serves every input size (`check_export` verifies that at a second size):
ONNX through torch.onnx's TorchScript-based exporter, with the height and width of the input
dynamic (or its torch.export-based one, `dynamo=True`); running it needs onnxruntime. Both files
carry the config's INPUT.FORMAT and the number of classes, which `read_export_metadata` returns.
"""
import json
import os
import warnings
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import torch

from ..errors import UserError
from .exportable_model import INPUT_NAME, OUTPUT_NAMES, ExportableMaskFormer


FORMATS = ("onnx", "torchscript")
METADATA_PREFIX = "mask_former."
# The TorchScript file's metadata, stored beside the graph (torch.jit.save's _extra_files).
TORCHSCRIPT_METADATA_FILE = "mask_former.json"
ONNX_OPSET = 17  # LayerNormalization; GridSample (Mask2Former's deformable attention) since 16
EXPORT_EXTRA = "pip install -e '.[export]' (onnx, onnxscript, onnxruntime)"

# (1, 3, H, W) float32 image -> the outputs of OUTPUT_NAMES as numpy arrays
Runner = Callable[[np.ndarray], Tuple[np.ndarray, ...]]


class ExportError(UserError, RuntimeError):
    """An export that cannot be made or read as asked: a missing optional package, a file that
    is not an export of this project, or an export that disagrees with PyTorch."""


def export_metadata(cfg) -> Dict[str, str]:
    """What a consumer of the file needs from the config: the input's channel order and K."""
    return {"input_format": cfg.INPUT.FORMAT,
            "num_classes": str(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)}


def _import_onnx_packages(dynamo: bool = False):
    try:
        import onnx  # noqa: F401
        if dynamo:
            import onnxscript  # noqa: F401  (torch.onnx's dynamo exporter translates with it)
    except ImportError as error:
        raise ExportError(f"ONNX export needs the package {error.name!r}: {EXPORT_EXTRA}") from None


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise ExportError(f"running an ONNX model needs onnxruntime: {EXPORT_EXTRA}") from None
    return onnxruntime


def export_onnx(module: ExportableMaskFormer, example: torch.Tensor, path: str,
                metadata: Dict[str, str], dynamo: bool = False) -> None:
    """Writes `module` to `path` as ONNX, input "image" (1, 3, H, W) with H and W dynamic.

    By default through torch.onnx's TorchScript-based exporter: a trace, which records the size
    arithmetic as graph operations (seconds). `dynamo=True` takes torch.onnx's newer exporter
    (torch.export with symbolic sizes), whose shape reasoning takes minutes on a CPU for a Swin.
    """
    _import_onnx_packages(dynamo)
    import onnx

    with torch.no_grad(), warnings.catch_warnings():
        _ignore_tracing_warnings()
        if dynamo:
            dynamic = {INPUT_NAME: {2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}}
            torch.onnx.export(module, (example,), path, dynamo=True, dynamic_shapes=dynamic,
                              input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                              opset_version=ONNX_OPSET, external_data=False)
        else:
            size = {2: "height", 3: "width"}
            dynamic_axes = {INPUT_NAME: size, "pred_masks": {2: "mask_height", 3: "mask_width"},
                            "sem_seg": size}
            torch.onnx.export(module, (example,), path, dynamo=False, opset_version=ONNX_OPSET,
                              input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                              dynamic_axes=dynamic_axes)
    model = onnx.load(path)
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = METADATA_PREFIX + key, value
    onnx.save(model, path)


def _ignore_tracing_warnings() -> None:
    """Within a catch_warnings block: torch.jit's deprecation notice and the tracer's warnings
    about loops over decoder layers (their number is fixed), which `check_export` makes moot."""
    warnings.simplefilter("ignore", FutureWarning)
    warnings.simplefilter("ignore", DeprecationWarning)
    warnings.simplefilter("ignore", torch.jit.TracerWarning)


def export_torchscript(module: ExportableMaskFormer, example: torch.Tensor, path: str,
                       metadata: Dict[str, str]) -> None:
    """Writes `module` to `path` as a traced TorchScript module (`torch.jit.load` reads it)."""
    with torch.no_grad(), warnings.catch_warnings():
        _ignore_tracing_warnings()
        # check_trace would compare against a second trace, whose submodules are renamed copies.
        traced = torch.jit.trace(module, (example,), check_trace=False)
        torch.jit.save(traced, path, _extra_files={TORCHSCRIPT_METADATA_FILE: json.dumps(metadata)})


EXPORTERS = {"onnx": export_onnx, "torchscript": export_torchscript}


def onnx_runner(path: str) -> Runner:
    """An onnxruntime CPU session of `path`, as a Runner."""
    onnxruntime = _import_onnxruntime()
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

    _check_file(path)
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: its optimiser's notes are not the user's
    try:
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except (ort_errors.InvalidProtobuf, ort_errors.InvalidGraph, ort_errors.Fail) as error:
        raise ExportError(f"{path}: onnxruntime cannot load it ({_first_line(error)})") from None
    names = [o.name for o in session.get_outputs()]
    if tuple(names) != OUTPUT_NAMES:
        raise ExportError(f"{path}: outputs {names}, not {list(OUTPUT_NAMES)}: not an export of "
                          "tools/export_model.py")

    def run(image: np.ndarray) -> Tuple[np.ndarray, ...]:
        return tuple(session.run(None, {INPUT_NAME: image}))

    return run


def torchscript_runner(path: str) -> Runner:
    _check_file(path)
    with warnings.catch_warnings():
        _ignore_tracing_warnings()
        traced = torch.jit.load(path, map_location="cpu")

    def run(image: np.ndarray) -> Tuple[np.ndarray, ...]:
        with torch.no_grad():
            return tuple(t.numpy() for t in traced(torch.from_numpy(image)))

    return run


RUNNERS = {"onnx": onnx_runner, "torchscript": torchscript_runner}


def read_export_metadata(path: str, export_format: str = "onnx") -> Dict[str, str]:
    """The metadata `export_metadata` wrote into the file (without the key prefix)."""
    if export_format == "torchscript":
        _check_file(path)
        files = {TORCHSCRIPT_METADATA_FILE: ""}
        with warnings.catch_warnings():
            _ignore_tracing_warnings()
            torch.jit.load(path, map_location="cpu", _extra_files=files)
        return json.loads(files[TORCHSCRIPT_METADATA_FILE] or "{}")
    _import_onnx_packages()
    import onnx
    from google.protobuf.message import DecodeError

    _check_file(path)
    try:
        model = onnx.load(path, load_external_data=False)
    except DecodeError as error:
        raise ExportError(f"{path}: not an ONNX model ({_first_line(error)})") from None
    return {p.key[len(METADATA_PREFIX):]: p.value for p in model.metadata_props
            if p.key.startswith(METADATA_PREFIX)}


def _check_file(path: str) -> None:
    if not os.path.isfile(path):
        raise ExportError(f"{path}: no such file")


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def check_sizes(example_size: Tuple[int, int], size_divisibility: int) -> List[Tuple[int, int]]:
    """Sizes to compare an export at: the traced one and one that pads differently."""
    height, width = example_size
    d = max(size_divisibility, 1)
    return [(height, width), (height + d + d // 2 + 1, max(width - d + 3, d + 1))]


def relative_errors(actual: Sequence[np.ndarray], expected: Sequence[torch.Tensor]
                    ) -> Dict[str, float]:
    """{output name: |actual - expected| / |expected|} (Frobenius norms, in float64)."""
    errors = {}
    for name, a, e in zip(OUTPUT_NAMES, actual, expected):
        e = e.double().numpy()
        if a.shape != e.shape:
            errors[name] = float("inf")
            continue
        errors[name] = float(np.linalg.norm(a.astype(np.float64) - e) / max(np.linalg.norm(e), 1e-12))
    return errors


def check_export(module: ExportableMaskFormer, run: Runner, sizes: Sequence[Tuple[int, int]],
                 seed: int = 0) -> Dict[Tuple[int, int], Dict[str, float]]:
    """Runs PyTorch and the export on random images of each size: {size: relative errors}."""
    generator = torch.Generator().manual_seed(seed)
    results = {}
    for size in sizes:
        image = torch.rand((1, 3) + tuple(size), generator=generator) * 255
        with torch.no_grad():
            expected = module(image)
        results[tuple(size)] = relative_errors(run(image.numpy()), expected)
    return results
