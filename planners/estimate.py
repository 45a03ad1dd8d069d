"""A state estimate to start imagined rollouts from, instead of the raw noisy reading.

A planner that starts its rollouts from the measurement plans on the sensor noise: a 1 K
temperature spike looks like a real move, and the plan moves the valves to answer it. The
estimate here is the world model's one-step prediction corrected by a fraction of the
innovation, per measured channel,

    x_hat_t = x_pred_t + K * (y_t - x_pred_t),    x_pred_t = f(x_hat_{t-1}, h_t, a_{t-1}),

the steady-state form of a Kalman filter (a constant gain, as in an alpha filter) on a
local-level model of each channel: the model's one-step error on a true state is the process
noise ``q``, the instrument noise (:func:`furnace_env.env.measurement_noise_std`) the
measurement noise ``r``, and ``K`` the steady-state Kalman gain of that pair
(:func:`steady_state_gain`; Simon, *Optimal State Estimation*, 2006, sec. 7.3). ``K = 1`` is
the raw reading; smaller ``K`` trusts the model more.

``q`` is read off the model's one-step error on held-out episodes (:func:`estimate_gains`):
on noisy data that error is ``q`` plus the noise of the target plus the noise of the input the
prediction starts from, ``mse ~ q + 2 r`` for a channel whose next value is close to its
current one, so ``q = max(mse - 2 r, q_min)``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from furnace_env.env import measurement_noise_std

__all__ = ["ESTIMATED_CHANNELS", "steady_state_gain", "gains_from_errors", "EstimatorGains", "estimate_gains",
           "corrected_estimate", "gain_vector", "validate_gains"]

#: Observation channels the estimator filters (temperature, O2, CO, fuel flow, air flow); the
#: setpoint and the previous commands are known exactly and are taken as read.
ESTIMATED_CHANNELS = (0, 2, 3, 4, 5)
#: Smallest process-noise variance, as a fraction of the measurement noise's (keeps the gain
#: away from 0, which would ignore the plant altogether, where the model looks perfect).
Q_MIN_FRACTION = 0.01


def validate_gains(gains, where: str = "state_gain") -> tuple[float, ...]:
    """``gains`` as a tuple of one gain per estimated channel, each in (0, 1]; a clear error otherwise."""
    try:
        g = tuple(float(x) for x in gains)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}={gains!r}: expected {len(ESTIMATED_CHANNELS)} gains in (0, 1] "
                         "(temperature, O2, CO, fuel flow, air flow) or None") from err
    if len(g) != len(ESTIMATED_CHANNELS) or not all(np.isfinite(x) and 0.0 < x <= 1.0 for x in g):
        raise ValueError(f"{where}={gains!r}: expected {len(ESTIMATED_CHANNELS)} gains in (0, 1] "
                         "(temperature, O2, CO, fuel flow, air flow) or None")
    return g


def steady_state_gain(process_var, noise_var) -> np.ndarray:
    """Steady-state Kalman gain of a random walk with process variance ``q`` seen through noise ``r``.

    The Riccati recursion ``P- = P + q``, ``K = P- / (P- + r)``, ``P = (1 - K) P-`` settles at
    ``P- = (q + sqrt(q^2 + 4 q r)) / 2``. Elementwise; ``q > 0``, ``r >= 0`` (``r = 0``: K = 1).
    """
    q, r = np.asarray(process_var, dtype=np.float64), np.asarray(noise_var, dtype=np.float64)
    if np.any(q <= 0) or np.any(r < 0) or not (np.all(np.isfinite(q)) and np.all(np.isfinite(r))):
        raise ValueError(f"process_var={process_var!r} must be finite and > 0, noise_var={noise_var!r} finite and >= 0")
    p = 0.5 * (q + np.sqrt(q * q + 4.0 * q * r))
    return p / (p + r)


def gains_from_errors(one_step_mse, noise_var) -> np.ndarray:
    """Gains per channel from the model's one-step MSE on noisy data and the noise variance (module doc)."""
    mse, r = np.asarray(one_step_mse, dtype=np.float64), np.asarray(noise_var, dtype=np.float64)
    q = np.maximum(mse - 2.0 * r, Q_MIN_FRACTION * r)
    q = np.where(q > 0, q, 1.0)  # a channel without noise: r = 0, gain 1 whatever q is
    return steady_state_gain(q, r)


class EstimatorGains(NamedTuple):
    """Result of :func:`estimate_gains` (per estimated channel, :data:`ESTIMATED_CHANNELS`)."""

    gains: tuple[float, ...]
    """The steady-state gains, for ``ObjectiveConfig.state_gain``."""
    one_step_mse: tuple[float, ...]
    """The model's one-step MSE on the episodes (noisy targets, noisy inputs)."""
    noise_var: tuple[float, ...]
    """Mean sensor-noise variance on the episodes."""


def estimate_gains(model, data, device: str = "cpu") -> EstimatorGains:
    """The estimator's gains for ``model`` from held-out episodes ``data`` (a ``TransitionData``).

    Filters every episode from its start as a controller does, takes the one-step MSE per
    channel and the instruments' noise variance on the same readings, and turns them into gains
    with :func:`gains_from_errors`.
    """
    from eblnn_agent.metrics import one_step_predictions

    one = one_step_predictions(model, data, device)
    ch = list(ESTIMATED_CHANNELS)
    mse = ((one.pred - one.target) ** 2).mean(0)[ch]
    r = (measurement_noise_std(one.target) ** 2).mean(0)[ch]
    k = gains_from_errors(mse, r)
    return EstimatorGains(tuple(float(x) for x in k), tuple(float(x) for x in mse), tuple(float(x) for x in r))


def corrected_estimate(pred: torch.Tensor, obs: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """``pred + gain * (obs - pred)`` on :data:`ESTIMATED_CHANNELS`, ``obs`` on the others (``[..., 8]``).

    ``gain`` is ``[8]`` (1 on the channels taken as read). Clipped at zero, as the readings are.
    """
    return (pred + gain * (obs - pred)).clamp_min(0.0).where(gain < 1.0, obs)


def gain_vector(gains: tuple[float, ...], n_obs: int = 8, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """The per-channel gains as an ``[n_obs]`` tensor, 1 on the channels that are not estimated."""
    g = torch.ones(n_obs, dtype=dtype, device=device)
    g[list(ESTIMATED_CHANNELS)] = torch.as_tensor(gains, dtype=dtype, device=device)
    return g
