"""Saving and loading world-model checkpoints, with clear errors for missing, truncated or foreign files.

A checkpoint is one ``torch.save`` dict: a format tag and version, the run configuration
(plain dict), the model's state dict (normalisation statistics included, as buffers) and
``meta`` (package versions, ``env_steps`` consumed, metrics, anything passed as ``extra``).
It is written atomically and loads with ``weights_only=True`` (no code is unpickled).

A ``sha256`` of the content (:func:`content_digest`: config, meta and every tensor's name,
dtype, shape and bytes) is written at save and checked at load, so flipped bytes that still
unzip and unpickle are caught instead of loading changed weights. Every malformed file
raises :class:`CheckpointError` naming the file, what is wrong and what to do.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import torch

from eblnn_agent.config import ConfigError, WorldModelRunConfig
from eblnn_agent.model import EBLNN
from eblnn_agent.utils import atomic_write, package_versions, resolve_device

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "read_checkpoint", "content_digest",
           "checkpoint_digest", "FORMAT", "FORMAT_VERSION"]

FORMAT = "eblnn-world-model"
FORMAT_VERSION = 1
_HINT = "train one with `python train/world_model.py --out_dir <dir>` and pass <dir>/best.pt"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable (truncated, corrupt) or incompatible with this code."""


def content_digest(payload: dict[str, Any]) -> str:
    """sha256 (hex) of a checkpoint's content: every key but ``sha256``, tensors by name, dtype, shape and bytes."""
    h = hashlib.sha256()
    plain = {k: v for k, v in payload.items() if k not in ("sha256", "model_state")}
    h.update(json.dumps(plain, sort_keys=True, default=repr).encode())
    for name in sorted(payload["model_state"]):
        t = payload["model_state"][name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


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
    payload["sha256"] = content_digest(payload)
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
    except Exception as err:  # noqa: BLE001 - torch raises many types (KeyError for a text file, ...)
        raise CheckpointError(
            f"checkpoint {str(p)!r} is truncated or corrupt, or not a torch file ({type(err).__name__}: {err}); "
            f"delete it and train again, or resume the run that wrote it with --resume"
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{str(p)!r} is not an EB-LNN world-model checkpoint (no {FORMAT!r} tag): {_HINT}")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {str(p)!r} has format version {payload.get('format_version')!r}, this code reads "
            f"{FORMAT_VERSION}: re-train with this version of the code"
        )
    for key, kind in (("config", dict), ("model_state", dict), ("meta", dict)):
        if not isinstance(payload.get(key), kind):
            raise CheckpointError(f"checkpoint {str(p)!r}: {key!r} is {type(payload.get(key)).__name__}, expected a "
                                  f"mapping; the file is damaged or was not written by this code: {_HINT}")
    if not all(isinstance(v, torch.Tensor) for v in payload["model_state"].values()):
        raise CheckpointError(f"checkpoint {str(p)!r}: 'model_state' holds non-tensor entries; the file is damaged: "
                              f"{_HINT}")
    stored = payload.get("sha256")
    if stored is None:
        warnings.warn(f"checkpoint {str(p)!r} has no content checksum (written before checksums existed); it "
                      "cannot be verified: re-train or re-save it", stacklevel=2)
    elif stored != content_digest(payload):
        raise CheckpointError(f"checkpoint {str(p)!r} fails its sha256 content check (the bytes changed since it "
                              f"was written: a disk or copy error, or an edit); delete it and train again: {_HINT}")
    return payload


def checkpoint_digest(path: str | Path) -> str:
    """The content digest of a (validated) checkpoint: its stored ``sha256``, computed for a file written
    before checksums existed. What files derived from a checkpoint (a trust calibration, cached
    episodes) record, so that a checkpoint retrained in place is told apart from the one they came from."""
    payload = read_checkpoint(path)
    return str(payload.get("sha256") or content_digest(payload))


def load_checkpoint(path: str | Path, device: str | torch.device = "auto") -> tuple[EBLNN, WorldModelRunConfig, dict]:
    """Load ``(model, config, meta)``; the model is on ``device`` (``auto``: CUDA when present), in eval mode."""
    dev = resolve_device(device)
    payload = read_checkpoint(path)
    try:
        cfg = WorldModelRunConfig.from_dict(payload["config"])
    except (ConfigError, KeyError, TypeError, ValueError) as err:
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
