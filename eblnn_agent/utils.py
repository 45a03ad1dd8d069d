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

__all__ = ["resolve_device", "package_versions", "atomic_write", "remove_stale_temps", "check_writable_dir",
           "check_file_target", "process_pool", "set_torch_threads"]


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
    The data are fsynced before the rename (and the folder after it), so a power loss cannot
    leave a renamed but empty file. The file gets the usual mode (``0666 & ~umask``, e.g. 0644),
    not ``mkstemp``'s private 0600. A temporary file left by a killed process is named
    ``.<name>.<random>.tmp``; :func:`remove_stale_temps` clears them.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    # The umask can only be read by setting it; set it straight back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. a platform without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on a directory
        pass
    finally:
        os.close(fd)


def remove_stale_temps(folder: str | Path, names: tuple[str, ...]) -> list[Path]:
    """Delete ``.<name>.*.tmp`` files that :func:`atomic_write` left for ``names`` in ``folder``
    (a process killed mid-save). Call it where one process owns the folder (a run's start)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    gone = []
    for name in names:
        for p in folder.glob(f".{name}.*.tmp"):
            try:
                p.unlink()
                gone.append(p)
            except FileNotFoundError:
                pass
    return gone


def check_writable_dir(path: str | Path, flag: str) -> Path:
    """Create ``path`` if needed and prove a file can be written there, before any work is done.

    Raises ``ValueError`` naming ``flag`` (e.g. ``"--out_dir"``): a run that can only fail when it
    saves, after collecting data or training an epoch, should fail now.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ValueError(f"{flag} {str(p)!r} is a file, not a directory; pass a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=p):
            pass
    except OSError as err:
        raise ValueError(f"{flag} {str(p)!r} is not writable ({type(err).__name__}: {err}); pass a "
                         "directory you can write to") from err
    return p


def check_file_target(path: str | Path, flag: str) -> Path:
    """``path`` names a file (not a directory) whose folder can be written, checked before any work."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{flag} {str(p)!r} is a directory; pass a file path, e.g. {str(p / 'data.npz')!r}")
    check_writable_dir(p.parent if str(p.parent) else ".", f"the folder of {flag}")
    return p


def set_torch_threads(threads: int) -> int:
    """Set torch's CPU threads (the one place episode workers and in-process runs set them); returns the
    previous count. Torch's default (one per core) makes a small planner step a hundred times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    return before


def process_pool(workers: int, threads: int = 1) -> ProcessPoolExecutor:
    """A pool of ``workers`` spawned processes with ``threads`` torch threads each (for episode-level parallelism).

    Spawn, not fork: forking a process that has started torch's thread pools can deadlock.
    """
    return ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                               initializer=set_torch_threads, initargs=(threads,))
