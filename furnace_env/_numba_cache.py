"""Where numba keeps the compiled kernels (``cache=True``) when the usual places are read-only.

numba caches next to the source (``furnace_env/__pycache__``), else in the user's cache folder
(``~/.cache/numba``), and refuses to compile a ``cache=True`` function at all when it can write
neither: ``import furnace_env`` would fail for a user with a read-only install and a read-only
``$HOME`` (a container, a shared cluster account). Then the cache goes to a fresh temporary
folder, as ``NUMBA_CACHE_DIR`` would put it (removed at exit); kernels compile once per process.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["configure_numba_cache"]


def _writable(folder: Path) -> bool:
    """numba's own test: the folder can be created and a file written in it."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError:
        return False
    return True


def configure_numba_cache(package_dir: str | Path) -> str | None:
    """Point numba's cache at a temporary folder when neither ``package_dir/__pycache__`` nor the
    user cache folder is writable and ``NUMBA_CACHE_DIR`` is unset. Returns that folder, or None."""
    import numba
    from numba.misc.appdirs import AppDirs

    if numba.config.CACHE_DIR:
        return None
    user_dir = Path(AppDirs(appname="numba", appauthor=False).user_cache_dir)
    if _writable(Path(package_dir) / "__pycache__") or _writable(user_dir):
        return None
    folder = tempfile.mkdtemp(prefix="furnace_env-numba-cache-")
    atexit.register(shutil.rmtree, folder, True)
    numba.config.CACHE_DIR = folder
    return folder
