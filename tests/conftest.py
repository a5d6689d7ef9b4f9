import logging
import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MASK_FORMER_SHARED", REPO_ROOT.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """A path under ../shared (tests using it are marked `needs_shared`)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing; CI runs with ../shared beside the checkout")
        pytest.skip(f"{path} not found (set MASK_FORMER_SHARED to the shared folder)")
    return path


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true",
                     help="also run the tests marked slow (minutes each on 2 CPU cores)")


def pytest_collection_modifyitems(config, items):
    """Skips `slow` tests unless --run-slow is given, `gpu` tests without CUDA and `needs_shared`
    tests without ../shared, saying why; under CI a missing ../shared fails the run, so that the
    parity tests never skip silently there."""
    shared_missing = not SHARED.is_dir()
    if shared_missing and os.environ.get("CI") and any("needs_shared" in i.keywords for i in items):
        raise pytest.UsageError(f"{SHARED} is missing; CI runs with ../shared beside the checkout "
                                "(set MASK_FORMER_SHARED to its path)")
    no_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    no_shared = pytest.mark.skip(reason=f"needs {SHARED} (set MASK_FORMER_SHARED to the shared folder)")
    not_slow = pytest.mark.skip(reason="slow: run with --run-slow (bash tools/run_tests.sh --run-slow)")
    run_slow = config.getoption("--run-slow")
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(not_slow)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(no_gpu)
        if "needs_shared" in item.keywords and shared_missing:
            item.add_marker(no_shared)


@pytest.fixture(autouse=True)
def restore_logging():
    """Undoes the logging set-up of entry points run in-process after each test: train_net.setup
    (detectron2's setup_logger) gives the detectron2, fvcore and mask_former loggers handlers on
    sys.stdout as pytest captured it, which later tests would log into once closed, and turns
    their propagation off, which hides their records from caplog."""
    from detectron2.utils.logger import setup_logger

    # The demo and analyze_model add their own handlers in main(), once per module copy.
    names = ("detectron2", "fvcore", "mask_former", "mask_former_demo", "mask_former_analyze_model")
    loggers = [logging.getLogger(name) for name in names]
    saved = [(logger, list(logger.handlers), logger.propagate, logger.level) for logger in loggers]
    yield
    for logger, handlers, propagate, level in saved:
        logger.handlers[:] = handlers
        logger.propagate = propagate
        logger.setLevel(level)
    setup_logger.cache_clear()
