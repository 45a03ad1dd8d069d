"""State and disturbance estimation for the furnace from its measurements alone: an unscented Kalman filter.

:class:`FurnaceUKF` is what an advanced-process-control vendor puts in front of a model-based
controller: the first-principles model (:mod:`furnace_env.physics` on *nominal* plant
parameters) augmented with the unmeasured disturbances as random-walk states, filtered by
``filterpy``'s :class:`~filterpy.kalman.UnscentedKalmanFilter` (Julier and Uhlmann 1997; the
scaled sigma points of van der Merwe 2004). It reads only the observation vector of Furnace-v0.

Filter state (the UKF's coordinates; units chosen so that every variance is of order one to
thousands, which keeps the covariance well conditioned):

====  ==========================================  ==========
 idx  quantity                                     unit
====  ==========================================  ==========
 0    furnace temperature                          degC
 1    thermocouple reading                         degC
 2    fuel flow (valve position)                   kg/h
 3    air flow (damper position)                   kg/h
 4    O2 analyser reading                          %
 5    CO analyser reading                          log(ppm + 10)
 6..  O2 analyser dead-time buffer (L_o2 values)   %
 ..   CO analyser dead-time buffer (L_co values)   log(ppm + 10)
 -3   heat demand of the load                      LOAD_REF (7.4e5 W)
 -2   fuel quality (heating value, air demand)     -
 -1   tramp-air leak                               kg/h
====  ==========================================  ==========

Every sigma point is propagated by the same numba kernel the env and the oracle use (one
:class:`~furnace_env.physics.FurnaceSim` row per sigma point, one call per control step), with
the commands the observation reports as applied. CO is filtered in ``log(CO + 10)``: the
analyser's noise is mostly relative, and the CO curve is exponential in O2, so the logarithm
makes both closer to what a Kalman filter assumes. The time a burner has run fuel-rich (the
flame safeguard's timer) is not a filter state (it is a counter that resets, not a smooth
quantity); it is tracked from the estimated burner air ratio.

Observability, stated plainly: at steady state the temperature fixes the heat balance
(heat release minus load and losses) and the O2 the ratio of air plus leak to the fuel's air
demand; the CO adds information only near the CO knee. So three disturbances meet two (or
three) equations, and the filter splits what it cannot tell apart by the random walks' sizes:
a heat imbalance goes mostly to the load, an O2 offset mostly to the leak, and the fuel
quality moves slowly. That is the information limit of a controller that measures what this
one measures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import NamedTuple

import numpy as np
from filterpy.kalman import MerweScaledSigmaPoints, UnscentedKalmanFilter

from furnace_env.control import one_plant_observation
from furnace_env.cost import CostWeights
from furnace_env.env import NOISE_ABS, NOISE_REL, observation_bounds
from furnace_env.physics import (
    N_OBS,
    OBS_NAMES,
    FurnaceParams,
    FurnaceSim,
    co_ppm,
    flue_o2,
    is_real,
)
from furnace_env.scenarios import LOAD_REF
from planners.physics_objective import PhysicsSnapshot

__all__ = ["EstimatorConfig", "DisturbanceEstimate", "FurnaceUKF", "N_MEAS", "MEAS_NAMES"]

#: Measured channels the filter uses (observation indices 0, 2, 3, 4, 5), in its measurement order.
MEAS_NAMES = ("temperature", "o2", "co", "fuel_flow", "air_flow")
N_MEAS = len(MEAS_NAMES)
#: Their channels in the observation (thermocouple, O2, CO, fuel flow, air flow).
_MEAS_OBS = (0, 2, 3, 4, 5)


def _env_noise(table: np.ndarray) -> tuple[float, ...]:
    """Furnace-v0's documented measurement-noise parameters of the measured channels."""
    return tuple(float(table[j]) for j in _MEAS_OBS)
_OBS_IDX = np.array([0, 2, 3, 4, 5])
_CO_OFFSET = 10.0  # ppm, the offset of the log-CO coordinate
# Instrument ranges of temperature, O2 and CO (Furnace-v0's observation bounds), in the filter's
# measurement coordinates: the measurement model clips its prediction as the instrument clips its
# reading, so a saturated reading still says "at least this much" (a fuel-rich burner drives the CO
# analyser to its top; ignoring that reading would hide the very event the filter must catch).
_CLIP_LOW = np.array([0.0, 0.0, math.log(_CO_OFFSET)])
_CLIP_HIGH = np.array([1600.0, 21.0, math.log(5000.0 + _CO_OFFSET)])
# Physical ranges the filter's mean is kept inside after an update (a constrained UKF by projection).
_LOAD_RANGE = (0.0, 2.0)
_QUALITY_RANGE = (0.7, 1.3)
_LEAK_RANGE_KG_S = (0.0, 0.4)


class DisturbanceEstimate(NamedTuple):
    """The filter's estimate of the unmeasured disturbances."""

    load: float
    """Heat demand of the load, W."""
    fuel_quality: float
    """Heating value and air demand relative to methane, -."""
    leak: float
    """Tramp-air leak into the flue, kg/s."""


@dataclass(frozen=True)
class EstimatorConfig:
    """Noise model and tuning of :class:`FurnaceUKF` (standard deviations; per control step for the walks)."""

    load_walk: float = 0.01
    """Random-walk std of the load per control step, multiples of ``LOAD_REF``. The largest of the
    three walks: an unexplained heat imbalance is taken for a load change first (loads move most in
    practice), and a load step of 0.3 is followed within tens of steps."""
    quality_walk: float = 0.001
    """Random-walk std of the fuel quality per control step (a supply changes slowly)."""
    leak_walk: float = 0.002
    """Random-walk std of the tramp-air leak per control step, kg/s (an O2 offset is taken for a leak first)."""
    state_walk: tuple[float, float, float, float, float, float] = (0.3, 0.05, 0.1, 1.0, 0.02, 0.02)
    """Process-noise std per step of temperature (K), thermocouple (K), fuel (kg/h), air (kg/h),
    O2 reading (%) and log-CO reading: the model error of the nominal physics. The analyser
    buffers get the O2 and log-CO values."""
    init_std: tuple[float, ...] = (2.0, 1.0, 1.0, 10.0, 0.2, 0.3, 0.1, 0.03, 0.02)
    """Initial std of temperature, thermocouple, fuel, air, O2, log-CO (buffers alike), load
    (``LOAD_REF``), fuel quality and leak (kg/s), around the steady state of the first observation."""
    quality0: float = 1.0
    """Fuel quality assumed at the start (the design fuel)."""
    leak0: float = 0.02
    """Leak assumed at the start, kg/s (the design value); the load then follows from the heat balance."""
    sensor_abs: tuple[float, float, float, float, float] = field(default_factory=lambda: _env_noise(NOISE_ABS))
    """Absolute noise std of temperature (K), O2 (%), CO (ppm), fuel (kg/h) and air (kg/h): by
    default Furnace-v0's documented noise levels (``furnace_env.env.NOISE_ABS``)."""
    sensor_rel: tuple[float, float, float, float, float] = field(default_factory=lambda: _env_noise(NOISE_REL))
    """Relative noise std of the same channels, per unit of the reading (``NOISE_REL``)."""
    sensor_floor: tuple[float, float, float, float, float] = (0.2, 0.01, 0.01, 0.1, 1.0)
    """Smallest std of each channel (temperature K, O2 %, log-CO, fuel kg/h, air kg/h): keeps the
    filter stable on noise-free data and absorbs rounding of the float32 observation."""
    alpha: float = 1.0
    """Spread of the scaled sigma points (van der Merwe's alpha, in (0, 1]); 1 spreads them
    ``sqrt(n)`` standard deviations and keeps every weight non-negative."""
    beta: float = 2.0
    """Prior-distribution parameter of the scaled sigma points (2: Gaussian)."""
    kappa: float = 0.0
    """Secondary spread parameter of the scaled sigma points."""

    def __post_init__(self) -> None:
        for name in ("load_walk", "quality_walk", "leak_walk", "alpha"):
            v = getattr(self, name)
            if not (is_real(v) and math.isfinite(v) and v > 0):
                raise ValueError(f"EstimatorConfig.{name}={v!r} must be finite and > 0")
        if self.alpha > 1.0:
            raise ValueError(f"EstimatorConfig.alpha={self.alpha!r} must lie in (0, 1]")
        for name in ("beta", "kappa"):
            v = getattr(self, name)
            if not (is_real(v) and math.isfinite(v)):
                raise ValueError(f"EstimatorConfig.{name}={v!r} must be finite")
        lengths = {"state_walk": 6, "init_std": 9, "sensor_abs": N_MEAS, "sensor_rel": N_MEAS,
                   "sensor_floor": N_MEAS}
        for name, n in lengths.items():
            v = getattr(self, name)
            if (not isinstance(v, list | tuple | np.ndarray) or len(v) != n
                    or not all(is_real(x) and math.isfinite(x) and x >= 0 for x in v)):
                raise ValueError(f"EstimatorConfig.{name}={v!r} must be {n} finite numbers >= 0")
            object.__setattr__(self, name, tuple(float(x) for x in v))  # hashable and comparable, as a frozen config is
        for name in ("state_walk", "init_std", "sensor_floor"):
            if min(getattr(self, name)) <= 0:
                raise ValueError(f"EstimatorConfig.{name}={getattr(self, name)!r}: every entry must be > 0")
        if not (is_real(self.quality0) and _QUALITY_RANGE[0] <= self.quality0 <= _QUALITY_RANGE[1]):
            raise ValueError(f"EstimatorConfig.quality0={self.quality0!r} outside {list(_QUALITY_RANGE)}")
        if not (is_real(self.leak0) and _LEAK_RANGE_KG_S[0] <= self.leak0 <= _LEAK_RANGE_KG_S[1]):
            raise ValueError(f"EstimatorConfig.leak0={self.leak0!r} kg/s outside {list(_LEAK_RANGE_KG_S)}")

    @classmethod
    def field_names(cls) -> list[str]:
        """The configurable fields (for error messages and option routing)."""
        return [f.name for f in fields(cls)]


class _BatchUKF(UnscentedKalmanFilter):
    """filterpy's UKF with the sigma points propagated as one batch (``fx(sigmas [2n+1, n], dt)``).

    The library calls ``fx`` once per sigma point; the furnace physics is a batched kernel, so one
    call for all of them is the natural (and 60 times cheaper) form. The filter equations are the library's.
    """

    def compute_process_sigmas(self, dt, fx=None, **fx_args):
        fx = self.fx if fx is None else fx
        sigmas = self.points_fn.sigma_points(self.x, self.P)
        self.sigmas_f = np.asarray(fx(sigmas, dt, **fx_args), dtype=np.float64)


class FurnaceUKF:
    """Unscented Kalman filter of the furnace's hidden state and unmeasured disturbances (see the module doc).

    Call :meth:`step` with every observation of an episode, starting with the one ``reset``
    returns (it initialises the filter at the steady state that observation implies);
    :meth:`reset` starts a new episode. :meth:`snapshot` hands the estimate to a physics planner.

    Args:
        params: the model's plant parameters (nominal: the design values, not the plant's).
        weights: cost weights (the simulator computes the step cost; the filter does not use it).
        config: the noise model.
    """

    def __init__(self, params: FurnaceParams | None = None, weights: CostWeights | None = None,
                 config: EstimatorConfig | None = None) -> None:
        self.params = params if params is not None else FurnaceParams()
        self.config = config if config is not None else EstimatorConfig()
        p = self.params
        self.l_o2 = p.delay_len(p.o2_delay)
        self.l_co = p.delay_len(p.co_delay)
        self.dim = 6 + self.l_o2 + self.l_co + 3
        c = self.config
        points = MerweScaledSigmaPoints(self.dim, alpha=c.alpha, beta=c.beta, kappa=c.kappa)
        self.ukf = _BatchUKF(dim_x=self.dim, dim_z=N_MEAS, dt=p.dt, hx=self._hx, fx=self._fx, points=points)
        self._sim = FurnaceSim(points.num_sigmas(), self.params, weights if weights is not None else CostWeights())
        self._walk = self._process_std() ** 2
        self._low, self._high = observation_bounds(p)
        self.reset()

    # -- layout ------------------------------------------------------------------------------------
    @property
    def _i_o2(self) -> slice:
        return slice(6, 6 + self.l_o2)

    @property
    def _i_co(self) -> slice:
        return slice(6 + self.l_o2, 6 + self.l_o2 + self.l_co)

    def _process_std(self) -> np.ndarray:
        c = self.config
        sw = c.state_walk
        return np.concatenate([sw, np.full(self.l_o2, sw[4]), np.full(self.l_co, sw[5]),
                               [c.load_walk, c.quality_walk, c.leak_walk * 3600.0]])

    def _init_std(self) -> np.ndarray:
        s = self.config.init_std
        return np.concatenate([s[:6], np.full(self.l_o2, s[4]), np.full(self.l_co, s[5]), [s[6], s[7], s[8] * 3600.0]])

    # -- episode -----------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the episode; the next :meth:`step` initialises the filter."""
        self.initialised = False
        self.k = 0
        self.rich_time = 0.0
        self.n_updates = 0

    def step(self, obs: np.ndarray) -> None:
        """Filter one observation ``[8]`` of Furnace-v0 (its channels 6 and 7 are the commands of the
        step that led to it, the filter's input)."""
        # Exactly one finite observation of the 8 channels, checked before the filter moves (a longer
        # vector or a batch would otherwise be read by position, silently), within the instrument
        # ranges Furnace-v0 clips its readings to: a reading such as 1e30 degC is not a measurement,
        # and would leave an estimate whose next prediction overflows.
        o = one_plant_observation(obs, "FurnaceUKF", obs_dim=N_OBS)
        out = np.flatnonzero((o.astype(np.float32) < self._low) | (o.astype(np.float32) > self._high))
        if out.size:
            raise ValueError(f"observation {o.tolist()}: {[OBS_NAMES[j] for j in out]} outside the instrument "
                             f"ranges [{self._low.tolist()}, {self._high.tolist()}] of the filter's plant")
        saved = (self.ukf.x.copy(), self.ukf.P.copy(), self.k, self.initialised)
        try:
            if not self.initialised:
                self._initialise(o)
            else:
                self.ukf.predict(cmd=o[6:8])
                self.k += self.params.n_substeps
            self.ukf.update(self._z(o), R=self._R(o))
            self._project()
            if not (np.isfinite(self.ukf.x).all() and np.isfinite(self.ukf.P).all()):
                raise FloatingPointError("non-finite estimate")
        except (ValueError, FloatingPointError, np.linalg.LinAlgError) as err:
            # Left as it was: a failed step must not leave half an update (a predicted but not corrected state).
            self.ukf.x, self.ukf.P, self.k, self.initialised = saved
            raise ValueError(f"observation {o.tolist()}: the filter's update failed ({type(err).__name__}: {err}); "
                             "the estimate is left as it was") from err
        lam = self.burner_lambda()
        self.rich_time = self.rich_time + self.params.dt if lam < 1.0 else 0.0
        self.n_updates += 1

    def _initialise(self, o: np.ndarray) -> None:
        """Steady state at the measured temperature and flows, design fuel and leak, load from the heat balance."""
        p, c = self.params, self.config
        t = o[0]
        fuel, air = o[4] / 3600.0, o[5] / 3600.0
        q, leak = c.quality0, c.leak0
        demand = p.afr * q * max(fuel, 1e-9)
        lam = air / demand
        rise = t - p.t_amb
        load = min(lam, 1.0) * fuel * q * p.lhv - (fuel + air + leak) * p.cp_fg * rise - p.ua * rise
        o2 = flue_o2((air + leak) / demand - 1.0)
        co = self._co_burner(lam, fuel) * (fuel + air) / (fuel + air + leak)
        x = np.empty(self.dim)
        x[:6] = [t, t, o[4], o[5], o2, math.log(co + _CO_OFFSET)]
        x[self._i_o2] = o2
        x[self._i_co] = math.log(co + _CO_OFFSET)
        x[-3:] = [float(np.clip(load / LOAD_REF, *_LOAD_RANGE)), q, leak * 3600.0]
        self.ukf.x = x
        self.ukf.P = np.diag(self._init_std() ** 2)
        self.ukf.Q = np.diag(self._walk)
        # The first update comes without a predict: its sigma points are those of the initial estimate.
        self.ukf.sigmas_f = self.ukf.points_fn.sigma_points(self.ukf.x, self.ukf.P)
        self.initialised = True

    def _co_burner(self, lam: float, fuel: float) -> float:
        p = self.params
        return co_ppm(lam, fuel / p.fuel_max, p.co_base, p.co_knee_amp, p.o2_knee, p.knee_slope, p.fire_ref,
                      p.co_width, p.co_rich, p.co_max)

    # -- model -------------------------------------------------------------------------------------
    def _fx(self, sigmas: np.ndarray, dt: float, cmd: np.ndarray) -> np.ndarray:
        """Propagate every sigma point ``[M, dim]`` one control step under commands ``cmd [2]``."""
        p, sim = self.params, self._sim
        x = sigmas
        sim.state[:, 0] = x[:, 0]
        sim.state[:, 1] = x[:, 1]
        sim.state[:, 2] = np.clip(x[:, 2] / 3600.0, 0.0, p.fuel_max)
        sim.state[:, 3] = np.clip(x[:, 3] / 3600.0, 0.0, p.air_max)
        sim.state[:, 4] = x[:, 4]
        sim.state[:, 5] = np.exp(x[:, 5]) - _CO_OFFSET
        sim.state[:, 6] = self.rich_time
        sim.o2_buf[:] = x[:, self._i_o2]
        sim.co_buf[:] = np.exp(x[:, self._i_co]) - _CO_OFFSET
        sim.k = self.k
        dist = np.empty((x.shape[0], 4))
        dist[:, 0] = x[:, 0]  # the setpoint does not enter the physics
        dist[:, 1] = np.clip(x[:, -3], *_LOAD_RANGE) * LOAD_REF
        dist[:, 2] = np.clip(x[:, -2], *_QUALITY_RANGE)
        dist[:, 3] = np.clip(x[:, -1] / 3600.0, *_LEAK_RANGE_KG_S)
        cmds = np.ascontiguousarray(np.broadcast_to(np.clip(cmd, -1.0, 1.0), (x.shape[0], 2)))
        sim.step(cmds, dist)
        out = x.copy()
        out[:, 0] = sim.state[:, 0]
        out[:, 1] = sim.state[:, 1]
        out[:, 2] = sim.state[:, 2] * 3600.0
        out[:, 3] = sim.state[:, 3] * 3600.0
        out[:, 4] = sim.state[:, 4]
        out[:, 5] = np.log(np.maximum(sim.state[:, 5], 0.0) + _CO_OFFSET)
        out[:, self._i_o2] = sim.o2_buf
        out[:, self._i_co] = np.log(np.maximum(sim.co_buf, 0.0) + _CO_OFFSET)
        return out  # the disturbances are random walks: carried over unchanged

    @staticmethod
    def _hx(x: np.ndarray) -> np.ndarray:
        """Predicted measurement: thermocouple, O2 reading, log-CO reading (clipped to the instruments'
        ranges, as the readings are), fuel and air flows."""
        z = np.array([x[1], x[4], x[5], x[2], x[3]])
        z[:3] = np.clip(z[:3], _CLIP_LOW, _CLIP_HIGH)
        return z

    def _z(self, o: np.ndarray) -> np.ndarray:
        z = o[_OBS_IDX].copy()
        z[2] = math.log(max(z[2], 0.0) + _CO_OFFSET)
        return z

    def _R(self, o: np.ndarray) -> np.ndarray:
        """Measurement covariance from the instruments' noise model at the current readings."""
        c = self.config
        y = o[_OBS_IDX]
        std = np.asarray(c.sensor_abs) + np.asarray(c.sensor_rel) * np.abs(y)
        std[2] = std[2] / (max(y[2], 0.0) + _CO_OFFSET)  # into log-CO units
        std = np.maximum(std, c.sensor_floor)
        return np.diag(std**2)

    def _project(self) -> None:
        """Keep the mean in the physical ranges and the covariance symmetric positive definite."""
        p = self.params
        x = self.ukf.x
        x[2] = np.clip(x[2], 0.0, p.fuel_max * 3600.0)
        x[3] = np.clip(x[3], 0.0, p.air_max * 3600.0)
        x[4] = np.clip(x[4], 0.0, 21.0)
        x[self._i_o2] = np.clip(x[self._i_o2], 0.0, 21.0)
        log_floor = math.log(_CO_OFFSET)
        x[5] = max(x[5], log_floor)
        x[self._i_co] = np.maximum(x[self._i_co], log_floor)
        x[-3] = np.clip(x[-3], *_LOAD_RANGE)
        x[-2] = np.clip(x[-2], *_QUALITY_RANGE)
        x[-1] = np.clip(x[-1], _LEAK_RANGE_KG_S[0] * 3600.0, _LEAK_RANGE_KG_S[1] * 3600.0)
        P = 0.5 * (self.ukf.P + self.ukf.P.T)
        w, v = np.linalg.eigh(P)
        floor = 1e-9 * max(float(w.max()), 1.0)
        if w.min() < floor:
            P = (v * np.maximum(w, floor)) @ v.T
        self.ukf.P = P

    # -- outputs -----------------------------------------------------------------------------------
    @property
    def x(self) -> np.ndarray:
        """The filter's mean (its own coordinates, see the module doc)."""
        return self.ukf.x

    @property
    def P(self) -> np.ndarray:
        """The filter's covariance."""
        return self.ukf.P

    def disturbances(self) -> DisturbanceEstimate:
        """The estimated load (W), fuel quality and leak (kg/s)."""
        self._check_initialised()
        x = self.ukf.x
        return DisturbanceEstimate(float(x[-3] * LOAD_REF), float(x[-2]), float(x[-1] / 3600.0))

    def disturbance_std(self) -> DisturbanceEstimate:
        """Posterior standard deviations of :meth:`disturbances`, same units."""
        self._check_initialised()
        s = np.sqrt(np.diag(self.ukf.P)[-3:])
        return DisturbanceEstimate(float(s[0] * LOAD_REF), float(s[1]), float(s[2] / 3600.0))

    def burner_lambda(self) -> float:
        """Estimated burner air ratio (air over the fuel's air demand)."""
        x, p = self.ukf.x, self.params
        return float(x[3] / max(p.afr * x[-2] * x[2], 1e-9))

    def snapshot(self, setpoint: float, cmd: np.ndarray) -> PhysicsSnapshot:
        """The estimate as the starting point of a physics rollout, setpoint and disturbances held."""
        self._check_initialised()
        x = self.ukf.x
        state = np.array([x[0], x[1], x[2] / 3600.0, x[3] / 3600.0, x[4], math.exp(x[5]) - _CO_OFFSET,
                          self.rich_time])
        d = self.disturbances()
        return PhysicsSnapshot(state=state, o2_buf=x[self._i_o2].copy(),
                               co_buf=np.exp(x[self._i_co]) - _CO_OFFSET, k=int(self.k),
                               dist=np.array([float(setpoint), d.load, d.fuel_quality, d.leak]),
                               cmd=np.asarray(cmd, dtype=np.float64).copy())

    def _check_initialised(self) -> None:
        if not self.initialised:
            raise RuntimeError("step() the filter with an observation first")
