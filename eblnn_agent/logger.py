"""Metric logging: namespaced keys to the console and, when on, to Weights & Biases.

W&B is imported lazily and never prompts: ``use_wandb="auto"`` goes online only when
credentials exist (``WANDB_API_KEY`` or a netrc entry), else offline; ``False`` or
``"disabled"`` turns it off. Any W&B failure at start-up falls back to console only.
"""

from __future__ import annotations

import netrc
import os
import sys
from typing import Any, TextIO

__all__ = ["MetricLogger", "WANDB_DEFAULT", "WANDB_MODES", "make_logger", "open_wandb_run", "wandb_mode"]

#: The W&B setting every run config starts from: online with credentials, else offline; never a prompt.
WANDB_DEFAULT = "auto"
#: The values a run config's ``wandb`` field accepts.
WANDB_MODES: tuple[str, ...] = ("auto", "online", "offline", "disabled")


def _has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        auth = netrc.netrc().authenticators("api.wandb.ai")
    except (OSError, netrc.NetrcParseError):
        return False
    return auth is not None


def wandb_mode(use_wandb: bool | str) -> str:
    """Resolve a request to a W&B mode: ``online``, ``offline`` or ``disabled``.

    ``True``/``"auto"``: online with credentials, else offline (never a login prompt);
    ``WANDB_MODE`` in the environment wins over ``auto``.
    """
    if use_wandb is False or use_wandb in ("disabled", "off", "false", None):
        return "disabled"
    if use_wandb in ("online", "offline"):
        if use_wandb == "online" and not _has_wandb_credentials():
            return "offline"
        return use_wandb
    if use_wandb is True or use_wandb == "auto":
        env = os.environ.get("WANDB_MODE")
        if env in ("online", "offline", "disabled"):
            return "offline" if env == "online" and not _has_wandb_credentials() else env
        return "online" if _has_wandb_credentials() else "offline"
    raise ValueError(f"use_wandb={use_wandb!r}; allowed: True, False, 'auto', 'online', 'offline', 'disabled'")


class MetricLogger:
    """Prints ``step key=value ...`` lines and forwards the same dict to a W&B run when one is open."""

    def __init__(self, run: Any = None, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.run = run
        self.stream = stream if stream is not None else sys.stdout
        self.quiet = quiet
        self.history: list[dict[str, Any]] = []

    @property
    def mode(self) -> str:
        return "disabled" if self.run is None else str(getattr(self.run.settings, "mode", "online"))

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        """Log namespaced metrics (``train/...``, ``val/...``) at a step."""
        clean = {k: (float(v) if hasattr(v, "__float__") and not isinstance(v, bool | str) else v)
                 for k, v in metrics.items()}
        self.history.append({"step": step, **clean})
        if not self.quiet:
            parts = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in clean.items()]
            head = f"[{step}] " if step is not None else ""
            print(head + " ".join(parts), file=self.stream, flush=True)
        if self.run is not None:
            self.run.log(clean, step=step)

    def summary(self, metrics: dict[str, Any]) -> None:
        """Final figures (W&B run summary; printed as well)."""
        self.log(metrics)
        if self.run is not None:
            for k, v in metrics.items():
                self.run.summary[k] = v

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


def open_wandb_run(use_wandb: bool | str = "auto", project: str = "furnace-eblnn",
                   config: dict[str, Any] | None = None, name: str | None = None,
                   dir: str | None = None) -> Any:
    """A W&B run in the resolved :func:`wandb_mode` (lazy import), or None when disabled or unavailable."""
    mode = wandb_mode(use_wandb)
    if mode == "disabled":
        return None
    try:
        import wandb

        if dir is not None:
            os.makedirs(dir, exist_ok=True)
        return wandb.init(project=project, config=config, name=name, dir=dir, mode=mode,
                          settings=wandb.Settings(silent=True))
    except Exception as err:  # noqa: BLE001 - logging must never stop a run
        print(f"W&B unavailable ({type(err).__name__}: {err}); logging to the console only",
              file=sys.stderr)
        return None


def make_logger(use_wandb: bool | str = "auto", project: str = "furnace-eblnn",
                config: dict[str, Any] | None = None, name: str | None = None, dir: str | None = None,
                quiet: bool = False) -> MetricLogger:
    """A :class:`MetricLogger` over :func:`open_wandb_run`'s run (console only when that is None)."""
    return MetricLogger(open_wandb_run(use_wandb, project, config, name, dir), quiet=quiet)
