"""A native vector env: ``N`` furnaces advanced by one call of the batched physics kernel."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numba
import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv, VectorWrapper
from gymnasium.vector.utils import batch_space

from furnace_env.cost import TRIP_PENALTY, CostWeights, trip_cost
from furnace_env.env import (
    TRIP_REASONS,
    check_env_args,
    measure,
    observation_bounds,
    reset_scenario,
    validate_action,
)
from furnace_env.physics import N_OBS, REPORT_NAMES, FurnaceParams, FurnaceSim, step_kernel
from furnace_env.scenarios import Scenario, get_scenario

__all__ = ["FurnaceVectorEnv", "BatchActionCheck", "make_furnace_vec"]

_PARAM_INDEX = {name: i for i, name in enumerate(FurnaceParams.__dataclass_fields__)}


@numba.njit(cache=True, nogil=True)
def _step_each(state, o2_buf, co_buf, k0, cmd, dist, p_rows, w, obs, report, cost, tripped):
    """:func:`~furnace_env.physics.step_kernel` row by row, row ``i`` with its own plant ``p_rows[i]``."""
    for i in range(state.shape[0]):
        step_kernel(state[i : i + 1], o2_buf[i : i + 1], co_buf[i : i + 1], k0, cmd[i : i + 1], dist[i : i + 1],
                    p_rows[i], w, obs[i : i + 1], report[i : i + 1], cost[i : i + 1], tripped[i : i + 1])


class FurnaceVectorEnv(VectorEnv):
    """``num_envs`` Furnace-v0 instances in one batch (``gym.make_vec(..., vectorization_mode="vector_entry_point")``).

    Sub-env ``i`` has its own random generator, seeded ``seed + i`` as gymnasium's sync
    vector env seeds its copies, and draws in the same order as a single
    :class:`~furnace_env.env.FurnaceEnv`, so trajectories equal ``num_envs`` single envs
    with the same seeds. Autoreset follows gymnasium's next-step mode. ``info`` holds
    arrays of the hidden state (same keys as the single env) and ``"trip"`` codes
    (see :data:`~furnace_env.env.TRIP_REASONS`).

    The whole batch of actions is checked (shape ``(num_envs, 2)``, finite) before any furnace
    moves, so a bad action in one row leaves every sub-env as it was. ``max_episode_steps``
    (passed by ``gym.make_vec`` from the registration) truncates at ``min(n_steps,
    max_episode_steps)``, the limit the single env's ``TimeLimit`` wrapper gives.
    A scenario with a ``plant`` or ``plant_events`` gives every sub-env its own plant (drawn
    from its own generator, as the single env draws it); the batch is then stepped row by row
    with each row's plant (one compiled call, slower than the shared-plant kernel), and
    ``info["plant"]`` maps the scenario's plant fields to arrays of the values in force.
    """

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int = 1,
        scenario: str | Scenario | dict = "nominal",
        params: FurnaceParams | None = None,
        weights: CostWeights | None = None,
        sensor_noise: bool | None = None,
        trip_penalty: float = TRIP_PENALTY,
        render_mode: str | None = None,
        max_episode_steps: int | None = None,
    ) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int | np.integer) or num_envs < 1:
            raise ValueError(f"num_envs={num_envs!r} must be an integer >= 1")
        if render_mode is not None:
            raise ValueError(f"render_mode={render_mode!r}: the native vector env does not render; use None")
        if max_episode_steps is not None and (isinstance(max_episode_steps, bool)
                                              or not isinstance(max_episode_steps, int | np.integer)
                                              or max_episode_steps < 1):
            raise ValueError(f"max_episode_steps={max_episode_steps!r} must be None or an integer >= 1")
        check_env_args(sensor_noise, trip_penalty, params, weights)
        self.num_envs = int(num_envs)
        self.max_episode_steps = None if max_episode_steps is None else int(max_episode_steps)
        self.scenario = get_scenario(scenario)
        self.params = params if params is not None else FurnaceParams()
        self.weights = weights if weights is not None else CostWeights()
        self.noisy = self.scenario.sensor_noise if sensor_noise is None else bool(sensor_noise)
        self.trip_penalty = float(trip_penalty)
        self.render_mode = None
        low, high = observation_bounds(self.params)
        self._low, self._high = low.astype(np.float64), high.astype(np.float64)
        self.single_observation_space = spaces.Box(low, high, dtype=np.float32)
        self.single_action_space = spaces.Box(-1.0, 1.0, (2,), dtype=np.float32)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        n = self.num_envs
        self._sim = FurnaceSim(n, self.params, self.weights)
        self._rngs: list[np.random.Generator] = [seeding.np_random()[0] for _ in range(n)]
        self._scheds = np.zeros((n, self.scenario.n_steps + 1, 4))
        self._k = np.zeros(n, dtype=np.int64)
        self._cmd = np.zeros((n, 2))
        self._dist = np.zeros((n, 4))
        self._autoreset = np.zeros(n, dtype=bool)
        self._ready = False
        self._plant_rows: np.ndarray | None = None
        self._plant_tables: list[np.ndarray | None] = [None] * n

    @property
    def episode_steps(self) -> int:
        """Steps after which an episode is truncated: ``min(n_steps, max_episode_steps)``."""
        n = self.scenario.n_steps
        return n if self.max_episode_steps is None else min(n, self.max_episode_steps)

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        # Everything is checked before anything changes (scenario, generators).
        scen = reset_scenario(options, self.scenario)
        seeds = None
        if seed is not None:
            seeds = list(seed) if isinstance(seed, list | tuple) else [seed + i for i in range(self.num_envs)]
            if len(seeds) != self.num_envs:
                raise ValueError(f"seed list of length {len(seeds)}; expected {self.num_envs}")
            rngs = [seeding.np_random(s)[0] for s in seeds]
        if scen.n_steps != self.scenario.n_steps:
            self._scheds = np.zeros((self.num_envs, scen.n_steps + 1, 4))
        self.scenario = scen
        if seeds is not None:
            self._rngs = rngs
        self._reset_rows(np.arange(self.num_envs))
        self._autoreset[:] = False
        self._ready = True
        obs = self._observe(np.arange(self.num_envs))
        return obs, self._info(np.zeros(self.num_envs, dtype=np.int64))

    def _reset_rows(self, rows: np.ndarray) -> None:
        if not self.scenario.plant_names:
            self._plant_rows = None
            for i in rows:
                self._scheds[i] = self.scenario.sample_schedule(self._rngs[i], self.params.dt)
            self._k[rows] = 0
            cmd = np.zeros((len(rows), 2))
            self._sim.reset_rows(rows, self._scheds[rows, 0], np.full(len(rows), self.scenario.lambda0), cmd)
            self._cmd[rows] = cmd
            return
        if self._plant_rows is None:
            self._plant_rows = np.tile(self.params.to_array(), (self.num_envs, 1))
        for i in rows:
            # The same draws in the same order as the single env: schedule, then plant.
            self._scheds[i] = self.scenario.sample_schedule(self._rngs[i], self.params.dt)
            plant, table = self.scenario.sample_plant(self._rngs[i], self.params)
            self._plant_tables[i] = table
            if table is not None:
                plant = FurnaceParams.from_array(table[0])
            self._plant_rows[i] = plant.to_array()
            self._k[i] = 0
            cmd = np.zeros((1, 2))
            self._sim.reset_rows(np.array([i]), self._scheds[i, :1], np.array([self.scenario.lambda0]), cmd,
                                 params=plant)
            self._cmd[i] = cmd[0]

    def _observe(self, rows: np.ndarray) -> np.ndarray:
        sim = self._sim
        kk = np.minimum(self._k, self.scenario.n_steps)
        sim.obs[:, 1] = self._scheds[np.arange(self.num_envs), kk, 0]
        out = np.empty((self.num_envs, N_OBS), dtype=np.float32)
        for i in range(self.num_envs):
            out[i] = measure(sim.obs[i], self._rngs[i] if self.noisy else None, self._low, self._high)
        return out

    def step(self, actions):
        if not self._ready:
            raise RuntimeError("call reset() before step()")
        a = validate_action(actions, self.num_envs)
        n = self.num_envs
        idx = np.arange(n)
        self._cmd[:] = a
        self._dist[:] = self._scheds[idx, np.minimum(self._k, self.scenario.n_steps)]
        if self._plant_rows is None:
            self._sim.step(self._cmd, self._dist)
        else:
            for i, table in enumerate(self._plant_tables):
                if table is not None:
                    self._plant_rows[i] = table[min(self._k[i], self.scenario.n_steps)]
            sim = self._sim
            _step_each(sim.state, sim.o2_buf, sim.co_buf, sim.k, self._cmd, self._dist, self._plant_rows, sim.w,
                       sim.obs, sim.report, sim.cost, sim.tripped)
            sim.k += self.params.n_substeps
        self._k += 1
        trip = self._sim.tripped.copy()
        penalty = trip_cost(self.scenario.n_steps - self._k, self.trip_penalty, self.weights,
                            self.params.fuel_max * 3600.0)
        rewards = -self._sim.cost - np.where(trip != 0, penalty, 0.0)
        terminated = trip != 0
        truncated = self._k >= self.episode_steps
        # Next-step autoreset: sub-envs that ended last step start a new episode now.
        done_before = np.flatnonzero(self._autoreset)
        if done_before.size:
            self._reset_rows(done_before)
            rewards[done_before] = 0.0
            terminated[done_before] = False
            truncated[done_before] = False
            trip[done_before] = 0
        obs = self._observe(idx)
        self._autoreset = terminated | truncated
        return obs, rewards, terminated, truncated, self._info(trip)

    def _info(self, trip: np.ndarray) -> dict[str, Any]:
        sim = self._sim
        info: dict[str, Any] = {name: sim.report[:, j].copy() for j, name in enumerate(REPORT_NAMES)}
        info["trip"] = trip.copy()
        info["trip_reason"] = np.array([TRIP_REASONS[int(t)] for t in trip], dtype=object)
        if self._plant_rows is not None:
            info["plant"] = {name: self._plant_rows[:, _PARAM_INDEX[name]].copy()
                             for name in self.scenario.plant_names}
        return info


class BatchActionCheck(VectorWrapper):
    """Checks the whole batch of actions before gymnasium's sync or async vector env sees it.

    Gymnasium's own wrappers step sub-env by sub-env: ``SyncVectorEnv`` raises for a bad action
    in row ``i`` after rows ``0..i-1`` have stepped (and ``num_envs - 1`` actions fail in
    ``zip`` after a partial step); ``AsyncVectorEnv`` sends every row to its worker first, so one
    bad row makes a worker raise and leaves the vector env closed. This wrapper validates the
    batch as :class:`FurnaceVectorEnv` does (shape ``(num_envs, 2)``, finite; out-of-range values
    are clipped, as the single env clips them) and raises ``ValueError`` before any sub-env moves.
    """

    def step(self, actions):
        return self.env.step(validate_action(actions, self.num_envs))


def make_furnace_vec(num_envs: int, vectorization_mode: str = "vector_entry_point", **kwargs: Any) -> VectorEnv:
    """``gym.make_vec("Furnace-v0", ...)`` with the batch of actions checked before any sub-env steps.

    ``vector_entry_point`` (the native batch, which checks its actions itself), ``sync`` or
    ``async`` (wrapped in :class:`BatchActionCheck`).
    """
    import furnace_env  # noqa: F401  (registers the id)

    allowed = ("vector_entry_point", "sync", "async")
    if vectorization_mode not in allowed:
        raise ValueError(f"vectorization_mode={vectorization_mode!r}; allowed: {allowed}")
    env = gym.make_vec("Furnace-v0", num_envs=num_envs, vectorization_mode=vectorization_mode, **kwargs)
    return env if vectorization_mode == "vector_entry_point" else BatchActionCheck(env)
