"""The one controller interface shared by planners, the PI controller and stable-baselines3 models."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["Controller", "Predictor", "as_batch"]


@runtime_checkable
class Predictor(Protocol):
    """Anything with stable-baselines3's ``predict`` signature (SB3 models included)."""

    def predict(self, observation: np.ndarray, state: Any = None, episode_start: np.ndarray | None = None,
                deterministic: bool = True) -> tuple[np.ndarray, Any]: ...


class Controller(ABC):
    """Base class: a stateful feedback controller with SB3's ``predict`` interface.

    Subclasses implement :meth:`act` on a batch of observations ``[N, obs_dim]`` and keep
    their own filter/integrator state between calls; :meth:`reset` starts a new episode.
    ``predict`` accepts one observation or a batch and resets the rows flagged by
    ``episode_start`` (as a vectorised SB3 evaluation loop passes them).
    """

    name: str = "controller"

    def reset(self) -> None:  # noqa: B027 (an optional hook, not abstract)
        """Forget everything about the current episode."""

    @abstractmethod
    def act(self, obs: np.ndarray) -> np.ndarray:
        """Actions ``[N, 2]`` in [-1, 1] for observations ``[N, obs_dim]``."""

    def predict(self, observation: np.ndarray, state: Any = None, episode_start: np.ndarray | None = None,
                deterministic: bool = True) -> tuple[np.ndarray, Any]:
        obs, single = as_batch(observation)
        if episode_start is not None and np.any(episode_start):
            self.reset()
        action = self.act(obs)
        return (action[0] if single else action), state


def as_batch(observation: np.ndarray) -> tuple[np.ndarray, bool]:
    """``(obs [N, D] float64, was_single)`` from one observation ``[D]`` or a batch."""
    obs = np.asarray(observation, dtype=np.float64)
    if obs.ndim == 1:
        return obs[None], True
    if obs.ndim != 2:
        raise ValueError(f"observation of shape {obs.shape}; expected (obs_dim,) or (N, obs_dim)")
    return obs, False
