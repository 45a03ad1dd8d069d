"""Furnace-v0: a gas-fired industrial furnace with a fuel valve and an air damper."""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numba
import numpy as np
from gymnasium import spaces

from furnace_env.cost import TRIP_PENALTY, CostWeights, trip_cost
from furnace_env.physics import (
    N_OBS,
    OBS_NAMES,
    REPORT_NAMES,
    FurnaceParams,
    FurnaceSim,
    step_kernel,
)
from furnace_env.scenarios import Scenario, get_scenario
from furnace_env.state import FurnaceState, frozen_copy

__all__ = ["FurnaceEnv", "FurnaceState", "observation_bounds", "validate_action", "validate_observation",
           "reset_scenario", "measure", "TRIP_REASONS", "RESET_OPTIONS", "NOISE_ABS", "NOISE_REL",
           "measurement_noise_std"]

#: Keys ``reset(options=...)`` understands; any other key is refused.
RESET_OPTIONS = ("scenario",)

#: Trip codes reported by the kernel, and their meaning.
TRIP_REASONS = {0: "", 1: "over-temperature", 2: "flame safeguard (fuel-rich burner)"}

#: Measurement noise, absolute part of the std per observation channel (units of the channel).
NOISE_ABS = np.array([1.0, 0.0, 0.05, 1.0, 0.0, 0.0, 0.0, 0.0])
#: Measurement noise, relative part: std = ``NOISE_ABS + NOISE_REL * |reading|``.
NOISE_REL = np.array([0.0, 0.0, 0.0, 0.03, 0.005, 0.005, 0.0, 0.0])


def measurement_noise_std(obs: np.ndarray) -> np.ndarray:
    """Standard deviation of the sensor noise ``[..., 8]`` on readings ``obs [..., 8]`` (physical units).

    ``absolute + relative * |reading|`` per channel: temperature 1 K, O2 0.05 points, CO 1 ppm +
    3 %, fuel and air flow 0.5 %; setpoint and commands are exact. What a state estimator (or a
    noise floor) needs to know about the instruments.
    """
    return NOISE_ABS + NOISE_REL * np.abs(np.asarray(obs, dtype=np.float64))


def observation_bounds(params: FurnaceParams) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds of the observation (instrument ranges), float32."""
    low = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0, -1.0], dtype=np.float32)
    high = np.array(
        [1600.0, 1600.0, 21.0, 5000.0, params.fuel_max * 3600.0 * 1.1, params.air_max * 3600.0 * 1.1,
         1.0, 1.0],
        dtype=np.float32,
    )
    return low, high


def validate_action(action: Any, n: int | None = None) -> np.ndarray:
    """Check an action (shape ``(2,)``, or ``(n, 2)`` for a batch) and clip it to [-1, 1].

    Raises ``ValueError`` naming the bad value for a wrong shape or a non-finite entry.
    Finite out-of-range values are clipped, as a valve or damper saturates.
    """
    if n is None and type(action) is np.ndarray and action.shape == (2,) and action.dtype.kind == "f":
        # Fast path for the common case (one float array): two Python floats beat four ufunc calls.
        f, a = float(action[0]), float(action[1])
        if not (math.isfinite(f) and math.isfinite(a)):
            raise _non_finite(action)
        return np.array((min(max(f, -1.0), 1.0), min(max(a, -1.0), 1.0)))
    try:
        a = np.asarray(action, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"action {action!r} is not numeric: expected shape (2,) in [-1, 1]") from err
    shape = (2,) if n is None else (n, 2)
    if a.shape != shape:
        raise ValueError(f"action {action!r} has shape {a.shape}; expected {shape} (fuel valve, air damper)")
    if not np.isfinite(a).all():
        raise _non_finite(action)
    return np.clip(a, -1.0, 1.0)


def validate_observation(observation: Any, obs_dim: int | None = N_OBS) -> tuple[np.ndarray, bool]:
    """``(obs [N, obs_dim] float64, was_single)`` from one observation ``[obs_dim]`` or a batch.

    ``obs_dim=None`` accepts any width (a model-agnostic controller on another plant).

    The one check every controller runs before it touches its state: ``ValueError`` naming the
    value for anything not numeric, of another shape, or with a NaN/inf entry (one bad reading
    would otherwise enter a filter or an integrator and stay there). Ranges are not checked:
    the env clips its readings to the instrument ranges, and a controller may see other plants.
    """
    try:
        obs = np.asarray(observation, dtype=np.float64)
    except (TypeError, ValueError) as err:
        dim = "D" if obs_dim is None else obs_dim
        raise ValueError(f"observation {observation!r} is not numeric: expected shape ({dim},) "
                         f"or (N, {dim})") from err
    single = obs.ndim == 1
    if single:
        obs = obs[None]
    width = obs.shape[-1] if obs_dim is None and obs.ndim == 2 else obs_dim
    if obs.ndim != 2 or obs.shape[1] != width or obs.shape[0] < 1 or obs.shape[1] < 1:
        dim = "D" if obs_dim is None else obs_dim
        raise ValueError(f"observation of shape {np.shape(observation)}; expected ({dim},) or (N, {dim}) "
                         f"({', '.join(OBS_NAMES) if obs_dim == N_OBS else 'the features'})")
    if not np.isfinite(obs).all():
        bad = sorted({int(j) for j in np.flatnonzero(~np.isfinite(obs).all(axis=0))})
        names = [OBS_NAMES[j] if obs_dim == N_OBS else str(j) for j in bad]
        raise ValueError(f"observation has non-finite entries in {names}: {observation!r}; a controller "
                         "needs finite readings (hold the last action outside the controller if a sensor fails)")
    return obs, single


def reset_scenario(options: Any, current: Scenario) -> Scenario:
    """The scenario a ``reset(options=...)`` asks for (``current`` without one), checked in full.

    Unknown option keys are refused, so a misspelt ``"scenrio"`` cannot silently run the old one.
    """
    if options is None:
        return current
    if not isinstance(options, dict):
        raise ValueError(f"reset options={options!r}: expected a dict (keys: {list(RESET_OPTIONS)}) or None")
    unknown = sorted(set(options) - set(RESET_OPTIONS))
    if unknown:
        raise ValueError(f"reset options: unknown key(s) {unknown}; allowed: {list(RESET_OPTIONS)}")
    return get_scenario(options["scenario"]) if "scenario" in options else current


def check_env_args(sensor_noise: Any, trip_penalty: Any, params: Any = None, weights: Any = None) -> None:
    """Constructor arguments shared by the single and the vector env, checked strictly.

    ``sensor_noise`` must be ``None`` or a real bool: the string ``"false"`` is truthy, and
    reading it as noise on would silently change every observation. ``params`` and ``weights``
    must be ``None`` or a :class:`FurnaceParams` / :class:`CostWeights` (a mapping such as
    ``{"ua": 100}`` would otherwise fail deep inside the simulator as an ``AttributeError``).
    """
    for name, value, kind in (("params", params, FurnaceParams), ("weights", weights, CostWeights)):
        if value is not None and not isinstance(value, kind):
            raise ValueError(f"{name}={value!r} must be None (the defaults) or a {kind.__name__}, not a "
                             f"{type(value).__name__} (e.g. {name}={kind.__name__}(...); per-episode plant "
                             "changes go in the scenario's plant)")
    if sensor_noise is not None and not isinstance(sensor_noise, bool | np.bool_):
        raise ValueError(f"sensor_noise={sensor_noise!r} must be None (the scenario's), True or False, "
                         f"not a {type(sensor_noise).__name__}")
    if (isinstance(trip_penalty, bool) or not isinstance(trip_penalty, int | float | np.integer | np.floating)
            or not (math.isfinite(trip_penalty) and trip_penalty >= 0)):
        raise ValueError(f"trip_penalty={trip_penalty!r} must be a finite number >= 0")


def _non_finite(action: Any) -> ValueError:
    return ValueError(f"action {action!r} has non-finite entries; expected finite values in [-1, 1]")


@numba.njit(cache=True)
def _measure_into(obs_clean, noise, noise_abs, noise_rel, low, high, out):
    """The measurement model, written once: ``out = clip(x + noise (noise_abs + noise_rel |x|), low, high)``.

    Per channel: ``noise`` holds standard normal draws (zeros: no noise), ``noise_abs`` and
    ``noise_rel`` the absolute and relative noise stds, ``low`` and ``high`` the instrument range.
    """
    for j in range(obs_clean.shape[0]):
        x = obs_clean[j]
        y = x + noise[j] * (noise_abs[j] + noise_rel[j] * abs(x))
        out[j] = min(max(y, low[j]), high[j])


@numba.njit(cache=True)
def _measure_nb(obs_clean, noise, noise_abs, noise_rel, low, high):
    out = np.empty(obs_clean.shape[0], dtype=np.float32)
    _measure_into(obs_clean, noise, noise_abs, noise_rel, low, high, out)
    return out


_NO_NOISE = np.zeros(N_OBS)
# Action dtypes the fused step kernel takes as they are (native byte order).
_FAST_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def measure(obs_clean: np.ndarray, rng: np.random.Generator | None, low: np.ndarray,
            high: np.ndarray) -> np.ndarray:
    """Add sensor noise (when ``rng`` is given) and clip to the instrument ranges, as float32.

    Noise std per channel: ``NOISE_ABS + NOISE_REL * |reading|``. One fused kernel: a
    chain of numpy calls on an 8-vector would cost more than the physics step itself.
    """
    noise = rng.standard_normal(N_OBS) if rng is not None else _NO_NOISE
    return _measure_nb(obs_clean, noise, NOISE_ABS, NOISE_REL, low, high)


#: Steps of sensor noise the single env draws from its ``np_random`` at once (see ``FurnaceEnv._refill``).
NOISE_BLOCK = 64


@numba.njit(cache=True)
def _env_step_nb(action, cmd, sched, k, state, o2_buf, co_buf, k_sub, p, w, obs, report, cost, tripped,
                 noise, noise_row, meas, out):
    """One control step of the single env in one compiled call: validate and clip the action,
    advance the physics, then measure (with ``noise[noise_row]``, channel stds and ranges ``meas``
    [4, N_OBS] = abs, rel, low, high) into ``out`` [2, N_OBS] float32 (noisy, clean).

    Returns ``(trip code, cost)``, or ``(-1, 0.0)`` without touching any state when the action
    is not finite. Results equal :func:`validate_action`, :func:`~furnace_env.physics.step_batch`
    and :func:`measure` called one after the other.
    """
    f = float(action[0])
    a = float(action[1])
    if not (math.isfinite(f) and math.isfinite(a)):
        return -1, 0.0
    cmd[0, 0] = min(max(f, -1.0), 1.0)
    cmd[0, 1] = min(max(a, -1.0), 1.0)
    step_kernel(state, o2_buf, co_buf, k_sub, cmd, sched[k : k + 1], p, w, obs, report, cost, tripped)
    # The observation shows the setpoint of the step to come.
    obs[0, 1] = sched[min(k + 1, sched.shape[0] - 1), 0]
    _measure_into(obs[0], noise[noise_row], meas[0], meas[1], meas[2], meas[3], out[0])
    out[1, :] = obs[0]
    return tripped[0], cost[0]


class FurnaceEnv(gym.Env):
    """A gas-fired industrial furnace: hold the temperature on a moving setpoint with the least fuel.

    ## Description
    A lumped model of a natural-gas-fired furnace (2.5 MW maximum firing). The controller
    moves a fuel valve and an air damper. Burning with too much air wastes fuel through the
    hot flue gas (stack loss); burning with too little makes CO and, below stoichiometric,
    wastes unburnt fuel and trips the flame safeguard. The CO-optimal O2 moves with the
    firing rate, and hidden disturbances move what the analysers read: the heat demand of
    the load, the fuel's quality, and tramp air leaking into the flue (which raises the
    measured O2 while the burner itself runs leaner). Physics and sources:
    :mod:`furnace_env.physics`.

    Energy balance (lumped, SI): ``C dT/dt = eta_c m_f q LHV - (m_f + m_a + m_leak) cp (T - T_amb)
    - UA (T - T_amb) - Q_load``, with ``eta_c = min(1, lambda)``, ``lambda = m_a / (17.2 q m_f)``.
    Fuel valve and air damper are first-order lags with rate limits (2 s / 6 s); the
    thermocouple lags 10 s; the O2 analyser has 6 s dead time and a 3 s lag, the CO analyser
    15 s and 5 s. Control step ``dt = 5 s``, five exact sub-steps.

    ## Action space
    ``Box(-1, 1, (2,), float32)``. Finite values outside [-1, 1] are clipped (a valve
    saturates); NaN/inf or a wrong shape raise ``ValueError`` and leave the state untouched.

    | Num | Action            | -1     | +1                 |
    |-----|-------------------|--------|--------------------|
    | 0   | fuel valve command| closed | 0.05 kg/s (180 kg/h, 2.5 MW) |
    | 1   | air damper command| closed | 1.2 kg/s (4320 kg/h) |

    ## Observation space
    ``Box(low, high, (8,), float32)`` (see :func:`observation_bounds`):

    | Num | Observation                          | Unit   | Min | Max  |
    |-----|--------------------------------------|--------|-----|------|
    | 0   | furnace temperature (thermocouple)   | degC   | 0   | 1600 |
    | 1   | temperature setpoint now in force    | degC   | 0   | 1600 |
    | 2   | flue-gas O2 (analyser, dry)          | %      | 0   | 21   |
    | 3   | flue-gas CO (analyser, dry)          | ppm    | 0   | 5000 |
    | 4   | fuel flow (meter)                    | kg/h   | 0   | 198  |
    | 5   | air flow (meter)                     | kg/h   | 0   | 4752 |
    | 6   | previous fuel valve command          | -      | -1  | 1    |
    | 7   | previous air damper command          | -      | -1  | 1    |

    Hidden (in ``info`` only, for supervision and diagnostics): the true furnace
    temperature, true flows, burner air ratio, true O2 and CO, heat release, stack loss,
    load, fuel quality and leakage. ``info["plant"]`` (at reset, and at every step where a
    plant event changes the plant) maps the plant fields the scenario sets or changes to
    their true values in force; :attr:`plant` is the whole :class:`FurnaceParams` in force.

    ## Plant
    ``params`` is the base plant. A scenario's ``plant`` overrides the fields it names, with a
    value or a ``[low, high]`` range drawn uniformly from ``np_random`` at every reset (domain
    randomisation; same seed, same plant), and its ``plant_events`` step or ramp fields during
    the episode (e.g. fouling), at control-step resolution. :meth:`get_state` and
    :meth:`set_state` snapshot and restore the whole true state (:class:`FurnaceState`).

    ## Rewards
    ``reward = -step_cost`` (:mod:`furnace_env.cost`) on the noise-free measured signals:
    ``|T - T_sp| / 10 K + 10 fuel / 108 kg/h + 5 relu(CO - 100 ppm) / 100 ppm
    + 5 relu(1 % - O2) / 1 %``. Here ``T_sp`` is the setpoint in force during the step.
    One per cent of fuel costs as much as one kelvin of tracking error. A trip adds
    ``-(trip_penalty + steps_left * 10 * 180 / 108)``: the penalty plus the fuel cost of full
    fire for every step the episode had left (:func:`furnace_env.cost.trip_cost`), so that a
    deliberate early trip never pays.

    ## Starting state
    Steady state on the scenario's initial setpoint at burner air ratio ``lambda0`` (1.15,
    3 % O2), under the scenario's initial disturbances.

    ## Episode end
    Terminated on a trip: furnace above 1200 degC, or a fuel-rich burner (lambda < 1) for
    20 s (the flame safeguard). Truncated after the scenario's ``n_steps`` (240 = 20 min).
    Once an episode has ended, ``step()`` raises ``RuntimeError`` ("call reset()") and changes
    nothing, as Gymnasium's convention asks: the schedule has no row beyond the last step.

    Time limit: the env owns the episode length (the scenario's ``n_steps``, which a
    ``reset(options={"scenario": ...})`` may change). The registration records
    ``max_episode_steps=240``, the length of every preset, so that tools reading the spec see
    the limit; ``gym.make`` then adds a ``TimeLimit(240)`` that agrees with the env on every
    preset and never fires first on a shorter scenario. For a longer scenario pass
    ``gym.make("Furnace-v0", scenario=..., max_episode_steps=n_steps)`` (as
    :func:`planners.evaluation.make_scenario_env` does); otherwise the wrapper truncates at 240.
    The effective limit is ``min(n_steps, max_episode_steps)`` in both the single and the
    native vector env (which receives ``max_episode_steps`` from ``gym.make_vec``).

    ## Arguments
    ``gym.make("Furnace-v0", scenario="nominal", params=None, weights=None, sensor_noise=None,
    trip_penalty=500.0, render_mode=None)``. ``scenario``: a preset name
    (:data:`~furnace_env.scenarios.SCENARIOS`), a YAML/JSON file, a mapping or a
    :class:`~furnace_env.scenarios.Scenario`; ``sensor_noise`` overrides the scenario's.
    ``reset(options={"scenario": ...})`` switches scenario for that episode onwards; options are
    checked before the generator is reseeded, and keys other than ``"scenario"`` are refused.
    ``sensor_noise`` must be ``None`` or a real bool (a string such as ``"false"`` is refused).

    ## Version history
    * v0: initial release.
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(
        self,
        scenario: str | Scenario | dict = "nominal",
        params: FurnaceParams | None = None,
        weights: CostWeights | None = None,
        sensor_noise: bool | None = None,
        trip_penalty: float = TRIP_PENALTY,
        render_mode: str | None = None,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r}; allowed: {self.metadata['render_modes']} or None")
        check_env_args(sensor_noise, trip_penalty, params, weights)
        self.scenario = get_scenario(scenario)
        self.params = params if params is not None else FurnaceParams()
        self.weights = weights if weights is not None else CostWeights()
        self.sensor_noise = sensor_noise
        self.trip_penalty = float(trip_penalty)
        self.render_mode = render_mode
        low, high = observation_bounds(self.params)
        self._low, self._high = low.astype(np.float64), high.astype(np.float64)
        self.observation_space = spaces.Box(low, high, dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (2,), dtype=np.float32)
        self._sim = FurnaceSim(1, self.params, self.weights)
        self._cmd = np.zeros((1, 2))
        self._sched: np.ndarray | None = None
        self._k = 0
        self._n_steps = self.scenario.n_steps
        self._done = False
        self._history: list[tuple[np.ndarray, np.ndarray, float]] = []
        # Per-channel noise stds and ranges, one array for the fused step kernel.
        self._meas = np.stack([NOISE_ABS, NOISE_REL, self._low, self._high])
        # Sensor noise is drawn NOISE_BLOCK steps at a time (one numpy call instead of one per
        # step); ``_noise_pos`` is the next unused row. The generator's state before the draw is
        # kept, so that a reset can hand the unused rows back (see ``_return_noise``) and every
        # seed draws exactly the numbers it drew with one call per step. (Only code that draws
        # from ``env.np_random`` itself in mid-episode sees a different stream: the one after the block.)
        self._noise = np.zeros((NOISE_BLOCK, N_OBS))
        self._noise_pos = NOISE_BLOCK
        self._noise_rng: np.random.Generator | None = None
        self._noise_state: dict[str, Any] | None = None
        # The episode's plant per control step when its scenario has plant events (else None),
        # and the steps at which it changes (each sets the simulator's params before stepping).
        self._plant_table: np.ndarray | None = None
        self._plant_change: np.ndarray | None = None
        self._plant_names: tuple[str, ...] = ()

    @property
    def noisy(self) -> bool:
        """Whether observations carry sensor noise."""
        return self.scenario.sensor_noise if self.sensor_noise is None else bool(self.sensor_noise)

    @property
    def schedule(self) -> np.ndarray:
        """This episode's exogenous inputs ``[n_steps + 1, 4]`` (setpoint, load W, fuel quality, leak kg/s)."""
        if self._sched is None:
            raise RuntimeError("call reset() first")
        return self._sched

    @property
    def plant(self) -> FurnaceParams:
        """The plant in force now: ``params`` with the scenario's ``plant`` and ``plant_events`` applied."""
        return self._sim.params

    @property
    def command(self) -> np.ndarray:
        """The commands applied last (fuel valve, air damper) in [-1, 1] (a copy)."""
        return self._cmd[0].copy()

    @property
    def step_index(self) -> int:
        """Control steps taken in this episode."""
        return self._k

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        # Options are checked before anything moves (the generator included).
        scenario = reset_scenario(options, self.scenario)
        self._return_noise()
        super().reset(seed=seed)
        self.scenario = scenario
        self._done = False
        self._n_steps = self.scenario.n_steps
        self._sched = self.scenario.sample_schedule(self.np_random, self.params.dt)
        plant, self._plant_table = self.scenario.sample_plant(self.np_random, self.params)
        self._plant_change = None if self._plant_table is None else self._changes(self._plant_table)
        self._plant_names = self.scenario.plant_names
        self._sim.set_params(plant if self._plant_table is None else FurnaceParams.from_array(self._plant_table[0]))
        self._k = 0
        self._noisy = self.noisy
        if not self._noisy:
            # Noise-free episodes read row 0 of a block of zeros and never draw.
            self._noise[:] = 0.0
            self._noise_pos = 0
        self._sim.reset_rows(np.array([0]), self._sched[:1], np.array([self.scenario.lambda0]), self._cmd)
        obs = self._observe()
        self._history = [(obs, self._cmd[0].copy(), 0.0)]
        info = self._info(0, self._sim.obs[0].astype(np.float32))
        info["plant"] = self._plant_info()
        return obs, info

    def step(self, action):
        if self._sched is None:
            raise RuntimeError("call reset() before step()")
        if self._done:
            raise RuntimeError("step() called after the episode ended (terminated or truncated); call reset() "
                               "to start a new one")
        # Float arrays of shape (2,) go straight to the fused kernel, which checks finiteness
        # before it touches any state; anything else is checked and converted here first.
        if type(action) is not np.ndarray or action.dtype not in _FAST_DTYPES or action.shape != (2,):
            action = validate_action(action)
        if self._noisy and (self._noise_pos == NOISE_BLOCK or self._noise_rng is not self._np_random):
            validate_action(action)  # a bad action must raise before the generator moves
            self._refill()
        plant_changed = self._plant_change is not None and self._plant_change[min(self._k, self._n_steps)]
        if plant_changed:
            validate_action(action)  # ... and before the plant changes
            self._sim.set_params(FurnaceParams.from_array(self._plant_table[min(self._k, self._n_steps)]))
        sim = self._sim
        out = np.empty((2, N_OBS), dtype=np.float32)
        trip, cost = _env_step_nb(action, self._cmd, self._sched, self._k, sim.state, sim.o2_buf, sim.co_buf,
                                  sim.k, sim.p, sim.w, sim.obs, sim.report, sim.cost, sim.tripped,
                                  self._noise, self._noise_pos, self._meas, out)
        if trip < 0:
            raise _non_finite(action)
        sim.k += sim.params.n_substeps
        self._k += 1
        if self._noisy:
            self._noise_pos += 1
        reward = -cost
        if trip:
            reward -= trip_cost(self._n_steps - self._k, self.trip_penalty, self.weights,
                                self.params.fuel_max * 3600.0)
        obs = out[0]
        if self.render_mode == "rgb_array":
            self._history.append((obs, self._cmd[0].copy(), reward))
        terminated, truncated = trip != 0, self._k >= self._n_steps
        self._done = terminated or truncated
        info = self._info(trip, out[1])
        if plant_changed:
            info["plant"] = self._plant_info()
        return obs, reward, terminated, truncated, info

    # -- state ---------------------------------------------------------------------------------
    def get_state(self) -> FurnaceState:
        """A frozen snapshot of everything that decides the episode's future (see :class:`FurnaceState`)."""
        if self._sched is None:
            raise RuntimeError("call reset() before get_state()")
        sim = self._sim
        return FurnaceState(
            plant=sim.params,
            plant_table=None if self._plant_table is None else frozen_copy(self._plant_table),
            physics=frozen_copy(sim.state[0]), o2_buf=frozen_copy(sim.o2_buf[0]), co_buf=frozen_copy(sim.co_buf[0]),
            substep=int(sim.k), schedule=frozen_copy(self._sched), step=int(self._k),
            command=frozen_copy(self._cmd[0]), noisy=bool(self._noisy), rng_state=self._rng_state(),
            plant_names=self._plant_names,
        )

    def set_state(self, state: FurnaceState) -> None:
        """Put the env exactly at ``state`` (from :meth:`get_state` of this env or one built with the
        same structural plant fields); the next steps then reproduce the snapshot's future.

        Everything is checked before anything changes. The ``scenario`` attribute stays as it
        is (the snapshot carries the episode's schedule and plant); the next ``reset`` starts
        from the scenario as usual.
        """
        if not isinstance(state, FurnaceState):
            raise ValueError(f"set_state expects a FurnaceState (from get_state()), got {type(state).__name__}")
        sim = self._sim
        for name, got, want in (("o2_buf", state.o2_buf.shape, sim.o2_buf[0].shape),
                                ("co_buf", state.co_buf.shape, sim.co_buf[0].shape),
                                ("physics", state.physics.shape, sim.state[0].shape),
                                ("command", state.command.shape, (2,))):
            if got != want:
                raise ValueError(f"set_state: {name} has shape {got}; this env needs {want}")
        if state.schedule.ndim != 2 or state.schedule.shape[1] != 4 or not 0 <= state.step <= state.n_steps:
            raise ValueError(f"set_state: schedule shape {state.schedule.shape} with step {state.step}; "
                             "expected [n_steps + 1, 4] and 0 <= step <= n_steps")
        if state.plant_table is not None and state.plant_table.shape[0] != state.schedule.shape[0]:
            raise ValueError(f"set_state: plant_table has {state.plant_table.shape[0]} rows; the schedule "
                             f"{state.schedule.shape[0]}")
        gen = type(self.np_random.bit_generator).__name__
        if state.rng_state.get("bit_generator") != gen:
            raise ValueError(f"set_state: rng_state is for {state.rng_state.get('bit_generator')!r}; "
                             f"this env's np_random uses {gen!r}")
        sim.set_params(state.plant)  # raises, unchanged, if a structural field differs
        # Forget any pre-drawn noise block: the generator is set to the snapshot's per-step position.
        self._noise_rng = None
        self._noise_pos = NOISE_BLOCK
        self.np_random.bit_generator.state = state.rng_state
        self._noisy = state.noisy
        if not self._noisy:
            self._noise[:] = 0.0
            self._noise_pos = 0
        sim.state[0] = state.physics
        sim.o2_buf[0] = state.o2_buf
        sim.co_buf[0] = state.co_buf
        sim.k = state.substep
        self._cmd[0] = state.command
        self._sched = np.array(state.schedule)
        self._k = state.step
        self._n_steps = state.n_steps
        self._done = state.step >= state.n_steps
        self._plant_table = None if state.plant_table is None else np.array(state.plant_table)
        self._plant_change = None if self._plant_table is None else self._changes(self._plant_table)
        self._plant_names = tuple(state.plant_names)

    def _rng_state(self) -> dict[str, Any]:
        """``np_random``'s state as if each step had drawn its own noise (see ``_return_noise``), untouched."""
        rng = self.np_random
        if self._noise_rng is not None and self._noise_rng is self._np_random and self._noise_pos < NOISE_BLOCK:
            g = np.random.Generator(type(rng.bit_generator)())
            g.bit_generator.state = self._noise_state
            g.standard_normal(self._noise_pos * N_OBS)
            return g.bit_generator.state
        return rng.bit_generator.state

    @staticmethod
    def _changes(table: np.ndarray) -> np.ndarray:
        """Steps whose plant differs from the step before (step 0 is set at reset)."""
        change = np.zeros(table.shape[0], dtype=bool)
        change[1:] = (table[1:] != table[:-1]).any(axis=1)
        return change

    def _plant_info(self) -> dict[str, float]:
        """The plant fields the scenario sets or changes, at their values in force now."""
        plant = self._sim.params
        return {name: getattr(plant, name) for name in self._plant_names}

    def _refill(self) -> None:
        """Draw the next block of sensor noise from ``np_random``."""
        self._return_noise()
        rng = self._noise_rng = self.np_random
        self._noise_state = rng.bit_generator.state
        rng.standard_normal(out=self._noise)
        self._noise_pos = 0

    def _return_noise(self) -> None:
        """Rewind ``np_random`` to just after the noise rows used so far, as if each step had drawn its own."""
        if self._noise_rng is not None and self._noise_rng is self._np_random and self._noise_pos < NOISE_BLOCK:
            self._noise_rng.bit_generator.state = self._noise_state
            self._noise_rng.standard_normal(self._noise_pos * N_OBS)
        self._noise_rng = None
        self._noise_pos = NOISE_BLOCK

    def _observe(self) -> np.ndarray:
        obs = self._sim.obs[0]
        obs[1] = self._sched[min(self._k, self._sched.shape[0] - 1), 0]
        return measure(obs, self._np_random if self._noisy else None, self._low, self._high)

    def _info(self, trip: int, obs_clean: np.ndarray) -> dict[str, Any]:
        # One zip over the report row (16 Python floats from one ``tolist``) is the cheapest way
        # to build the entries; the info dict used to cost more than the physics step.
        info: dict[str, Any] = dict(zip(REPORT_NAMES, self._sim.report[0].tolist(), strict=True))
        info["obs_clean"] = obs_clean
        info["trip"] = TRIP_REASONS[trip]
        return info

    def render(self):
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='ansi' or 'rgb_array'")
            return None
        obs = self._history[-1][0] if self._history else None
        if self.render_mode == "ansi":
            if obs is None:
                return "(not reset)"
            return (f"t={self._k * self.params.dt:6.0f}s  T={obs[0]:7.1f}  SP={obs[1]:7.1f} degC  "
                    f"O2={obs[2]:5.2f}%  CO={obs[3]:7.1f}ppm  fuel={obs[4]:6.1f}kg/h  air={obs[5]:7.1f}kg/h")
        from furnace_env.plotting import render_history

        return render_history(self._history, self.params.dt)
