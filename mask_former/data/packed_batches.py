"""Loader workers send each batch as one block of shared memory.

A worker process hands each tensor it returns to the training process through shared memory of
its own: with PyTorch's default sharing strategy ("file_descriptor"), one file descriptor per
tensor, which the process that iterates the loader (the pinning thread of engine.pin_batches)
receives over a socket, holding the GIL for part of it. A semantic dataset dict holds four tensors
(image, sem_seg, gt_classes, gt_masks), so a batch of 8 costs 32 of these transfers, taken from the
host time of the training step. Copied into one block, each tensor replaced by a view of its part,
the batch costs one; values, dtypes and shapes are unchanged, and the copy replaces the one that
pickling would make into shared memory anyway.

Only batches collated in the workers are packed: with DATALOADER.ASPECT_RATIO_GROUPING False.
With grouping (detectron2's default) the workers send single images, batched in the training
process; packing those per image measured no faster (docs/benchmarks.md, ninth round).

A view keeps its whole block alive: keep copies, not the tensors themselves, of what outlives the
batch.
"""
from typing import Callable, Dict, Iterator, List, Tuple

import torch
from detectron2.structures import Instances

__all__ = ["pack_batch"]

# Byte alignment of each tensor in its block (a multiple of every element size).
ALIGNMENT = 64


def _tensor_slots(batch: List[Dict]) -> Iterator[Tuple[torch.Tensor, Callable]]:
    """(tensor, setter) for each CPU tensor of the dataset dicts: their values, and the fields of
    their Instances (tensors, or structures holding a `.tensor`: Boxes, BitMasks)."""
    for item in batch:
        for key, value in item.items():
            if isinstance(value, torch.Tensor):
                yield value, (lambda view, item=item, key=key: item.__setitem__(key, view))
            elif isinstance(value, Instances):
                for name, field in value.get_fields().items():
                    if isinstance(field, torch.Tensor):
                        yield field, (lambda view, inst=value, name=name: inst.set(name, view))
                    elif isinstance(getattr(field, "tensor", None), torch.Tensor):
                        yield field.tensor, (lambda view, f=field: setattr(f, "tensor", view))


def pack_batch(batch: List[Dict]) -> List[Dict]:
    """In a loader worker: moves the CPU tensors of `batch` (dataset dicts) into one block of
    shared memory, replacing each with a view of the block, in place; returns `batch`.
    Elsewhere (DATALOADER.NUM_WORKERS 0, nothing to send) returns `batch` as it is."""
    if torch.utils.data.get_worker_info() is None:
        return batch
    slots = [(t, set_view) for t, set_view in _tensor_slots(batch) if t.device.type == "cpu"]
    sizes = [tensor.numel() * tensor.element_size() for tensor, _ in slots]
    offsets, total = [], 0
    for size in sizes:
        offsets.append(total)
        total += -(-size // ALIGNMENT) * ALIGNMENT
    if total == 0:
        return batch
    block = torch.empty(0, dtype=torch.uint8).set_(torch.UntypedStorage._new_shared(total))
    for (tensor, set_view), offset, size in zip(slots, offsets, sizes):
        view = block[offset:offset + size].view(tensor.dtype).view(tensor.shape)
        view.copy_(tensor)
        set_view(view)
    return batch
