"""Which torch device a run uses."""

from __future__ import annotations

import torch


def pick_device(preference: str = "auto", local_rank: int = 0) -> torch.device:
    """`auto`: the local rank's GPU, else Apple's MPS, else the CPU; any other value as torch names it."""
    if preference != "auto":
        device = torch.device(
            f"cuda:{preference}" if preference.isdigit() else preference
        )  # an index: that GPU
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={preference} but CUDA is not available")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
