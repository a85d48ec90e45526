"""Process-wide settings that an API call may need for a while and then gives back as it found them."""

from __future__ import annotations

from contextlib import contextmanager

import torch


def _flushing_denormals() -> bool:
    """Whether the CPU flushes denormal floats now (x86 FTZ/DAZ; torch offers no getter)."""
    return float(torch.tensor([1e-39], dtype=torch.float32).mul(1.0)[0]) == 0.0


@contextmanager
def flush_denormal():
    """Flush denormals inside the block (some CPU steps were 10x slower without), restore after."""
    before = _flushing_denormals()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)
