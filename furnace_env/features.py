"""Integral action for memoryless policies: the integrated temperature error as an observation.

A policy that sees only the current observation cannot remove a steady offset (a load or a fuel
it cannot see needs a different firing for the same measured state); a PI controller removes it
with its integral term, and the planners with their filtered hidden state and target shifting.
:class:`TrackingIntegral` keeps ``sum (setpoint - T) dt`` over an episode, clipped (anti-windup),
and :class:`TrackingIntegralWrapper` appends it to Furnace-v0's observation, so that an RL agent
(the SB3 baselines' ``--obs_integral``) can learn integral action. The same class updates the
feature at evaluation time (``planners.sb3_policy``), so training and evaluation agree step for step.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

__all__ = ["TrackingIntegral", "TrackingIntegralWrapper", "INTEGRAL_LIMIT"]

#: Anti-windup bound of the integral, K s (a 10 K error held for 10 minutes).
INTEGRAL_LIMIT = 6000.0


class TrackingIntegral:
    """``i <- clip(i + (setpoint - T) * dt, +-limit)``, from observations (channels 1 and 0)."""

    def __init__(self, dt: float, limit: float = INTEGRAL_LIMIT) -> None:
        if not (np.isfinite(dt) and dt > 0 and np.isfinite(limit) and limit > 0):
            raise ValueError(f"TrackingIntegral(dt={dt!r}, limit={limit!r}): both must be finite and > 0")
        self.dt, self.limit = float(dt), float(limit)
        self.value = 0.0

    def reset(self) -> float:
        self.value = 0.0
        return self.value

    def update(self, obs: np.ndarray) -> float:
        """Integrate the error of an observation that follows a step; returns the new value."""
        err = float(obs[1]) - float(obs[0])
        self.value = float(np.clip(self.value + err * self.dt, -self.limit, self.limit))
        return self.value

    def augment(self, obs: np.ndarray) -> np.ndarray:
        """``obs`` with the current integral appended (float32)."""
        return np.append(np.asarray(obs, dtype=np.float32), np.float32(self.value))


class TrackingIntegralWrapper(gym.Wrapper):
    """Furnace-v0 whose observation ends with the integrated temperature error, K s."""

    def __init__(self, env: gym.Env, limit: float = INTEGRAL_LIMIT) -> None:
        super().__init__(env)
        self.integral = TrackingIntegral(env.unwrapped.params.dt, limit)
        box = env.observation_space
        self.observation_space = spaces.Box(np.append(box.low, -limit).astype(np.float32),
                                            np.append(box.high, limit).astype(np.float32), dtype=np.float32)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.integral.reset()
        return self.integral.augment(obs), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.integral.update(obs)
        return self.integral.augment(obs), reward, terminated, truncated, info
