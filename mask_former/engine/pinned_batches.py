"""Training batches in pinned host memory, pinned by a background thread ahead of use."""
import queue
import threading
from typing import Iterable, List

import torch


def _pinned(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` in pinned host memory: a pinned copy of a pageable CPU tensor, else itself."""
    if tensor.device.type != "cpu" or tensor.is_pinned():
        return tensor
    return tensor.pin_memory()


def pin_batch(batch: List[dict]) -> List[dict]:
    """Moves the tensors MaskFormer copies to the GPU (image, gt_classes, gt_masks) of each
    dataset dict to pinned memory, in place; returns the batch. Decoded dicts without targets
    (INPUT.GPU_AUGMENTATION's, whose label map the GPU turns into targets) get their "sem_seg"
    pinned too."""
    for item in batch:
        if isinstance(item.get("image"), torch.Tensor):
            item["image"] = _pinned(item["image"])
        if "instances" not in item and isinstance(item.get("sem_seg"), torch.Tensor):
            item["sem_seg"] = _pinned(item["sem_seg"])
        instances = item.get("instances")
        if instances is not None:
            if instances.has("gt_classes"):
                instances.gt_classes = _pinned(instances.gt_classes)
            if instances.has("gt_masks"):
                masks = instances.gt_masks
                if isinstance(masks, torch.Tensor):
                    instances.gt_masks = _pinned(masks)
                else:  # BitMasks
                    masks.tensor = _pinned(masks.tensor)
    return batch


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


_END = object()


class PinnedBatches:
    """Iterates `loader`'s batches (lists of dataset dicts) with their tensors pinned.

    Copies from pinned memory to a GPU are queued like kernels, while copies from ordinary memory
    wait for all GPU work queued before them; pinning costs a host copy, which the background
    thread makes while the training step runs. Errors of the loader are raised where the batch
    would have been. Other attributes are the loader's.
    """

    def __init__(self, loader: Iterable, prefetch: int = 2):
        self.loader = loader
        self.prefetch = prefetch

    def __iter__(self):
        batches: queue.Queue = queue.Queue(maxsize=self.prefetch)

        def fill():
            # One intra-op thread for this thread's pin copies (the setting is per thread; the
            # training thread keeps its own), as torch's DataLoader pin-memory thread does. With
            # the default, each copy starts a team of OpenMP threads, one per core, which then
            # spin-wait: on one H200 machine (16 cores) the training process burnt 1.2 s of CPU a
            # step, its 16 loader workers got 15% of a core each, and MaskFormer trained at 74
            # img/s instead of 224 (docs/benchmarks.md, issue 18's fourth round).
            torch.set_num_threads(1)
            try:
                for batch in self.loader:
                    batches.put(pin_batch(batch))
                batches.put(_END)
            except BaseException as error:  # re-raised in the consumer
                batches.put(_Failure(error))

        threading.Thread(target=fill, name="pin_batches", daemon=True).start()
        while True:
            batch = batches.get()
            if batch is _END:
                return
            if isinstance(batch, _Failure):
                raise batch.error
            yield batch

    def __getattr__(self, name):
        if name == "loader":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.loader, name)
