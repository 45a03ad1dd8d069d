"""A typed, frozen snapshot of everything that decides a :class:`~furnace_env.env.FurnaceEnv`'s future.

``env.get_state()`` returns one, ``env.set_state(state)`` puts an env (the same one or another
built with the same structural plant fields) exactly there: the next steps then give the same
observations, rewards and infos, sensor noise included. Planners that need the true state (the
oracle) and diagnostics read it instead of the env's private attributes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from furnace_env.physics import FurnaceParams

__all__ = ["FurnaceState"]


@dataclass(frozen=True, eq=False)
class FurnaceState:
    """The true state of one furnace episode at a control-step boundary (arrays are read-only copies)."""

    plant: FurnaceParams
    """The plant in force now (the base ``params`` with the scenario's plant and events applied)."""
    plant_table: np.ndarray | None
    """The plant in force during each control step ``[n_steps + 1, len(fields)]`` in
    :meth:`FurnaceParams.to_array`'s layout when the scenario has plant events, else None."""
    physics: np.ndarray
    """The simulator's state vector ``[7]``: true and thermocouple temperature (degC), fuel and
    air flow (kg/s), O2 (%) and CO (ppm) analyser readings, time spent fuel-rich (s)."""
    o2_buf: np.ndarray
    """The O2 analyser's dead-time ring buffer (true flue O2 per sub-step)."""
    co_buf: np.ndarray
    """The CO analyser's dead-time ring buffer (true flue CO per sub-step)."""
    substep: int
    """The simulator's sub-step counter (positions in the ring buffers)."""
    schedule: np.ndarray
    """This episode's exogenous inputs ``[n_steps + 1, 4]``: setpoint (degC), load (W), fuel
    quality (-), tramp air (kg/s); row ``k`` holds during control step ``k``."""
    step: int
    """Control steps taken in this episode."""
    command: np.ndarray
    """The commands applied last (fuel valve, air damper), in [-1, 1]."""
    noisy: bool
    """Whether this episode's observations carry sensor noise."""
    rng_state: dict[str, Any]
    """The state of the env's ``np_random``, as if every step had drawn its own sensor noise."""
    plant_names: tuple[str, ...] = ()
    """The plant fields the episode's scenario sets or changes (the keys of ``info["plant"]``)."""

    @property
    def n_steps(self) -> int:
        """Episode length in control steps."""
        return self.schedule.shape[0] - 1

    @property
    def disturbance(self) -> np.ndarray:
        """The exogenous inputs in force during the next step (setpoint, load W, fuel quality, leak kg/s)."""
        return self.schedule[min(self.step, self.n_steps)]

    def plant_at(self, step: int) -> np.ndarray:
        """The plant in force during control step ``step`` (packed as :meth:`FurnaceParams.to_array`)."""
        if self.plant_table is None:
            return self.plant.to_array()
        return self.plant_table[min(max(step, 0), self.n_steps)]


def frozen_copy(a: np.ndarray) -> np.ndarray:
    """A read-only copy of ``a`` (snapshots must not change when the env moves on)."""
    out = np.array(a, copy=True)
    out.flags.writeable = False
    return out
