"""Which torch device an actor uses: the GPU Ray assigned to it, else the CPU.

Ray reserves GPUs by id and (unless told not to) sets CUDA_VISIBLE_DEVICES in the actor's
process to exactly those ids, so the assigned GPU is the first visible one, "cuda:0".
An actor assigned a GPU while torch sees no CUDA device (a CPU-only torch build, a node
without its driver, or Ray's fake GPUs in tests) runs on the CPU and says so in the run
record: it never runs on the CPU silently while a usable GPU was assigned and present.
"""

from __future__ import annotations

import os

from ..errors import LowrankError


def choose_device(gpu_ids: list, visible: str | None, cuda_available: bool,
                  cuda_count: int) -> tuple[str, str | None]:
    """(device, note): "cpu" with no GPU assigned; "cuda:N" for the first assigned GPU; "cpu"
    with a note saying why when one was assigned but torch cannot use CUDA here."""
    if not gpu_ids:
        return "cpu", None
    first = str(gpu_ids[0])
    if not cuda_available:
        return "cpu", (f"an encode worker was assigned GPU {first} but torch sees no CUDA device "
                       "(CPU-only torch build or no driver on that node): it ran on the CPU")
    shown = [v.strip() for v in visible.split(",")] if visible else None
    index = shown.index(first) if shown and first in shown else (0 if shown else int(first))
    if index >= cuda_count:
        raise LowrankError(f"Ray assigned GPU {first} but torch sees {cuda_count} CUDA devices "
                           f"(CUDA_VISIBLE_DEVICES={visible!r})")
    return f"cuda:{index}", None


def actor_device() -> tuple[str, str | None]:
    """The device for this process, from the GPUs Ray assigned to it."""
    import ray
    import torch

    gpu_ids = ray.get_gpu_ids() if ray.is_initialized() else []
    available = torch.cuda.is_available()
    return choose_device(gpu_ids, os.environ.get("CUDA_VISIBLE_DEVICES"), available,
                         torch.cuda.device_count() if available else 0)
