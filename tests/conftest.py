import logging
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MASK_FORMER_SHARED", REPO_ROOT.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """A path under ../shared; the test is skipped where that folder is absent (a user's machine)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing; CI runs with ../shared beside the checkout")
        pytest.skip(f"{path} not found (set MASK_FORMER_SHARED to the shared folder)")
    return path


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
