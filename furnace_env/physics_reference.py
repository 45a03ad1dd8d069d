"""The furnace's physics as plain numpy: the equations of the env docstring, one line each.

:func:`~furnace_env.physics.step_kernel` computes the same step for speed (a compiled loop
over blocks of furnaces, scratch copies, a hand-written ``exp``); this module says *what*
it computes. It is the reference the kernel is tested against
(``tests/test_physics_reference.py``), and the place to read or change the physics first:
a change here that the kernel does not follow fails that test.

One control step of ``dt`` seconds holds the commands and the disturbances and takes
``n_substeps`` sub-steps of ``h = dt / n_substeps``. On each sub-step, for every furnace:

* actuators: fuel valve and air damper lag their commands (time constants ``tau_fuel``,
  ``tau_air``), the change limited to ``rate * h``;
* burner: air ratio ``lambda = m_a / (afr q m_f)``, combustion efficiency
  ``eta_c = min(1, lambda)``, burner CO from :func:`co_ppm` (the CO curve), flue O2 at the
  analyser from the excess air including tramp air, ``(m_a + m_leak) / (afr q m_f) - 1``,
  and the CO diluted by the tramp air;
* energy balance ``C dT/dt = eta_c m_f q LHV - (m_f + m_a + m_leak) cp (T - T_amb)
  - UA (T - T_amb) - Q_load``, solved exactly for flows held over the sub-step:
  ``T <- T_ss + (T - T_ss) exp(-h k / C)`` with ``k = (m_f + m_a + m_leak) cp + UA`` and the
  steady state ``T_ss = T_amb + (heat - Q_load) / k``;
* thermocouple: a first-order lag (``tau_tc``) on the temperature;
* analysers: a dead time (a ring buffer of ``delay / h + 1`` sub-steps, written then read one
  slot ahead) followed by a first-order lag;
* trips: over-temperature (``T > t_max``) or the flame safeguard (``lambda < 1`` for
  ``rich_trip_time`` seconds in a row); of the sub-steps that trip, the last one names the cause.

The lags are exact for a held target: ``x <- target + (x - target) exp(-h / tau)``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from furnace_env.cost import CostWeights, cost_terms
from furnace_env.physics import FurnaceParams

__all__ = ["ReferenceStep", "flue_o2", "co_ppm", "step_reference"]


class ReferenceStep(NamedTuple):
    """The furnaces after one control step (new arrays; the inputs are left as they were).

    Layouts match :func:`~furnace_env.physics.step_kernel`'s in-place outputs.
    """

    state: np.ndarray
    """[N, 7]: temperature, thermocouple, fuel flow, air flow, measured O2, measured CO, rich time."""
    o2_buf: np.ndarray
    """[N, L_o2]: the O2 analyser's dead-time ring buffer."""
    co_buf: np.ndarray
    """[N, L_co]: the CO analyser's dead-time ring buffer."""
    obs: np.ndarray
    """[N, 8]: noise-free measurements (channels of ``OBS_NAMES``)."""
    report: np.ndarray
    """[N, 16]: hidden quantities, disturbances in force, cost terms (columns of ``REPORT_NAMES``)."""
    cost: np.ndarray
    """[N]: the step cost."""
    tripped: np.ndarray
    """[N] int: 0 no trip, 1 over-temperature, 2 flame safeguard."""


def flue_o2(excess_air):
    """Dry flue-gas O2 in % from the excess-air fraction ``EA = lambda - 1`` (0 below stoichiometric)."""
    ea = np.maximum(excess_air, 0.0)
    return 100.0 * 2.0 * ea / (8.52 + 9.52 * ea)


def co_ppm(lam, fire_fraction, p: FurnaceParams):
    """Burner CO in ppm: ``co_base + amp exp((knee - O2) / width)`` plus ``co_rich (1 - lambda)``
    when fuel-rich, capped at ``co_max``; the knee's O2 rises as the firing fraction drops."""
    o2 = flue_o2(lam - 1.0)
    knee = p.o2_knee + p.knee_slope * (p.fire_ref - fire_fraction)
    # The exponent is capped at 50 so that a closed damper gives a huge, finite CO.
    co = p.co_base + p.co_knee_amp * np.exp(np.minimum((knee - o2) / p.co_width, 50.0))
    co = co + p.co_rich * np.maximum(1.0 - lam, 0.0)
    return np.minimum(co, p.co_max)


def _lag(x, target, tau: float, h: float):
    """Exact first-order lag with time constant ``tau`` towards a ``target`` held for ``h`` seconds."""
    return target + (x - target) * np.exp(-h / tau)


def step_reference(state, o2_buf, co_buf, k0: int, cmd, dist, params: FurnaceParams,
                   weights: CostWeights) -> ReferenceStep:
    """Advance ``N`` furnaces by one control step; the same contract as :func:`~furnace_env.physics.step_kernel`.

    ``state`` [N, 7], ``o2_buf`` [N, L_o2], ``co_buf`` [N, L_co] (see :class:`ReferenceStep`);
    ``k0`` the sub-step counter at entry (it places the ring buffers' write position);
    ``cmd`` [N, 2] valve and damper commands in [-1, 1]; ``dist`` [N, 4] setpoint (degC),
    load (W), fuel quality (-), tramp air (kg/s). Returns new arrays.
    """
    p = params
    h = p.dt / p.n_substeps
    state = np.array(state, dtype=np.float64)
    o2_buf = np.array(o2_buf, dtype=np.float64)
    co_buf = np.array(co_buf, dtype=np.float64)
    cmd = np.asarray(cmd, dtype=np.float64)
    setpoint, load, q, leak = (np.asarray(dist, dtype=np.float64)[:, j] for j in range(4))
    temp, tc, fuel, air, o2_meas, co_meas, rich = (state[:, j].copy() for j in range(7))
    fuel_cmd = 0.5 * (cmd[:, 0] + 1.0) * p.fuel_max
    air_cmd = 0.5 * (cmd[:, 1] + 1.0) * p.air_max
    trip = np.zeros(len(state), dtype=np.int64)
    for sub in range(p.n_substeps):
        # Actuators: a first-order lag, then the rate limit.
        fuel = fuel + np.clip(_lag(fuel, fuel_cmd, p.tau_fuel, h) - fuel, -p.rate_fuel * h, p.rate_fuel * h)
        air = air + np.clip(_lag(air, air_cmd, p.tau_air, h) - air, -p.rate_air * h, p.rate_air * h)
        # Burner (fuel quality q scales both the heating value and the air demand).
        demand = p.afr * q * np.maximum(fuel, 1e-9)
        lam = air / demand
        eta = np.minimum(lam, 1.0)
        co_burner = co_ppm(lam, fuel / p.fuel_max, p)
        # At the analysers: tramp air adds O2 and dilutes the CO.
        flow = fuel + air + leak
        o2_true = flue_o2((air + leak) / demand - 1.0)
        co_true = co_burner * (fuel + air) / flow
        # Energy balance, exact for the flows held over the sub-step.
        heat = eta * fuel * q * p.lhv
        k = flow * p.cp_fg + p.ua
        t_ss = p.t_amb + (heat - load) / k
        temp = t_ss + (temp - t_ss) * np.exp(-k * h / p.heat_capacity)
        tc = _lag(tc, temp, p.tau_tc, h)
        # Trips: the flame safeguard counts continuous fuel-rich time.
        rich = np.where(lam < 1.0, rich + h, 0.0)
        trip = np.where(temp > p.t_max, 1, np.where(rich >= p.rich_trip_time, 2, trip))
        # Analysers: dead time, then a lag. The buffer slot written now is read back
        # len - 1 sub-steps later (the slot after it holds the oldest value).
        j_o2, j_co = (k0 + sub) % o2_buf.shape[1], (k0 + sub) % co_buf.shape[1]
        o2_buf[:, j_o2] = o2_true
        co_buf[:, j_co] = co_true
        o2_meas = _lag(o2_meas, o2_buf[:, (j_o2 + 1) % o2_buf.shape[1]], p.tau_o2, h)
        co_meas = _lag(co_meas, co_buf[:, (j_co + 1) % co_buf.shape[1]], p.tau_co, h)
    new_state = np.stack([temp, tc, fuel, air, o2_meas, co_meas, rich], axis=1)
    obs = np.stack([tc, setpoint, o2_meas, co_meas, fuel * 3600.0, air * 3600.0, cmd[:, 0], cmd[:, 1]], axis=1)
    terms = cost_terms(tc, setpoint, o2_meas, co_meas, fuel * 3600.0, *weights.to_array())
    stack_loss = (fuel + air + leak) * p.cp_fg * (temp - p.t_amb)
    report = np.stack([temp, fuel, air, lam, o2_true, co_true, heat, stack_loss,
                       setpoint, load, q, leak, *terms], axis=1)
    return ReferenceStep(new_state, o2_buf, co_buf, obs, report, terms[0] + terms[1] + terms[2] + terms[3], trip)
