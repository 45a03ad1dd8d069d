"""Small helpers shared by the world-model code and everything above it: device choice, versions,
atomic writes, a process pool."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from importlib import metadata
from multiprocessing import get_context
from pathlib import Path

import torch

__all__ = ["resolve_device", "package_versions", "atomic_write", "process_pool"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when present, else CPU; other strings are checked and returned as devices."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"device={device!r} is not a torch device; use auto, cpu, cuda or cuda:N") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} requested but CUDA is not available here; use auto or cpu")
    return dev


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages an artefact depends on (recorded for reproducibility)."""
    import platform

    out = {"python": platform.python_version()}
    for name in ("torch", "ncps", "numpy", "gymnasium", "stable-baselines3", "furnace-eblnn"):
        try:
            out[name.replace("-", "_")] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name.replace("-", "_")] = "not installed"
    return out


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Write a file atomically: ``write(tmp)`` to a temporary file in the target folder, then rename.

    A crash mid-write leaves the previous file intact (``os.replace`` is atomic on one filesystem).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _worker_init(threads: int) -> None:
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` spawned processes with one torch thread each (for episode-level parallelism).

    Spawn, not fork: forking a process that has started torch's thread pools can deadlock.
    """
    return ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                               initializer=_worker_init, initargs=(1,))
