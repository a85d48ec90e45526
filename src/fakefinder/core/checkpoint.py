"""Resume checkpoints: one dict of tensors and plain values, written atomically, read back safely.

A checkpoint is never unpickled freely: `load_checkpoint` uses torch's weights-only unpickler,
which accepts tensors, numbers, strings and plain containers and refuses any other object
(a crafted file that would run code on load is refused before any of it runs). Everything the
trainer keeps is stored as such plain values, RNG states included. Checkpoints written before
that rule hold numpy's RNG state as an array; the three numpy names that rebuild a plain array
are allowed too, and nothing else.
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import torch

from fakefinder.core.errors import FakefinderError
from fakefinder.core.files import atomic_write


class CheckpointError(FakefinderError, RuntimeError):
    """A checkpoint that is missing, unreadable, or holds something other than plain values."""


def plain_array_globals() -> list:
    """What unpickling a plain numpy array needs (older checkpoints hold numpy's RNG keys), under the
    names numpy 2 and numpy 1 pickled them with."""
    core = getattr(np, "_core", None) or np.core
    reconstruct = core.multiarray._reconstruct
    return [
        reconstruct,
        (reconstruct, "numpy.core.multiarray._reconstruct"),
        (reconstruct, "numpy._core.multiarray._reconstruct"),
        np.ndarray,
        np.dtype,
        type(np.dtype(np.uint32)),
    ]


def rng_state() -> dict:
    """Python, numpy and torch RNG states as tensors and plain values."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": str(name),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    if isinstance(numpy_state, dict):
        keys = np.asarray(numpy_state["keys"].numpy(), dtype=np.uint32)
        np.random.set_state(
            (
                numpy_state["bit_generator"],
                keys,
                numpy_state["pos"],
                numpy_state["has_gauss"],
                numpy_state["cached_gaussian"],
            )
        )
    else:  # a checkpoint from before plain RNG states: numpy's own tuple
        np.random.set_state(numpy_state)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, payload: dict) -> Path:
    return atomic_write(Path(path), lambda handle: torch.save(payload, handle))


def _refusal_reason(message: str) -> str:
    """The line of torch's refusal that names what the file wanted to load."""
    for line in message.splitlines():
        if "GLOBAL" in line or line.strip().startswith("Unsupported"):
            return line.split("WeightsUnpickler error:", 1)[-1].strip()
    return "not a weights-only file"


def load_checkpoint(path: Path, map_location="cpu", allow: tuple = ()) -> dict:
    """The checkpoint's dict; `CheckpointError` for a missing or unreadable file, or one that holds
    any object but tensors and plain values (nothing of such a file is run). `allow` names further
    plain data classes a caller's format needs (DeepSpeed's optimizer files hold three)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals([*plain_array_globals(), *allow]):
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = _refusal_reason(str(exc))
        raise CheckpointError(
            f"refused to load {path}: it holds objects other than tensors and plain values ({detail}); "
            "fakefinder never unpickles code from a file"
        ) from None
    except Exception as exc:  # noqa: BLE001 - whatever a foreign file breaks, it is named as unreadable
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{path} is not a fakefinder checkpoint (it holds a {type(state).__name__}, not a dict)"
        )
    return state
