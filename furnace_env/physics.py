"""Combustion physics of a gas-fired furnace, as pure functions over a batch of furnaces.

Everything here is written once and serves three callers: the single
:class:`~furnace_env.env.FurnaceEnv` (a batch of one), the native vector env and the
oracle planner (batches of thousands). The time-critical part is one numba kernel,
:func:`step_batch`, that advances ``N`` furnaces by one control step: a compiled loop
has no per-call numpy overhead for ``N = 1`` and no per-furnace Python loop for
``N = 4096``. The linear parts (actuator lags, thermocouple, analyser lags and the
energy balance with flows held over a sub-step) are discretised exactly, so the
sub-stepping is stable for any step size.

To read the physics, start with :mod:`furnace_env.physics_reference`: the same step as
plain numpy, one line per equation, which the kernel is tested against. The kernel's
speed paths live in their own modules: :mod:`furnace_env.fast_exp` (an ``exp`` that
vectorises) and :mod:`furnace_env.row_threads` (big batches split across threads).

Sources for the constants (all are fields of :class:`FurnaceParams`):

* Natural gas as methane: lower heating value 50.0 MJ/kg, stoichiometric air-fuel
  ratio 17.2 kg/kg (e.g. Baukal, *Industrial Combustion Pollution and Control*, 2004).
* Dry flue-gas O2 from excess air ``EA = lambda - 1``: ``O2 = 2 EA / (8.52 + 9.52 EA)``
  (methane mass balance; reproduces the US DOE steam tip sheet #4 table: 9.5 % excess
  air -> 2 % O2, 15 % -> 3 %, 28 % -> 5 %).
* CO rises exponentially below a knee in burner O2 (about 10 ppm at 2 % O2, 100 ppm at
  1 %, hundreds at 0.5 %), and the knee moves to higher O2 at low fire, where burner
  mixing is poorer (typical burner CO/O2 curves, e.g. the *North American Combustion
  Handbook*). Below stoichiometric, unburnt fuel: combustion efficiency ``lambda``.
* Flue-gas heat capacity about 1.15 kJ/(kg K) between ambient and 900 degC.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass

import numba
import numpy as np

from furnace_env.cost import CostWeights, cost_terms
from furnace_env.fast_exp import exp as _exp
from furnace_env.row_threads import CHUNK_ROWS, N_THREADS, run_row_chunks

__all__ = [
    "FurnaceParams",
    "PARAM_RANGES",
    "FurnaceSim",
    "flue_o2",
    "co_ppm",
    "steady_state_fuel",
    "step_batch",
    "step_kernel",
    "N_OBS",
    "OBS_NAMES",
    "STRUCTURAL_FIELDS",
    "DIST_NAMES",
    "INFO_NAMES",
    "is_real",
]

#: Observation channels, in order (see the env docstring for units and bounds).
OBS_NAMES = (
    "temperature",
    "setpoint",
    "o2",
    "co",
    "fuel_flow",
    "air_flow",
    "prev_fuel_cmd",
    "prev_air_cmd",
)
N_OBS = len(OBS_NAMES)
#: Exogenous inputs per control step: setpoint (degC), load (W), fuel quality (-), tramp air (kg/s).
DIST_NAMES = ("setpoint", "load", "fuel_quality", "leak")
#: Hidden quantities the kernel reports for ``info`` and supervision.
INFO_NAMES = (
    "temperature_true",
    "fuel_flow_true",
    "air_flow_true",
    "lambda_burner",
    "o2_true",
    "co_true",
    "heat_release",
    "stack_loss",
)
#: Cost terms (see :func:`furnace_env.cost.cost_terms`).
TERM_NAMES = ("cost_track", "cost_fuel", "cost_co", "cost_o2")
#: Columns of ``FurnaceSim.report``: everything the env puts in ``info`` as numbers.
REPORT_NAMES = (*INFO_NAMES, *DIST_NAMES, *TERM_NAMES)
_N_DIST = len(DIST_NAMES)
_R_DIST = len(INFO_NAMES)
_R_TERMS = _R_DIST + _N_DIST

# State columns.
_T, _TC, _FUEL, _AIR, _O2M, _COM, _RICH = range(7)
_N_STATE = 7


def is_real(v: object) -> bool:
    """A real number: int or float, numpy's too, but not a bool (``True`` is an int) and not a string.

    The type check every validator here runs before comparing: ``"0.1" < 0.5`` raises a bare
    ``TypeError`` and ``True`` would pass as 1."""
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool | np.bool_)


#: Physically meaningful ranges of the parameters that have one (degC, ppm, % dry, -). Outside
#: them the model is not a furnace any more: combustion air below -60 or above 100 degC, a trip
#: above the thermocouple's 1600 degC range, negative CO.
PARAM_RANGES = {
    "t_amb": (-60.0, 100.0),
    "t_max": (200.0, 1600.0),
    "co_base": (0.0, 1.0e4),
    "co_knee_amp": (0.0, 1.0e4),
    "co_rich": (0.0, 1.0e7),
    "co_max": (1.0, 1.0e6),
    "o2_knee": (0.0, 21.0),
    "knee_slope": (0.0, 21.0),
    "fire_ref": (0.0, 1.0),
    "afr": (1.0, 100.0),
    "lhv": (1.0e6, 1.5e8),
    "n_substeps": (1, 1000),
}


@dataclass(frozen=True)
class FurnaceParams:
    """Physical parameters of the furnace, in SI units unless stated (degC for temperatures)."""

    lhv: float = 50.0e6
    """Lower heating value of the fuel, J/kg (methane)."""
    afr: float = 17.2
    """Stoichiometric air-fuel mass ratio, kg/kg (methane)."""
    cp_fg: float = 1150.0
    """Mean heat capacity of the flue gas, J/(kg K)."""
    t_amb: float = 25.0
    """Ambient and combustion-air temperature, degC."""
    ua: float = 150.0
    """Wall-loss conductance, W/K."""
    heat_capacity: float = 2.0e5
    """Lumped thermal capacity of gas, refractory surface and load, J/K (time constant ~4 min)."""
    fuel_max: float = 0.05
    """Fuel flow at a fully open valve, kg/s (2.5 MW firing)."""
    air_max: float = 1.2
    """Air flow at a fully open damper, kg/s."""
    tau_fuel: float = 2.0
    """Fuel-valve time constant, s."""
    tau_air: float = 6.0
    """Air-damper time constant, s."""
    rate_fuel: float = 0.02
    """Fuel-valve rate limit, kg/s per s (full stroke in 2.5 s)."""
    rate_air: float = 0.12
    """Air-damper rate limit, kg/s per s (full stroke in 10 s)."""
    tau_tc: float = 10.0
    """Thermocouple time constant, s."""
    o2_delay: float = 6.0
    """Dead time of the O2 analyser (in-situ zirconia probe), s."""
    co_delay: float = 15.0
    """Dead time of the CO analyser (extractive sample line), s."""
    tau_o2: float = 3.0
    """O2 analyser time constant, s."""
    tau_co: float = 5.0
    """CO analyser time constant, s."""
    co_base: float = 5.0
    """CO floor at high excess air, ppm."""
    co_knee_amp: float = 5.0
    """CO above the floor at the knee, ppm."""
    o2_knee: float = 2.0
    """Burner O2 at the CO knee at the reference firing rate, % dry."""
    knee_slope: float = 2.0
    """Rise of the knee O2 per unit drop of firing fraction below the reference, % dry."""
    fire_ref: float = 0.6
    """Firing fraction (fuel / fuel_max) at which the knee sits at ``o2_knee``."""
    co_width: float = 0.34
    """O2 e-folding width of the CO rise below the knee, % dry."""
    co_rich: float = 1.0e5
    """Extra CO per unit of fuel-rich deficit (1 - lambda), ppm."""
    co_max: float = 5.0e4
    """Physical CO ceiling, ppm."""
    dt: float = 5.0
    """Control step, s."""
    n_substeps: int = 5
    """Sub-steps per control step (the linear parts are exact; this resolves the couplings)."""
    t_max: float = 1200.0
    """High-temperature trip, degC."""
    rich_trip_time: float = 20.0
    """Continuous fuel-rich burner operation (lambda < 1) that trips the flame safeguard, s."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            # Type first: a string such as "5e7" would otherwise reach math.isfinite's TypeError.
            if not is_real(v):
                raise ValueError(f"FurnaceParams.{f.name}={v!r}: must be a number, not a {type(v).__name__}")
            if not math.isfinite(v):
                raise ValueError(f"FurnaceParams.{f.name}={v!r}: must be finite")
        for name, (lo, hi) in PARAM_RANGES.items():
            v = getattr(self, name)
            if not lo <= v <= hi:
                raise ValueError(f"FurnaceParams.{name}={v!r}: outside the physically meaningful range [{lo}, {hi}]")
        positive = ("lhv", "afr", "cp_fg", "heat_capacity", "fuel_max", "air_max", "tau_fuel",
                    "tau_air", "rate_fuel", "rate_air", "tau_tc", "tau_o2", "tau_co", "co_width",
                    "dt", "fire_ref", "rich_trip_time")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"FurnaceParams.{name}={getattr(self, name)!r}: must be > 0")
        if int(self.n_substeps) != self.n_substeps or self.n_substeps < 1:
            raise ValueError(f"FurnaceParams.n_substeps={self.n_substeps!r}: must be an integer >= 1")
        if self.o2_delay < 0 or self.co_delay < 0:
            raise ValueError("FurnaceParams.o2_delay and co_delay must be >= 0 s")

    @property
    def h(self) -> float:
        """Sub-step length, s."""
        return self.dt / self.n_substeps

    def delay_len(self, delay: float) -> int:
        """Ring-buffer length that realises a dead time of ``delay`` seconds at the sub-step."""
        return int(round(delay / self.h)) + 1

    def to_array(self) -> np.ndarray:
        """Pack the fields in declaration order, the layout the kernel reads."""
        return np.array([float(getattr(self, f.name)) for f in dataclasses.fields(self)])

    @classmethod
    def from_array(cls, a: np.ndarray) -> FurnaceParams:
        """Unpack :meth:`to_array`'s layout (validated like any other construction)."""
        fields = dataclasses.fields(cls)
        if np.shape(a) != (len(fields),):
            raise ValueError(f"FurnaceParams.from_array: shape {np.shape(a)}; expected ({len(fields)},)")
        return cls(**{f.name: int(v) if f.name == "n_substeps" else float(v)
                      for f, v in zip(fields, np.asarray(a).tolist(), strict=True)})


#: Fields of :class:`FurnaceParams` that fix the layout of a batch's state or the meaning of its
#: actions and observations: the control step and its sub-steps (the clock of every schedule), the
#: analyser dead times (the lengths of the ring buffers) and the full-scale flows (the action
#: scaling and the observation bounds). They cannot change on a built batch or within an
#: episode; every other field can (:meth:`FurnaceSim.set_params`, ``Scenario.plant``).
STRUCTURAL_FIELDS = ("dt", "n_substeps", "o2_delay", "co_delay", "fuel_max", "air_max")

# Field positions in ``FurnaceParams.to_array()``; numba reads IntEnum members as constants.
_I = enum.IntEnum("_I", [(f.name, i) for i, f in enumerate(dataclasses.fields(FurnaceParams))])
_CO_SLICE = slice(_I.co_base, _I.co_max + 1)


@numba.njit(cache=True, error_model="numpy")
def flue_o2(excess_air):
    """Dry flue-gas O2 in % from excess-air fraction ``EA = lambda - 1`` (clamped at 0 below stoichiometric).

    Scalars (compiled by numba).
    """
    ea = max(excess_air, 0.0)
    return 100.0 * 2.0 * ea / (8.52 + 9.52 * ea)


@numba.njit(cache=True, error_model="numpy")
def co_ppm(lam, fire_fraction, p_co_base, p_co_amp, p_knee, p_slope, p_fire_ref, p_width, p_rich, p_max):
    """Burner CO in ppm (dry, undiluted) from the burner's air ratio ``lam`` and the firing fraction.

    ``CO = co_base + amp * exp(-(O2 - knee) / width)`` with ``knee`` rising at low fire, plus
    ``co_rich * (1 - lam)`` when fuel-rich; capped at ``co_max``. Scalars (compiled by numba); the
    ``p_*`` arguments are the :class:`FurnaceParams` CO fields, in that order (no defaults here: the
    plant's values are written once, in :class:`FurnaceParams`).
    """
    o2 = flue_o2(lam - 1.0)
    knee = p_knee + p_slope * (p_fire_ref - fire_fraction)
    x = (knee - o2) / p_width
    if x > 50.0:
        x = 50.0
    co = p_co_base + p_co_amp * _exp(x)
    if lam < 1.0:
        co += p_rich * (1.0 - lam)
    if co > p_max:
        co = p_max
    return co


_cost_terms_nb = numba.njit(cache=True)(cost_terms)


@numba.njit(cache=True, error_model="numpy")
def _lag(x, target, decay):
    """Exact first-order lag towards a held ``target``; ``decay = exp(-h / tau)`` over the sub-step."""
    return target + (x - target) * decay


# Rows of the kernel's per-block scratch: structure of arrays, one row per quantity and one
# column per furnace of the block, so that the loop over a block's furnaces compiles to SIMD code.
# Every compiled function on that loop's path uses error_model="numpy": with numba's default
# (Python) model each division carries a ZeroDivisionError exit, and a loop with exits is not
# vectorised (166 instead of 65 ns per furnace-step).
_S_FCMD, _S_ACMD, _S_Q, _S_LEAK, _S_LOAD, _S_T, _S_TC, _S_FUEL, _S_AIR, _S_O2M, _S_COM, _S_RICH, \
    _S_TRIP, _S_LAM, _S_O2, _S_CO, _S_HEAT = range(17)
_N_SCRATCH = 17
#: Furnaces per block of the kernel (a block's scratch, 17 x 64 doubles, stays in L1 cache).
BLOCK = 64


def _step_batch_py(state, o2_buf, co_buf, k0, cmd, dist, p, w, obs, report, cost, tripped):
    """Advance every furnace by one control step (compiled by numba below).

    state [N, 7], o2_buf [N, L_o2], co_buf [N, L_co], k0: global sub-step counter at entry,
    cmd [N, 2] in [-1, 1], dist [N, 4] = (setpoint, load, fuel quality, leak), p: params,
    w: cost weights. Writes obs [N, 8] (noise-free measurements), report [N, 16] (columns
    REPORT_NAMES: the hidden quantities, the disturbances in force, the cost terms), the
    cost [N] and tripped [N] (0 = no trip, 1 = over-temperature, 2 = flame safeguard).

    Furnaces go in blocks of :data:`BLOCK`: a block's state is copied into a scratch array
    with one row per quantity, each sub-step is one loop over the block without branches
    or early exits (the compiler turns it into SIMD code, eight furnaces per instruction
    with AVX-512), and the results are copied back.
    """
    n = state.shape[0]
    lhv = p[_I.lhv]
    afr = p[_I.afr]
    cp = p[_I.cp_fg]
    t_amb = p[_I.t_amb]
    ua = p[_I.ua]
    cap = p[_I.heat_capacity]
    fuel_max = p[_I.fuel_max]
    air_max = p[_I.air_max]
    nsub = int(p[_I.n_substeps])
    h = p[_I.dt] / nsub
    t_max = p[_I.t_max]
    rich_trip = p[_I.rich_trip_time]
    # Everything that does not depend on the furnace is computed once per call, not per
    # sub-step: the decays of the exact first-order lags, the rate limits per sub-step, the
    # CO curve's parameters.
    e_f = math.exp(-h / p[_I.tau_fuel])
    e_a = math.exp(-h / p[_I.tau_air])
    e_tc = math.exp(-h / p[_I.tau_tc])
    e_o2 = math.exp(-h / p[_I.tau_o2])
    e_co = math.exp(-h / p[_I.tau_co])
    lim_f = p[_I.rate_fuel] * h
    lim_a = p[_I.rate_air] * h
    co_base = p[_I.co_base]
    co_amp = p[_I.co_knee_amp]
    o2_knee = p[_I.o2_knee]
    knee_slope = p[_I.knee_slope]
    fire_ref = p[_I.fire_ref]
    co_width = p[_I.co_width]
    co_rich = p[_I.co_rich]
    co_max = p[_I.co_max]
    w_track, track_scale, w_fuel, fuel_ref, w_co, co_limit, w_o2, o2_min = (
        w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7])
    l_o2 = o2_buf.shape[1]
    l_co = co_buf.shape[1]
    # The ring buffers' write positions at entry; every furnace shares the sub-step counter,
    # and stepping them by one with a wrap avoids two integer divisions per buffer and sub-step.
    j_o2_0 = k0 % l_o2
    j_co_0 = k0 % l_co
    bs = max(1, min(n, BLOCK))
    s = np.empty((_N_SCRATCH, bs))
    fcmd, acmd, qq, lk, ld = s[_S_FCMD], s[_S_ACMD], s[_S_Q], s[_S_LEAK], s[_S_LOAD]
    tt, tcc, ff, aa, o2mm, comm = s[_S_T], s[_S_TC], s[_S_FUEL], s[_S_AIR], s[_S_O2M], s[_S_COM]
    rr, trp, lm, o2t, cot, ht = s[_S_RICH], s[_S_TRIP], s[_S_LAM], s[_S_O2], s[_S_CO], s[_S_HEAT]
    for i0 in range(0, n, bs):
        m = min(bs, n - i0)
        for b in range(m):
            i = i0 + b
            fcmd[b] = 0.5 * (cmd[i, 0] + 1.0) * fuel_max
            acmd[b] = 0.5 * (cmd[i, 1] + 1.0) * air_max
            ld[b] = dist[i, 1]
            qq[b] = dist[i, 2]
            lk[b] = dist[i, 3]
            tt[b] = state[i, _T]
            tcc[b] = state[i, _TC]
            ff[b] = state[i, _FUEL]
            aa[b] = state[i, _AIR]
            o2mm[b] = state[i, _O2M]
            comm[b] = state[i, _COM]
            rr[b] = state[i, _RICH]
            trp[b] = 0.0
        j_o2 = j_o2_0
        j_co = j_co_0
        for _ in range(nsub):
            # Every value is loaded before any condition: a load inside a branch keeps the
            # compiler from turning the branch into a select, and so from vectorising.
            for b in range(m):
                fuel = ff[b]
                air = aa[b]
                q = qq[b]
                leak = lk[b]
                rich = rr[b]
                trip = trp[b]
                # Actuators: exact first-order lag, then the rate limit.
                df = _lag(fuel, fcmd[b], e_f) - fuel
                df = min(max(df, -lim_f), lim_f)
                fuel = fuel + df
                da = _lag(air, acmd[b], e_a) - air
                da = min(max(da, -lim_a), lim_a)
                air = air + da
                # Combustion at the burner (fuel quality scales heating value and air demand).
                demand = afr * q * max(fuel, 1e-9)
                lam = air / demand
                eta = min(lam, 1.0)
                co_burner = co_ppm(lam, fuel / fuel_max, co_base, co_amp, o2_knee, knee_slope,
                                   fire_ref, co_width, co_rich, co_max)
                # The analyser sees tramp air too: more O2 and diluted CO.
                flow = fuel + air + leak
                o2t[b] = flue_o2((air + leak) / demand - 1.0)
                cot[b] = co_burner * (fuel + air) / flow
                # Energy balance, exact for flows held over the sub-step.
                heat = eta * fuel * q * lhv
                k = flow * cp + ua
                t_ss = t_amb + (heat - ld[b]) / k
                temp = t_ss + (tt[b] - t_ss) * _exp(-k * h / cap)
                tcc[b] = _lag(tcc[b], temp, e_tc)
                rich = rich + h if lam < 1.0 else 0.0
                if temp > t_max:
                    trip = 1.0
                elif rich >= rich_trip:
                    trip = 2.0
                ff[b] = fuel
                aa[b] = air
                tt[b] = temp
                rr[b] = rich
                trp[b] = trip
                lm[b] = lam
                ht[b] = heat
            # Analysers: dead time (ring buffers sharing one sub-step counter), then a lag.
            j_o2_next = j_o2 + 1 if j_o2 + 1 < l_o2 else 0
            j_co_next = j_co + 1 if j_co + 1 < l_co else 0
            for b in range(m):
                o2_buf[i0 + b, j_o2] = o2t[b]
                co_buf[i0 + b, j_co] = cot[b]
                o2mm[b] = _lag(o2mm[b], o2_buf[i0 + b, j_o2_next], e_o2)
                comm[b] = _lag(comm[b], co_buf[i0 + b, j_co_next], e_co)
            j_o2 = j_o2_next
            j_co = j_co_next
        for b in range(m):
            i = i0 + b
            temp, tc, fuel, air, o2m, com = tt[b], tcc[b], ff[b], aa[b], o2mm[b], comm[b]
            sp = dist[i, 0]
            state[i, _T] = temp
            state[i, _TC] = tc
            state[i, _FUEL] = fuel
            state[i, _AIR] = air
            state[i, _O2M] = o2m
            state[i, _COM] = com
            state[i, _RICH] = rr[b]
            fuel_kg_h = fuel * 3600.0
            obs[i, 0] = tc
            obs[i, 1] = sp
            obs[i, 2] = o2m
            obs[i, 3] = com
            obs[i, 4] = fuel_kg_h
            obs[i, 5] = air * 3600.0
            obs[i, 6] = cmd[i, 0]
            obs[i, 7] = cmd[i, 1]
            report[i, 0] = temp
            report[i, 1] = fuel
            report[i, 2] = air
            report[i, 3] = lm[b]
            report[i, 4] = o2t[b]
            report[i, 5] = cot[b]
            report[i, 6] = ht[b]
            # Stack loss is only reported, so it is evaluated once, for the final sub-step.
            report[i, 7] = (fuel + air + lk[b]) * cp * (temp - t_amb)
            # The disturbances in force during this step ride along (the env reports them).
            for j in range(_N_DIST):
                report[i, _R_DIST + j] = dist[i, j]
            terms = _cost_terms_nb(tc, sp, o2m, com, fuel_kg_h, w_track, track_scale, w_fuel, fuel_ref,
                                   w_co, co_limit, w_o2, o2_min)
            for j in range(4):
                report[i, _R_TERMS + j] = terms[j]
            cost[i] = terms[0] + terms[1] + terms[2] + terms[3]
            tripped[i] = int(trp[b])


# nogil: a batch is split into contiguous row blocks run on a small thread pool. (numba's
# prange version of this kernel did not scale past one core here; separate threads do.)
step_kernel = numba.njit(cache=True, nogil=True, error_model="numpy")(_step_batch_py)
step_kernel.__doc__ = """The compiled serial kernel (see :func:`_step_batch_py`), also callable from numba code:
the single env fuses validation, physics and measurement around it into one call per step."""
@numba.njit(cache=True, nogil=True)
def _step_rows(a, b, state, o2_buf, co_buf, k0, cmd, dist, p, w, obs, report, cost, tripped):
    """:func:`step_kernel` on rows ``a:b`` (sliced here: a dozen slices in Python cost microseconds)."""
    step_kernel(state[a:b], o2_buf[a:b], co_buf[a:b], k0, cmd[a:b], dist[a:b], p, w, obs[a:b], report[a:b],
                cost[a:b], tripped[a:b])


#: Batches at least this large are split across threads (:func:`~furnace_env.row_threads.run_row_chunks`).
PARALLEL_THRESHOLD = 2 * CHUNK_ROWS


def step_batch(state, o2_buf, co_buf, k0, cmd, dist, p, w, obs, report, cost, tripped) -> None:
    """Advance ``N`` furnaces by one control step in place (see :func:`_step_batch_py`).

    Every array is indexed by furnace along axis 0, so a block of rows is an independent
    sub-problem: batches of :data:`PARALLEL_THRESHOLD` furnaces or more are cut into blocks
    that a small thread pool steps (:func:`~furnace_env.row_threads.run_row_chunks`).
    """
    n = state.shape[0]
    if n < PARALLEL_THRESHOLD or N_THREADS == 1:
        step_kernel(state, o2_buf, co_buf, k0, cmd, dist, p, w, obs, report, cost, tripped)
        return
    run_row_chunks(_step_rows, n, state, o2_buf, co_buf, k0, cmd, dist, p, w, obs, report, cost, tripped)


def steady_state_fuel(params: FurnaceParams, temperature, load, fuel_quality, leak, lam):
    """Fuel flow (kg/s) that holds ``temperature`` at burner air ratio ``lam >= 1`` (array-friendly)."""
    t_rise = np.asarray(temperature) - params.t_amb
    # q*lhv*f = load + ((1 + afr*q*lam) f + leak) cp dT + ua dT  ->  solve for f.
    q = np.asarray(fuel_quality)
    denom = q * params.lhv - (1.0 + params.afr * q * lam) * params.cp_fg * t_rise
    return (load + (leak * params.cp_fg + params.ua) * t_rise) / denom


class FurnaceSim:
    """State of ``N`` furnaces and the buffers the kernel needs; a thin holder, no physics."""

    def __init__(self, n: int, params: FurnaceParams, weights: CostWeights) -> None:
        self.n = int(n)
        self.params = params
        self.weights = weights
        self.p = params.to_array()
        self.w = weights.to_array()
        self.state = np.zeros((self.n, _N_STATE))
        self.o2_buf = np.zeros((self.n, params.delay_len(params.o2_delay)))
        self.co_buf = np.zeros((self.n, params.delay_len(params.co_delay)))
        self.k = 0
        self.obs = np.zeros((self.n, N_OBS))
        # One row per furnace holds everything ``info`` reports, so the env reads it in one call:
        # hidden quantities (INFO_NAMES), disturbances in force (DIST_NAMES), cost terms.
        self.report = np.zeros((self.n, len(REPORT_NAMES)))
        self.cost = np.zeros(self.n)
        self.tripped = np.zeros(self.n, dtype=np.int64)

    # Views of ``report`` are made on demand rather than stored: stored views would come back
    # from a pickle as separate copies, and the kernel would then no longer write ``report``.
    @property
    def info(self) -> np.ndarray:
        """Hidden quantities [N, len(INFO_NAMES)] of the last step (a view of ``report``)."""
        return self.report[:, : len(INFO_NAMES)]

    @property
    def terms(self) -> np.ndarray:
        """Cost terms [N, len(TERM_NAMES)] of the last step (a view of ``report``)."""
        return self.report[:, len(INFO_NAMES) + len(DIST_NAMES):]

    def set_params(self, params: FurnaceParams) -> None:
        """Make ``params`` the plant every furnace of this batch is stepped with from now on.

        The state stays as it is. Only fields that leave the buffers' layout alone may differ
        from the construction-time plant (the control step, the sub-steps and the analyser dead
        times size the state; see :data:`STRUCTURAL_FIELDS`); a change of those raises ``ValueError``.
        """
        changed = [f for f in STRUCTURAL_FIELDS if getattr(params, f) != getattr(self.params, f)]
        if changed:
            raise ValueError(f"FurnaceSim.set_params: {changed} differ from the batch's construction "
                             f"({[getattr(self.params, f) for f in changed]}); these fields "
                             f"{list(STRUCTURAL_FIELDS)} cannot change on a built batch")
        self.params = params
        self.p[:] = params.to_array()

    def reset_rows(self, rows, dist: np.ndarray, lam0: np.ndarray, cmd_out: np.ndarray,
                   params: FurnaceParams | None = None) -> None:
        """Put furnaces ``rows`` at steady state on their setpoint at burner air ratio ``lam0``.

        ``dist`` [len(rows), 4] are their current exogenous inputs; the matching commands
        (in [-1, 1]) are written to ``cmd_out`` [len(rows), 2]. ``params`` is the plant whose
        steady state is taken (default: the batch's own, ``self.params``).
        """
        pr = self.params if params is None else params
        sp, load, q, leak = dist[:, 0], dist[:, 1], dist[:, 2], dist[:, 3]
        fuel = steady_state_fuel(pr, sp, load, q, leak, lam0)
        fuel = np.clip(fuel, 0.0, pr.fuel_max)
        air = np.clip(lam0 * pr.afr * q * fuel, 0.0, pr.air_max)
        lam = air / (pr.afr * q * np.maximum(fuel, 1e-9))
        ea = (air + leak) / (pr.afr * q * np.maximum(fuel, 1e-9)) - 1.0
        o2 = np.array([flue_o2(x) for x in ea])
        p_co = pr.to_array()[_CO_SLICE]
        co = np.array([co_ppm(la, f / pr.fuel_max, *p_co) for la, f in zip(lam, fuel, strict=True)])
        co = co * (fuel + air) / (fuel + air + leak)
        st = self.state
        st[rows, _T] = sp
        st[rows, _TC] = sp
        st[rows, _FUEL] = fuel
        st[rows, _AIR] = air
        st[rows, _O2M] = o2
        st[rows, _COM] = co
        st[rows, _RICH] = 0.0
        self.o2_buf[rows] = o2[:, None]
        self.co_buf[rows] = co[:, None]
        cmd_out[:, 0] = 2.0 * fuel / pr.fuel_max - 1.0
        cmd_out[:, 1] = 2.0 * air / pr.air_max - 1.0
        self.report[rows] = np.stack(
            [sp, fuel, air, lam, o2, co, np.minimum(lam, 1.0) * fuel * q * pr.lhv,
             (fuel + air + leak) * pr.cp_fg * (sp - pr.t_amb), sp, load, q, leak,
             *np.zeros((4, len(sp)))], axis=1
        )
        self.obs[rows] = np.stack(
            [sp, sp, o2, co, fuel * 3600.0, air * 3600.0, cmd_out[:, 0], cmd_out[:, 1]], axis=1
        )

    def step(self, cmd: np.ndarray, dist: np.ndarray) -> None:
        """Advance all furnaces by one control step; results in ``obs``, ``info``, ``cost``, ``tripped``."""
        # Small batches call the kernel directly: a single env steps at tens of kHz.
        run = step_kernel if self.n < PARALLEL_THRESHOLD else step_batch
        run(self.state, self.o2_buf, self.co_buf, self.k, cmd, dist, self.p, self.w, self.obs, self.report,
            self.cost, self.tripped)
        self.k += self.params.n_substeps
