"""A bound on how far the host's training loop runs ahead of the GPU (ACCELERATION.MAX_STEPS_AHEAD).

Once no part of a training step waits for the GPU (the assignment solved on the GPU, losses
written from a worker thread), a host faster than the GPU queues step after step until CUDA's
launch queue is full, and then spins inside a launch, a core lost to the loader's workers, with
batches and their pinned memory held for steps far ahead. Waiting on an event of an earlier step
instead sleeps, with the GIL released. (On one H200, MaskFormer fed by the real loader has the
host as the slower side, so the bound rarely waits there: docs/benchmarks.md, sixth round.)
"""
import collections

import torch
from detectron2.engine import HookBase


class HostLead:
    """Keeps the host at most `max_steps_ahead` training steps ahead of the GPU.

    Call `step_done()` once the host has queued a step: it records an event on the device's
    current stream and sleeps until the GPU has run every step but the last `max_steps_ahead`.
    With 1, the GPU runs step k while the host fetches and queues step k + 1; with 0, the host
    waits for each step.
    """

    def __init__(self, device, max_steps_ahead: int = 1):
        """
        Args:
            device: the CUDA device the steps run on.
            max_steps_ahead: how many queued steps the GPU may still have to run when the host
                goes on to the next one (0 or more).
        """
        if max_steps_ahead < 0:
            raise ValueError(f"max_steps_ahead={max_steps_ahead}; it must be 0 or more")
        self.device = torch.device(device)
        self.max_steps_ahead = max_steps_ahead
        self._events = collections.deque()

    def step_done(self) -> None:
        # blocking=True: the waiting thread sleeps instead of spinning on a core the loader's
        # workers need.
        event = torch.cuda.Event(blocking=True)
        event.record(torch.cuda.current_stream(self.device))
        self._events.append(event)
        while len(self._events) > self.max_steps_ahead:
            self._events.popleft().synchronize()  # releases the GIL while it waits


class HostLeadHook(HookBase):
    """Runs `lead.step_done()` after every training step of a detectron2 trainer. Register it
    first, so that the iteration timer's step time includes the wait."""

    def __init__(self, lead: HostLead):
        self.lead = lead

    def after_step(self):
        self.lead.step_done()
