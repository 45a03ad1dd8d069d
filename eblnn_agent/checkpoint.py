"""Saving and loading world-model checkpoints, with clear errors for missing, truncated or foreign files.

A checkpoint is one ``torch.save`` dict: a format tag and version, the run configuration
(plain dict), the model's state dict (normalisation statistics included, as buffers) and
``meta`` (package versions, ``env_steps`` consumed, metrics, anything passed as ``extra``).
It is written atomically and loads with ``weights_only=True`` (no code is unpickled).
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from eblnn_agent.config import ConfigError, WorldModelRunConfig
from eblnn_agent.model import EBLNN
from eblnn_agent.utils import atomic_write, package_versions, resolve_device

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "read_checkpoint", "FORMAT", "FORMAT_VERSION"]

FORMAT = "eblnn-world-model"
FORMAT_VERSION = 1
_HINT = "train one with `python train/world_model.py --out_dir <dir>` and pass <dir>/best.pt"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable (truncated, corrupt) or incompatible with this code."""


def save_checkpoint(path: str | Path, model: EBLNN, cfg: WorldModelRunConfig,
                    extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` with its config and ``meta`` (versions + ``extra``) to ``path`` atomically."""
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": cfg.to_dict(),
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": {"versions": package_versions(), **(extra or {})},
    }
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and validate a checkpoint file's dict (any of this project's checkpoint kinds)."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint {str(p)!r} does not exist: {_HINT}")
    if p.is_dir():
        raise CheckpointError(f"checkpoint {str(p)!r} is a directory; pass the file, e.g. {str(p / 'best.pt')!r}")
    try:
        payload = torch.load(p, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError, OSError) as err:
        raise CheckpointError(
            f"checkpoint {str(p)!r} is truncated or corrupt ({type(err).__name__}: {err}); "
            f"delete it and train again, or resume the run that wrote it with --resume"
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{str(p)!r} is not an EB-LNN world-model checkpoint (no {FORMAT!r} tag): {_HINT}")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {str(p)!r} has format version {payload.get('format_version')!r}, this code reads "
            f"{FORMAT_VERSION}: re-train with this version of the code"
        )
    return payload


def load_checkpoint(path: str | Path, device: str | torch.device = "auto") -> tuple[EBLNN, WorldModelRunConfig, dict]:
    """Load ``(model, config, meta)``; the model is on ``device`` (``auto``: CUDA when present), in eval mode."""
    dev = resolve_device(device)
    payload = read_checkpoint(path)
    try:
        cfg = WorldModelRunConfig.from_dict(payload["config"])
    except (ConfigError, KeyError, TypeError) as err:
        raise CheckpointError(f"checkpoint {str(path)!r} holds an incompatible config ({err}); re-train") from err
    model = EBLNN(cfg.model)
    try:
        model.load_state_dict(payload["model_state"])
    except (RuntimeError, KeyError) as err:
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not match the EB-LNN architecture of this code ({err}); re-train"
        ) from err
    if float(model.co_log_scale) != cfg.model.co_log_scale:  # the buffer must agree with the config
        raise CheckpointError(f"checkpoint {str(path)!r}: weights trained with co_log_scale "
                              f"{float(model.co_log_scale)} but its config says {cfg.model.co_log_scale}; re-train")
    model.to(dev).eval()
    return model, cfg, dict(payload.get("meta", {}))
