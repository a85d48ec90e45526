"""Device choice and DDP set-up for runs launched by `torchrun` (or `accelerate launch`)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from fakefinder.core.devices import pick_device


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    env_added: list[str] = field(default_factory=list)  # variables `setup` set for a one-process group

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def setup(preference: str = "auto", group: bool = False) -> tuple[DistInfo, torch.device]:
    """Join the process group when launched with WORLD_SIZE > 1 (gloo on CPU, nccl on GPU);
    `group=True` makes a one-process group for a plain launch too (DeepSpeed needs one)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    info = DistInfo(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))
    device = pick_device(preference, info.local_rank)
    if (info.enabled or group) and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if not info.enabled:
            for key, value in (
                ("MASTER_ADDR", "127.0.0.1"),
                ("MASTER_PORT", str(_free_port())),
                ("RANK", "0"),
                ("LOCAL_RANK", "0"),
                ("WORLD_SIZE", "1"),
            ):
                if key not in os.environ:
                    os.environ[key] = value
                    info.env_added.append(key)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return info, device


def barrier(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()


def teardown(info: DistInfo) -> None:
    """A barrier before leaving the group: without it gloo sometimes aborts at exit."""
    if dist.is_initialized():
        if info.enabled:
            dist.barrier()
        dist.destroy_process_group()
    for key in info.env_added:  # the caller's environment as it was
        os.environ.pop(key, None)
    info.env_added.clear()


def gather_objects(info: DistInfo, obj):
    if not info.enabled:
        return [obj]
    out = [None] * info.world
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(info: DistInfo, obj):
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def any_rank(flag: bool) -> bool:
    """`flag` or-ed over every process of the group, the same answer on each (a collective: every
    rank calls it at the same point); `flag` itself without a group of several."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return flag
    on_gpu = dist.get_backend() == "nccl"
    box = torch.tensor(
        [int(flag)], device=torch.device("cuda", torch.cuda.current_device()) if on_gpu else "cpu"
    )
    dist.all_reduce(box, op=dist.ReduceOp.MAX)
    return bool(box.item())
