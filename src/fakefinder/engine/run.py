"""The run block: what every kind's training does around its loop, written once. A kind's loop (the
classification family's, the transformers Trainer's, Ultralytics', the diffusers one) runs inside

    with Run(kind, config, markers=(...), what="a ... run", resume=..., overwrite=..., events=...) as run:
        ...                      # read the data, build the model: a bad config fails here, nothing lost
        run.start()              # --overwrite clears the old run only now; config.yaml; trackers
        checkpoint = run.checkpoint(find)   # what --resume continues from (None: a fresh run)
        ...                      # the loop: run.device, run.precision, run.events; stop when run.stop is set

and gets: the folder's lock (rank 0) and the guard that refuses to start over a run it holds unless
resumed or overwritten; every generator seeded and the caller's RNG given back afterwards; SIGTERM /
Ctrl-C setting `stop` (the step ends, a checkpoint is saved; a second one stops at once); the device
and precision resolved once; the config's notes (renamed keys) as warnings; metric events sent to
the trackers the config names (`engine.tracking`).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fakefinder.config import Config, ConfigError, save_config
from fakefinder.core.checkpoint import rng_state, set_rng_state
from fakefinder.core.devices import pick_device
from fakefinder.core.events import SILENT, Events, as_events
from fakefinder.core.runlock import RunLock, clear_run, guard_run_folder
from fakefinder.engine.distributed import any_rank

REPEAT_S = 2.0  # a stop signal again within this is the same request, not a second Ctrl-C
PRECISION_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(wanted: str, device: torch.device | str, key: str) -> str:
    """`auto`: bf16 on a CUDA GPU that has it, fp16 on another CUDA GPU, fp32 elsewhere; fp16 needs CUDA."""
    device_type = torch.device(device).type
    if wanted == "auto":
        if device_type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"
    if wanted == "fp16" and device_type != "cuda":
        raise ConfigError(f"{key}=fp16 needs a CUDA GPU; use bf16 or fp32")
    return wanted


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def continues(resume: bool | str | Path, folder: Path) -> bool:
    """Whether a resume continues the run in `folder` (a checkpoint elsewhere starts a run there)."""
    if isinstance(resume, (str, Path)):
        return Path(folder).resolve() in Path(resume).resolve().parents
    return bool(resume)


class Run:
    """One training run of a kind (see the module's docstring)."""

    def __init__(
        self,
        kind,
        config: Config,
        markers: tuple[str, ...],
        what: str,
        resume: bool | str | Path = False,
        overwrite: bool = False,
        events=None,
    ) -> None:
        self.kind, self.config, self.markers, self.what = kind, config, tuple(markers), what
        self.settings = kind.run_settings(config)
        self.key = kind.run_section
        self.folder = Path(self.settings.output_dir)
        self.resume = resume
        self.overwrite = overwrite and not resume
        self.main = int(os.environ.get("RANK", "0")) == 0
        self.stop = threading.Event()
        self._sink = as_events(events).sink if self.main else SILENT.sink
        self._trackers = None
        self.events = Events(self._emit)
        self._lock: RunLock | None = None
        self._signals: dict = {}
        self._signalled_at = 0.0
        self._callers_rng: dict | None = None
        self._device: torch.device | None = None
        self._precision: str | None = None

    # ------------------------------------------------------------------ the frame
    def __enter__(self) -> Run:
        if self.main:
            self._lock = RunLock(self.folder, "train", f"fakefinder train ({self.kind.name})").acquire()
            try:
                guard_run_folder(
                    self.folder, self.markers, continues(self.resume, self.folder), self.overwrite, self.what
                )
            except BaseException:
                self._lock.release()
                raise
            if self._lock.note:
                self.events.warning(self._lock.note, "train")
            for note in self.config.notes:
                self.events.warning(note, "config")
        self._callers_rng = rng_state()  # the run seeds every generator; the caller gets its own back
        seed_everything(int(self.settings.seed))
        if threading.current_thread() is threading.main_thread():  # every rank: a launcher signals them all
            self._signals = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._signals.items():
            signal.signal(sig, handler)
        self._signals = {}
        if self._trackers is not None:
            failed = exc and exc[0] is not None and not issubclass(exc[0], KeyboardInterrupt)
            self._trackers.close("FAILED" if failed else "KILLED" if self.stop.is_set() else "FINISHED")
            self._trackers = None
        if self._callers_rng is not None:
            set_rng_state(self._callers_rng)
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _on_signal(self, signum, frame) -> None:
        now = time.monotonic()
        if self.stop.is_set():
            if now - self._signalled_at < REPEAT_S:  # the same request again: torchrun forwards what
                return  # the whole process group already got, Ray signals every process of a job
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self._signalled_at = now
        self.stop.set()
        self.events.log("stopping after this step and saving a checkpoint (Ctrl-C again to abort)", "train")

    def should_stop(self) -> bool:
        """Whether to save and stop after this step. On several processes every rank asks at the same
        step and all get the same answer, so they stop together whichever of them was signalled."""
        if any_rank(self.stop.is_set()):
            self.stop.set()
            return True
        return False

    def _emit(self, event) -> None:
        self._sink(event)
        if self._trackers is not None:
            self._trackers(event)

    # ------------------------------------------------------------------ once set-up has passed
    def start(self) -> None:
        """The run begins writing: `--overwrite` removes the previous run (only now, so a config or
        data that fails never costs it), the folder's config.yaml, the trackers."""
        if not self.main:
            return
        if self.overwrite:
            cleared = clear_run(self.folder, (*self.markers, "tensorboard"))
            if cleared:
                self.events.log(
                    f"--overwrite: removed the previous run's {', '.join(p.name for p in cleared)}", "train"
                )
        self.folder.mkdir(parents=True, exist_ok=True)
        save_config(self.config, self.folder / "config.yaml")
        if self.settings.trackers:
            from fakefinder.engine.tracking import Trackers

            self._trackers = Trackers(
                self.folder,
                self.settings,
                self.config.model_dump(mode="json"),
                self.kind.name,
                self.key,
                self.kind.artifact_dir,
            )

    def checkpoint(self, find: Callable[[Path], Path | None]) -> Path | None:
        """What a resume continues from: the path `--resume-from` gave, else `find(folder)` (None:
        nothing to resume, a fresh run)."""
        if not self.resume:
            return None
        if isinstance(self.resume, (str, Path)):
            return Path(self.resume)
        found = find(self.folder)
        if found is None:
            self.events.log(
                f"nothing to resume in {self.folder} (no complete checkpoint): a fresh run", "train"
            )
        else:
            self.events.log(f"resuming from {found}", "train")
        return found

    # ------------------------------------------------------------------ resolved once
    @property
    def device(self) -> torch.device:
        if self._device is None:
            try:
                self._device = pick_device(str(self.settings.device), int(os.environ.get("LOCAL_RANK", "0")))
            except (ValueError, RuntimeError) as exc:
                raise ConfigError(f"{self.key}.device: {exc}") from None
        return self._device

    @property
    def precision(self) -> str:
        """fp32, bf16 or fp16: what the run computes in."""
        if self._precision is None:
            self._precision = resolve_precision(self.settings.precision, self.device, f"{self.key}.precision")
        return self._precision

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return None if self.precision == "fp32" else PRECISION_DTYPES[self.precision]

    def autocast(self):
        """Mixed precision for a forward pass (nothing in fp32)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)
