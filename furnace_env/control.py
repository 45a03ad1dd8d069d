"""The one controller interface shared by planners, the PI controller and stable-baselines3 models."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Protocol, runtime_checkable

import numpy as np

from furnace_env.env import validate_observation

__all__ = ["Controller", "Predictor", "as_batch", "one_plant_observation"]


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
        obs, single = as_batch(observation)  # checked before the reset below
        if episode_start is not None and np.any(episode_start):
            self.reset()
        action = self.act(obs)
        return (action[0] if single else action), state


def as_batch(observation: np.ndarray) -> tuple[np.ndarray, bool]:
    """``(obs [N, D] float64, was_single)`` from one observation ``[D]`` or a batch.

    Checked by :func:`furnace_env.env.validate_observation` (shape, finiteness): a bad
    observation raises ``ValueError`` before any controller state changes. Any width ``D``: the
    interface serves other plants too; a controller of Furnace-v0 checks its 8 channels itself.
    """
    return validate_observation(observation, obs_dim=None)


def one_plant_observation(observation: np.ndarray, controller: str, obs_dim: int | None = None) -> np.ndarray:
    """The one observation ``[D]`` of a controller that keeps state for a single plant.

    Checked by :func:`furnace_env.env.validate_observation` (any width unless ``obs_dim``) and refused,
    naming ``controller``, when it is a batch of several plants.
    """
    obs = validate_observation(observation, obs_dim=obs_dim)[0]
    if obs.shape[0] != 1:
        raise ValueError(f"{controller} controls one plant: observation batch of shape {obs.shape}; "
                         "expected (1, obs_dim)")
    return obs[0]
