"""A run-time trust monitor for model-based control, and the supervisor that falls back to PI.

As an industrial advanced-control layer falls back to base control when its model no longer
fits the plant, :class:`TrustSupervisedController` wraps any model-based controller (same
``predict``/``reset`` interface) and hands the plant to the PI controller while the world model
is not trusted, and back when trust returns:

* :class:`TrustMonitor` filters the real trajectory through the world model (its own copy of the
  filter, independent of the controller it watches) and gives, per step, the energy of the
  filtered state and the ``kstep`` innovation: the per-channel error of the model's ``kstep``-step
  open-loop prediction of the observation just received, made from the filtered state ``kstep``
  steps ago with the actions applied since (one-step errors are dominated by sensor noise; a
  plant whose dynamics differ shows as a drift over a few steps).
* :class:`TrustCalibration` standardises them with statistics of in-distribution validation
  episodes (the innovation as a normalised innovation squared: each channel's squared error over
  its validation mean, averaged over the channels) into a per-step trust score
  (``TrustConfig.score``), clipped against single outliers; a :class:`Detector` turns the scores
  into the alarm statistic (a window mean, or a CUSUM for a quicker reaction to a sustained shift).
* :func:`calibrate` sets the alarm threshold at the lowest level whose alarms (with the hysteresis)
  stay within the false-alarm target on the validation episodes (PI's or the planner's own closed
  loop on the training mix, ``TrustConfig.calibrate_on``); the calibration is stored as JSON
  beside the checkpoint.
* :class:`Hysteresis`: the alarm is raised after ``raise_steps`` consecutive steps above the
  threshold and cleared after ``release_steps`` consecutive steps below the (lower) release level
  (growing by ``release_growth`` with each further alarm of the episode).
* The hand-over is bumpless: PI's integrators start from the action last applied
  (:meth:`~furnace_env.pi.PIController.handover`); the model-based controller keeps filtering the plant
  while PI holds it (``track``, when it has one) and resumes from the action PI last applied.

Alarms are logged under ``planner/trust`` (console and the controller's :meth:`stats`), and
:meth:`TrustSupervisedController.episode_extras` gives the steps PI held control for the episode record.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eblnn_agent.data import TransitionData
from eblnn_agent.negatives import MEASURED_CHANNELS, channel_errors
from furnace_env.control import Controller, one_plant_observation
from furnace_env.env import validate_action, validate_observation
from furnace_env.physics import FurnaceParams, is_real
from furnace_env.pi import PIController
from furnace_env.scenarios import Scenario, get_scenario
from furnace_env.vector import FurnaceVectorEnv

__all__ = ["TrustConfig", "TrustCalibration", "TrustMonitor", "Detector", "Hysteresis", "calibrate", "raw_stats",
           "alarms", "alarm_history", "step_mask", "detection_delays", "episodes_data", "channel_errors",
           "TrustSupervisedController", "make_supervised_planner", "SCORES", "DETECTORS", "CALIBRATION_SOURCES",
           "pi_episodes", "planner_runs", "calibration_data", "calibration_scenarios", "concat_data",
           "CALIBRATION_MIXES", "calibrate_checkpoint", "default_calibration_path", "load_calibration_for",
           "CALIBRATION_SEED0", "CALIBRATION_EPISODES", "FORMAT"]

#: The trust scores: the per-step energy, the per-step k-step innovation, or the mean of both (standardised).
SCORES = ("energy", "innovation", "combined")
#: How the per-step standardised score becomes the alarm statistic: a moving window mean, or Page's CUSUM.
DETECTORS = ("window", "cusum")
#: What the alarm threshold is calibrated on: the PI controller's or the supervised planner's own closed loop.
CALIBRATION_SOURCES = ("pi", "planner")
#: Which scenarios the calibration episodes come from (:func:`calibration_scenarios`).
CALIBRATION_MIXES = ("train_mix", "presets")


@dataclass(frozen=True)
class TrustConfig:
    """Settings of the trust monitor and its alarm (defaults chosen on the tune family: docs/energy_trust.md)."""

    score: str = "combined"
    """Which standardised per-step statistic is the trust score: "energy" (of the filtered state),
    "innovation" (the k-step normalised innovation squared) or "combined" (their mean)."""
    detector: str = "window"
    """"window": the mean of the score over the last ``window`` steps; "cusum": Page's cumulative sum
    ``S_t = max(0, S_{t-1} + z_t - cusum_drift)``, which reacts to a sustained shift faster at the same
    false-alarm rate (Page 1954; the standard change detector of fault monitoring)."""
    window: int = 20
    """Steps averaged by the window detector (100 s at the 5 s step)."""
    cusum_drift: float = 0.5
    """The CUSUM's allowance ``k`` in standardised units: shifts smaller than about ``2 k`` are ignored."""
    clip: float = 4.0
    """Each standardised per-step score is clipped to ``[-clip, clip]`` so that one outlier (a CO spike)
    cannot raise an alarm alone."""
    kstep: int = 5
    """Horizon of the innovation, steps: the model's prediction of the current observation made this
    many steps ago with the actions applied since."""
    burn_in: int = 20
    """Steps after a reset during which no alarm is raised (the filter's start-up transient)."""
    false_alarm_target: float = 0.005
    """The alarm threshold is the lowest score level at which the alarm (with its hysteresis) is on for
    at most this share of the in-distribution validation steps (the false-alarm budget is 1 %; half
    of it is kept as a margin for episodes the calibration did not see)."""
    release_quantile: float = 0.9
    """Trust returns below this quantile of the validation score (hysteresis: lower than the threshold)."""
    raise_steps: int = 3
    """Consecutive steps above the threshold that raise the alarm."""
    release_steps: int = 12
    """Consecutive steps below the release level that clear the first alarm of an episode."""
    release_growth: float = 2.0
    """Each further alarm of an episode needs this many times the previous alarm's release steps to
    clear (a back-off against handing the plant back and forth: under PI the model may look right
    again while the plant is still the changed one; an engineering choice, not tuned: docs/energy_trust.md)."""
    calibrate_on: str = "planner"
    """Who drives the calibration episodes: "pi" (the base controller) or "planner" (the supervised
    planner's own closed loop: the operating points it will be judged at)."""
    calibration_mix: str = "presets"
    """Which in-distribution scenarios the calibration episodes come from: "train_mix" (the training
    mix: random programmes, disturbances and plants, including extreme ones) or "presets" (the tune
    family's five named presets, each with plants drawn from the training range)."""

    def __post_init__(self) -> None:
        for name, allowed in (("score", SCORES), ("detector", DETECTORS), ("calibrate_on", CALIBRATION_SOURCES),
                              ("calibration_mix", CALIBRATION_MIXES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"TrustConfig.{name}={getattr(self, name)!r}; allowed: {allowed}")
        for name in ("window", "kstep", "raise_steps", "release_steps"):
            v = getattr(self, name)
            if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
                raise ValueError(f"TrustConfig.{name}={v!r} must be an integer >= 1")
        if not (isinstance(self.burn_in, int) and not isinstance(self.burn_in, bool) and self.burn_in >= 0):
            raise ValueError(f"TrustConfig.burn_in={self.burn_in!r} must be an integer >= 0")
        for name, lo, hi in (("cusum_drift", 0.0, 10.0), ("clip", 0.5, 100.0), ("release_growth", 1.0, 100.0)):
            v = getattr(self, name)
            if not (is_real(v) and math.isfinite(v) and lo <= v <= hi):
                raise ValueError(f"TrustConfig.{name}={v!r} must be a number in [{lo}, {hi}]")
        # The type first: a string from a hand-edited calibration file would otherwise fail the
        # comparison with a TypeError that names neither the field nor the allowed range.
        if not (is_real(self.false_alarm_target) and 0.0 < self.false_alarm_target < 0.5):
            raise ValueError(f"TrustConfig.false_alarm_target={self.false_alarm_target!r} must lie in (0, 0.5)")
        if not (is_real(self.release_quantile) and 0.5 <= self.release_quantile < 1.0):
            raise ValueError(f"TrustConfig.release_quantile={self.release_quantile!r} must lie in [0.5, 1)")


@dataclass(frozen=True)
class TrustCalibration:
    """The monitor's calibration on in-distribution validation data (stored as JSON)."""

    config: TrustConfig
    """The settings it was calibrated with."""
    energy_mean: float
    """Mean per-step energy over the validation steps."""
    energy_std: float
    """Its standard deviation."""
    channel_scale: tuple[float, ...]
    """Mean squared k-step error of each measured channel (:data:`MEASURED_CHANNELS`, in one-step
    delta standard deviations) over the validation steps: the innovation's normalisation."""
    innovation_mean: float
    """Mean per-step normalised innovation squared over the validation steps."""
    innovation_std: float
    """Its standard deviation."""
    threshold: float
    """Alarm threshold of the detector's statistic."""
    release: float
    """Release level of the statistic (trust returns below it)."""
    false_alarm_share: float
    """Share of validation steps on which the alarm was on (after the burn-in)."""
    n_steps: int
    """Validation steps it was calibrated on."""
    source: str = ""
    """What it was calibrated on (checkpoint, data)."""
    checkpoint_sha256: str = ""
    """Content digest of the world model it was calibrated for (the checkpoint's ``sha256``, see
    :mod:`eblnn_agent.checkpoint`); a supervised planner refuses another model. Empty: not recorded
    (files written before the field; :func:`calibrate_checkpoint` always records it)."""

    def __post_init__(self) -> None:
        if not isinstance(self.config, TrustConfig):
            raise ValueError(f"TrustCalibration.config={self.config!r} must be a TrustConfig")
        for name in ("energy_mean", "energy_std", "innovation_mean", "innovation_std", "threshold", "release",
                     "false_alarm_share"):
            v = getattr(self, name)
            if not (is_real(v) and math.isfinite(v)):
                raise ValueError(f"TrustCalibration.{name}={v!r} must be a finite number")
        for name in ("energy_std", "innovation_std"):
            if getattr(self, name) <= 0:
                raise ValueError(f"TrustCalibration.{name}={getattr(self, name)!r} must be > 0")
        if self.release > self.threshold:
            raise ValueError(f"TrustCalibration.release={self.release!r} must not exceed threshold={self.threshold!r}")
        if not (isinstance(self.n_steps, int) and not isinstance(self.n_steps, bool) and self.n_steps >= 0):
            raise ValueError(f"TrustCalibration.n_steps={self.n_steps!r} must be an integer >= 0")
        if not 0.0 <= self.false_alarm_share <= 1.0:
            raise ValueError(f"TrustCalibration.false_alarm_share={self.false_alarm_share!r} must lie in [0, 1]")
        for name in ("source", "checkpoint_sha256"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"TrustCalibration.{name}={getattr(self, name)!r} must be a string")
        scale = tuple(self.channel_scale) if isinstance(self.channel_scale, list | tuple) else ()
        if len(scale) != len(MEASURED_CHANNELS) or not all(is_real(v) and math.isfinite(v) and v > 0 for v in scale):
            raise ValueError(f"TrustCalibration.channel_scale={self.channel_scale!r} must be "
                             f"{len(MEASURED_CHANNELS)} positive numbers")
        object.__setattr__(self, "channel_scale", tuple(float(v) for v in scale))

    def score(self, energy: np.ndarray, innovation: np.ndarray) -> np.ndarray:
        """The standardised, clipped per-step trust score (high = less trust) of per-step energies
        ``[...]`` and squared per-channel innovations ``[..., C]`` (NaN where not yet available: 0)."""
        ze = np.nan_to_num((np.asarray(energy, dtype=np.float64) - self.energy_mean) / self.energy_std, nan=0.0)
        q = (np.asarray(innovation, dtype=np.float64) / np.asarray(self.channel_scale)).mean(-1)
        zi = np.nan_to_num((q - self.innovation_mean) / self.innovation_std, nan=0.0)
        z = {"energy": ze, "innovation": zi, "combined": 0.5 * (ze + zi)}[self.config.score]
        return np.clip(z, -self.config.clip, self.config.clip)

    def statistic(self, energy: np.ndarray, innovation: np.ndarray) -> np.ndarray:
        """The detector's statistic ``[E, T]`` of whole episodes' per-step values (``[E, T]``, ``[E, T, C]``)."""
        z = self.score(energy, innovation)
        det = Detector(z.shape[0], self.config)
        return np.stack([det.step(z[:, t]) for t in range(z.shape[1])], axis=1)

    def hysteresis(self, n: int) -> Hysteresis:
        """A fresh alarm state for ``n`` plants with this calibration's levels."""
        c = self.config
        return Hysteresis(n, self.threshold, self.release, c.raise_steps, c.release_steps, c.burn_in,
                          release_growth=c.release_growth)

    def save(self, path: str | Path) -> Path:
        from eblnn_agent.utils import atomic_write

        d = dataclasses.asdict(self)
        d["channel_scale"] = list(self.channel_scale)
        d["format"] = FORMAT
        return atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(d, indent=2)))

    @classmethod
    def load(cls, path: str | Path) -> TrustCalibration:
        p = Path(path)
        try:
            d = json.loads(p.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"trust calibration {str(p)!r} unreadable ({err}); recalibrate with "
                             f"python evaluate/calibrate_trust.py --checkpoint <best.pt>") from err
        fmt = d.pop("format", None) if isinstance(d, dict) else None
        if fmt != FORMAT:
            old = " (an older format: recalibrate with python evaluate/calibrate_trust.py)" if fmt else ""
            raise ValueError(f"{str(p)!r} is not a trust calibration of format {FORMAT!r}{old}")
        try:
            d["config"] = TrustConfig(**d["config"])
            d["channel_scale"] = tuple(d["channel_scale"])
            return cls(**d)
        except (TypeError, KeyError, ValueError) as err:
            raise ValueError(f"trust calibration {str(p)!r} has bad fields ({err}); recalibrate with "
                             f"python evaluate/calibrate_trust.py --checkpoint <best.pt>") from err


#: The calibration file's format tag (version 2: per-channel innovations, detectors).
FORMAT = "eblnn-trust-calibration-2"


def pi_episodes(params: FurnaceParams, seeds: Sequence[int], scenario: Any = "train_mix") -> TransitionData:
    """Episodes of the tuned PI controller (no noise) on plant ``params``, one per env seed."""
    scen = get_scenario(scenario)
    n, horizon = len(seeds), scen.n_steps
    env = FurnaceVectorEnv(num_envs=n, scenario=scen, params=params)
    obs, _ = env.reset(seed=[int(s) for s in seeds])
    pi = PIController(params=params)
    obs_all = np.zeros((n, horizon + 1, 8), dtype=np.float32)
    act_all = np.zeros((n, horizon, 2), dtype=np.float32)
    lengths = np.zeros(n, dtype=np.int64)
    alive = np.ones(n, dtype=bool)
    obs_all[:, 0] = obs
    for k in range(horizon):
        a = pi.act(obs.astype(np.float64))
        obs, _, term, trunc, _ = env.step(a)
        rows = np.flatnonzero(alive)
        act_all[rows, k], obs_all[rows, k + 1] = a[rows], obs[rows]
        lengths[rows] += 1
        alive &= ~(term | trunc)
        if not alive.any():
            break
    env.close()
    for e in np.flatnonzero(lengths < horizon):
        obs_all[e, lengths[e] + 1:] = obs_all[e, lengths[e]]
    return TransitionData(obs_all, act_all, lengths, np.zeros(n, dtype=np.int8), {"controller": "pi"})



class TrustMonitor:
    """Filters real observations of ``N`` plants through the world model; per-step energy and innovation.

    Call :meth:`update` once per control step with the new observations and the actions applied at
    the previous step (``None`` at the first). The energy at step ``t`` is that of the state that has
    consumed ``(obs_{t-1}, a_{t-1})``; the innovation at step ``t`` is the squared error, per measured
    channel (:data:`MEASURED_CHANNELS`, in one-step delta standard deviations), of the model's
    ``kstep``-step open-loop prediction of ``obs_t`` (NaN for the first ``kstep`` steps).
    """

    def __init__(self, model, config: TrustConfig | None = None) -> None:
        self.model = model
        self.cfg = config if config is not None else TrustConfig()
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.reset()

    def reset(self) -> None:
        self._h: torch.Tensor | None = None
        self._last_obs: torch.Tensor | None = None
        self._hist: deque = deque(maxlen=self.cfg.kstep)  # (obs_s, h_s, a_s) for the last kstep steps
        self.t = 0

    @torch.no_grad()
    def update(self, obs: np.ndarray, prev_action: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Consume observations ``[N, 8]`` (and the actions ``[N, 2]`` applied before them); returns this
        step's ``(energy [N], innovation [N, C])``."""
        m = self.model
        # Everything is checked before the filter moves: a wrong-width or non-finite reading (or a
        # change of batch size mid-episode) would otherwise enter the state and break every later step.
        o_np = validate_observation(obs, obs_dim=m.obs_dim)[0]
        n = o_np.shape[0]
        if self._h is not None:
            if n != self._h.shape[0]:
                raise ValueError(f"update: {n} observations, but this episode follows {self._h.shape[0]} plants "
                                 "(reset() starts an episode with another number)")
            if prev_action is None:
                raise ValueError("update: prev_action is required after the first step of an episode")
            a_np = validate_action(np.atleast_2d(prev_action), n)
        o = torch.as_tensor(o_np, dtype=self.dtype, device=self.device)
        energy = o.new_full((n,), float("nan"))
        innov = o.new_full((n, len(MEASURED_CHANNELS)), float("nan"))
        if self._h is None:
            h = m.initial_state(n).to(self.device, self.dtype)
            hist = list(self._hist)
        else:
            a = torch.as_tensor(a_np, dtype=self.dtype, device=self.device)
            obs_s, h_s, _ = self._hist[-1]
            hist = [*list(self._hist)[:-1], (obs_s, h_s, a)]
            h = m.step(self._last_obs, a, self._h)
            energy = m.energy(h)
            if len(hist) == self.cfg.kstep:
                o0, h0, _ = hist[0]
                acts = torch.stack([x[2] for x in hist], dim=1)
                innov = channel_errors(m, m.rollout(o0, h0, acts).obs[:, -1], o).pow(2)
        # Committed only when finite: a reading beyond the model's float range (1e300 degC) would
        # otherwise leave a NaN state whose NaN scores count as neutral, i.e. as trust, for the rest
        # of the episode.
        finite = bool(torch.isfinite(o).all() and torch.isfinite(h).all())
        if not (finite and (self._h is None or bool(torch.isfinite(energy).all()))):
            raise ValueError(f"update: the monitor's filtered state turned non-finite on observation "
                             f"{o_np.tolist()}; the monitor is left as it was (check the observation's scale)")
        self._hist.clear()
        self._hist.extend(hist)
        self._hist.append((o, h, None))
        self._h = h
        self._last_obs = o
        self.t += 1
        return energy.cpu().numpy().astype(np.float64), innov.cpu().numpy().astype(np.float64)


class Detector:
    """The alarm statistic of ``N`` plants from their per-step scores: a window mean or a CUSUM."""

    def __init__(self, n: int, config: TrustConfig) -> None:
        self.cfg = config
        self._window: deque = deque(maxlen=config.window)
        self._cusum = np.zeros(n)

    def step(self, z: np.ndarray) -> np.ndarray:
        """Advance one step with standardised scores ``[N]``; returns the statistic ``[N]``."""
        z = np.asarray(z, dtype=np.float64)
        if self.cfg.detector == "cusum":
            self._cusum = np.maximum(0.0, self._cusum + z - self.cfg.cusum_drift)
            return self._cusum.copy()
        self._window.append(z)
        return np.mean(self._window, axis=0)


class Hysteresis:
    """Alarm state of ``N`` rows: raised after ``raise_steps`` steps above ``threshold`` (once ``t >=
    burn_in``), cleared after ``release_steps`` steps below ``release``; each further alarm of a row
    needs ``release_growth`` times as many steps to clear as its previous one."""

    def __init__(self, n: int, threshold: float, release: float, raise_steps: int, release_steps: int,
                 burn_in: int, release_growth: float = 1.0) -> None:
        if release > threshold:
            raise ValueError(f"release level {release!r} must not exceed the threshold {threshold!r}")
        self.threshold, self.release = float(threshold), float(release)
        self.raise_steps, self.burn_in = int(raise_steps), int(burn_in)
        self.release_growth = float(release_growth)
        self.release_needed = np.full(n, float(release_steps))
        self.on = np.zeros(n, dtype=bool)
        self._above = np.zeros(n, dtype=int)
        self._below = np.zeros(n, dtype=int)
        self.t = 0

    def step(self, score: np.ndarray) -> np.ndarray:
        """Advance one step with scores ``[N]``; returns the alarm state ``[N]``."""
        s = np.asarray(score, dtype=np.float64)
        armed = self.t >= self.burn_in
        self._above = np.where(armed & (s > self.threshold), self._above + 1, 0)
        self._below = np.where(s < self.release, self._below + 1, 0)
        cleared = self.on & (self._below >= self.release_needed)
        self.release_needed = np.where(cleared, self.release_needed * self.release_growth, self.release_needed)
        self.on = np.where(self.on, ~cleared, self._above >= self.raise_steps)
        self.t += 1
        return self.on.copy()


def raw_stats(model, data: TransitionData, config: TrustConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-step energy ``[E, T]`` and squared channel innovations ``[E, T, C]`` of every step of
    ``data``'s episodes (the monitor run over all episodes at once), and the mask of valid steps past
    the burn-in."""
    mon = TrustMonitor(model, config)
    e_n, t_n = data.actions.shape[:2]
    energy, innov = np.zeros((e_n, t_n)), np.zeros((e_n, t_n, len(MEASURED_CHANNELS)))
    for t in range(t_n):
        energy[:, t], innov[:, t] = mon.update(data.obs[:, t], data.actions[:, t - 1] if t > 0 else None)
    return energy, innov, step_mask(data, config)


def step_mask(data: TransitionData, config: TrustConfig) -> np.ndarray:
    """The steps ``[E, T]`` of ``data``'s episodes on which an alarm counts: inside each episode and
    past the burn-in (and past the first step, which has no energy yet)."""
    t = np.arange(data.actions.shape[1])[None]
    return (t < data.lengths[:, None]) & (t >= max(config.burn_in, 1))


def calibrate(model, data: TransitionData, config: TrustConfig | None = None, source: str = "",
              stats: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> TrustCalibration:
    """Calibrate the monitor on in-distribution episodes ``data`` (see :func:`calibrate_checkpoint`);
    ``stats``: their :func:`raw_stats` with this ``kstep`` and ``burn_in``, when already computed."""
    cfg = config if config is not None else TrustConfig()
    energy, innov, mask = stats if stats is not None else raw_stats(model, data, cfg)
    have_innov = mask & np.isfinite(innov).all(-1)
    if have_innov.sum() < 10:
        raise ValueError(f"calibrate: only {int(have_innov.sum())} valid steps past the burn-in ({cfg.burn_in}) "
                         f"and the innovation horizon ({cfg.kstep}); give longer or more episodes")
    scale = np.maximum(innov[have_innov].mean(0), 1e-9)
    q = (innov / scale).mean(-1)[have_innov]
    e = energy[mask]
    probe = TrustCalibration(cfg, energy_mean=float(e.mean()), energy_std=float(max(e.std(), 1e-6)),
                             channel_scale=tuple(float(v) for v in scale), innovation_mean=float(q.mean()),
                             innovation_std=float(max(q.std(), 1e-6)), threshold=0.0, release=0.0,
                             false_alarm_share=0.0, n_steps=0)
    stat = probe.statistic(energy, innov)
    rel_q = float(np.quantile(stat[mask], cfg.release_quantile))

    def alarm_share(thr: float) -> float:
        cal = dataclasses.replace(probe, threshold=thr, release=min(rel_q, thr))
        return float(alarms(cal, stat)[mask].mean())

    # The lowest candidate level (quantiles of the validation statistic, then beyond its maximum) within the target.
    levels = [*np.quantile(stat[mask], np.linspace(0.9, 1.0, 201)), float(stat[mask].max()) + 1e-6]
    thr = next(lv for lv in levels if alarm_share(lv) <= cfg.false_alarm_target)
    return dataclasses.replace(probe, threshold=float(thr), release=float(min(rel_q, thr)),
                               false_alarm_share=alarm_share(thr), n_steps=int(mask.sum()), source=source)


def alarms(calibration: TrustCalibration, statistic: np.ndarray) -> np.ndarray:
    """The alarm state ``[E, T]`` of whole episodes' detector statistics ``[E, T]`` (with the hysteresis)."""
    h = calibration.hysteresis(statistic.shape[0])
    return np.stack([h.step(statistic[:, t]) for t in range(statistic.shape[1])], axis=1)


def alarm_history(model, calibration: TrustCalibration, data: TransitionData,
                  stats: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Replay the monitor over recorded episodes: the alarm state ``[E, T]`` at every step (False past
    an episode's end and in the burn-in). The alarm of a supervised run is this replay of its own
    record up to the first alarm; after it, PI's actions change the trajectory. ``stats``: as for
    :func:`calibrate`."""
    energy, innov, mask = stats if stats is not None else raw_stats(model, data, calibration.config)
    return alarms(calibration, calibration.statistic(energy, innov)) & mask


def detection_delays(alarm: np.ndarray, change_step: int) -> list[int | None]:
    """Per episode (rows of ``alarm [E, T]``), the steps from ``change_step`` to the first alarm at or
    after it (None: never alarmed after it)."""
    out: list[int | None] = []
    for row in np.asarray(alarm, dtype=bool):
        hits = np.flatnonzero(row[change_step:])
        out.append(int(hits[0]) if hits.size else None)
    return out


def episodes_data(episodes: Sequence[Any]) -> TransitionData:
    """Recorded closed-loop episodes (:class:`~planners.evaluation.Episode`: what the controller saw and
    did) as :class:`TransitionData`, padded to the longest (:func:`concat_data`)."""
    if not episodes:
        raise ValueError("episodes_data: no episodes")
    return concat_data([TransitionData(np.asarray(ep.obs, dtype=np.float32)[None],
                                       np.asarray(ep.actions, dtype=np.float32)[None],
                                       np.array([len(ep.actions)], dtype=np.int64), np.zeros(1, dtype=np.int8),
                                       {"controller": "closed loop"}) for ep in episodes])


class TrustSupervisedController(Controller):
    """A model-based controller supervised by a :class:`TrustMonitor`, with PI as the fallback (see module doc).

    Args:
        inner: the model-based controller (one plant); ``track(obs, action)`` is used while PI holds
            control when it has one (:class:`~planners.mpc.MPCController` does), else its ``act`` is
            called and its action discarded.
        monitor: the trust monitor on the world model.
        calibration: threshold, release level and standardisation of the score.
        fallback: the PI controller that takes over.
        log: where alarm messages go (``print``; None for silence).
    """

    def __init__(self, inner: Controller, monitor: TrustMonitor, calibration: TrustCalibration,
                 fallback: PIController, log: Callable[[str], None] | None = print,
                 name: str = "eblnn-supervised") -> None:
        for method in ("act", "reset"):
            if not callable(getattr(inner, method, None)):
                raise ValueError(f"inner controller {type(inner).__name__} has no {method}()")
        self.inner, self.monitor, self.cal, self.pi = inner, monitor, calibration, fallback
        self.log = log
        self.name = name
        self.reset()

    def reset(self) -> None:
        self.inner.reset()
        self.monitor.reset()
        self.pi.reset()
        self.detector = Detector(1, self.cal.config)
        self.alarm = self.cal.hysteresis(1)
        self._last_action: np.ndarray | None = None
        self.held: list[bool] = []
        self.scores: list[float] = []
        self.alarms = 0

    def act(self, obs: np.ndarray) -> np.ndarray:
        # The model's width, checked here: the monitor and the inner planner both keep state.
        obs = one_plant_observation(obs, "TrustSupervisedController", obs_dim=self.monitor.model.obs_dim)[None]
        # The inner planner refuses some observations only after the monitor has consumed them (its own
        # state left as it was): undo this step's monitor, detector, alarm and PI moves then too.
        saved = _attributes((self, self.monitor, self.detector, self.alarm, self.pi))
        try:
            e, i = self.monitor.update(obs, self._last_action)
            score = float(self.detector.step(self.cal.score(e, i))[0])
            was = bool(self.alarm.on[0])
            on = bool(self.alarm.step(np.array([score]))[0])
            if on and not was:
                self.alarms += 1
                if self._last_action is not None:
                    self.pi.handover(obs, self._last_action)
            if on:
                action = self.pi.act(obs)
                track = getattr(self.inner, "track", None)
                if callable(track):
                    track(obs[0], action[0])
                else:
                    self.inner.act(obs)
            else:
                action = self.inner.act(obs)
            action = np.clip(np.asarray(action, dtype=np.float64).reshape(1, 2), -1.0, 1.0)
        except BaseException:
            for obj, attrs in saved:
                vars(obj).update(attrs)
            raise
        step = len(self.held)
        if on and not was:
            self._say(f"planner/trust: alarm at step {step} (score {score:.2f} > {self.cal.threshold:.2f}); PI holds control")
        elif was and not on:
            self._say(f"planner/trust: trust returned at step {step} (score {score:.2f}); model-based control resumes")
        self._last_action = action
        self.held.append(on)
        self.scores.append(score)
        return action.astype(np.float32)

    def _say(self, msg: str) -> None:
        if self.log is not None:
            self.log(msg)

    def stats(self) -> dict[str, Any]:
        """Supervision figures of the episode so far (``planner/trust...``), plus the inner controller's."""
        inner = self.inner.stats() if callable(getattr(self.inner, "stats", None)) else {}
        held = np.asarray(self.held, dtype=bool)
        return {**inner, "planner/trust_alarms": float(self.alarms),
                "planner/trust_held_share": float(held.mean()) if held.size else 0.0}

    def episode_extras(self) -> dict[str, Any]:
        """For the episode record: which steps PI held control, the score per step, the alarm count."""
        return {"trust_held": np.asarray(self.held, dtype=bool), "trust_score": np.asarray(self.scores),
                "trust_alarms": self.alarms}


def _attributes(objs) -> list[tuple[Any, dict[str, Any]]]:
    """``(object, attributes)`` records to undo a step that failed half-way. Shallow: the monitor, the
    detector, the hysteresis and PI replace their arrays and tensors at each step; the deques they
    append to (the monitor's history, the window) are copied."""
    return [(o, {k: copy.copy(v) if isinstance(v, deque) else v for k, v in vars(o).items()}) for o in objs]


def default_calibration_path(checkpoint: str | Path) -> Path:
    """Where the calibration of a checkpoint is stored: ``trust_calibration.json`` beside it."""
    return Path(checkpoint).with_name("trust_calibration.json")


#: First env seed of the calibration episodes (disjoint from training, tuning and evaluation seeds).
CALIBRATION_SEED0 = 40_000
#: Calibration episodes per checkpoint (split evenly over the calibration's scenarios: 3 per preset, about
#: 3 300 validation steps past the burn-in; with ``calibrate_on="planner"`` one MPC episode each).
CALIBRATION_EPISODES = 16


def planner_runs(checkpoint: str | Path, scenarios: Sequence[Any], seeds: Sequence[int],
                 planner_options: dict | None = None, workers: int = 2) -> dict[str, TransitionData]:
    """Closed-loop episodes of the (unsupervised) EB-LNN planner on ``checkpoint`` with ``planner_options``,
    one per scenario and env seed, in one pool of ``workers`` processes; by scenario name."""
    from planners.benchmark import ControllerSpec, evaluate_controllers

    spec = ControllerSpec("eblnn", "planners.factories:make_eblnn_planner",
                          {"checkpoint": str(checkpoint), **(planner_options or {})})
    recs = evaluate_controllers([spec], list(scenarios), [int(s) for s in seeds], workers=workers, keep_all=True)
    names = [get_scenario(sc).name for sc in scenarios]
    return {n: episodes_data([r.episode for r in recs if r.scenario == n]) for n in names}


def calibration_scenarios(mix: str) -> list[Scenario]:
    """The in-distribution scenarios of a calibration (``TrustConfig.calibration_mix``)."""
    from furnace_env.scenarios import EVAL_SCENARIOS, SCENARIOS, TRAINING_PLANT

    if mix == "train_mix":
        return [get_scenario("train_mix")]
    if mix == "presets":
        return [dataclasses.replace(SCENARIOS[n], name=f"{n}+plants", plant=TRAINING_PLANT) for n in EVAL_SCENARIOS]
    raise ValueError(f"calibration_mix={mix!r}; allowed: {CALIBRATION_MIXES}")


def calibration_data(checkpoint: str | Path, config: TrustConfig, episodes: int = CALIBRATION_EPISODES,
                     planner_options: dict | None = None, workers: int = 2,
                     scenarios: Sequence[Any] | None = None) -> TransitionData:
    """The calibration's validation episodes: ``episodes`` in all, split evenly over the scenarios of
    ``config.calibration_mix`` (or ``scenarios``), env seeds from :data:`CALIBRATION_SEED0`, driven by
    PI (vectorised) or by the EB-LNN planner on ``checkpoint`` with ``planner_options``
    (``config.calibrate_on``; one MPC episode each, in ``workers`` processes)."""
    scs = [get_scenario(sc) for sc in (scenarios if scenarios is not None else calibration_scenarios(config.calibration_mix))]
    seeds = range(CALIBRATION_SEED0, CALIBRATION_SEED0 + max(1, round(episodes / len(scs))))
    if config.calibrate_on == "planner":
        runs = planner_runs(checkpoint, scs, seeds, planner_options, workers)
        return concat_data([runs[sc.name] for sc in scs])
    return concat_data([pi_episodes(FurnaceParams(), seeds, sc) for sc in scs])


def concat_data(parts: Sequence[TransitionData]) -> TransitionData:
    """Episodes of several :class:`TransitionData` in one, padded to the longest (the last observation repeated)."""
    t_n = max(p.actions.shape[1] for p in parts)

    def pad(x: np.ndarray, t: int) -> np.ndarray:
        return x if x.shape[1] == t else np.concatenate([x, np.repeat(x[:, -1:], t - x.shape[1], axis=1)], axis=1)

    return TransitionData(np.concatenate([pad(p.obs, t_n + 1) for p in parts]),
                          np.concatenate([pad(p.actions, t_n) for p in parts]),
                          np.concatenate([p.lengths for p in parts]), np.concatenate([p.behaviour for p in parts]),
                          {"parts": len(parts)})


def calibrate_checkpoint(checkpoint: str | Path, config: TrustConfig | None = None,
                         episodes: int = CALIBRATION_EPISODES, scenarios: Sequence[Any] | None = None,
                         log: Callable[[str], None] | None = print, planner_options: dict | None = None,
                         workers: int = 2) -> TrustCalibration:
    """Calibrate on in-distribution validation episodes (:func:`calibration_data`) and store the result
    beside the checkpoint. (The world model's own validation split mixes in random-action episodes,
    far from closed-loop operation, which would set the threshold too high to detect anything.)"""
    from eblnn_agent.checkpoint import checkpoint_digest, load_checkpoint

    cfg = config if config is not None else TrustConfig()
    model, _, _ = load_checkpoint(Path(checkpoint), device="cpu")
    model.eval()
    data = calibration_data(checkpoint, cfg, episodes, planner_options, workers, scenarios)
    what = f"the EB-LNN planner ({planner_options or 'defaults'})" if cfg.calibrate_on == "planner" else "PI"
    where = cfg.calibration_mix if scenarios is None else "given scenarios"
    cal = calibrate(model, data, cfg, source=f"{checkpoint}: {what} on {where}, {len(data.lengths)} episodes, "
                                             f"seeds from {CALIBRATION_SEED0}")
    cal = dataclasses.replace(cal, checkpoint_sha256=checkpoint_digest(checkpoint))
    cal.save(default_calibration_path(checkpoint))
    if log is not None:
        log(f"trust calibration: threshold {cal.threshold:.3f}, release {cal.release:.3f}, "
            f"{cal.false_alarm_share:.2%} of {cal.n_steps} validation steps alarmed -> {default_calibration_path(checkpoint)}")
    return cal


def load_calibration_for(checkpoint: str | Path, path: str | Path | None = None) -> TrustCalibration:
    """The calibration at ``path`` (default: beside ``checkpoint``), refused (``ValueError``) when it records
    another world model than ``checkpoint``: one left beside a retrained checkpoint would standardise
    another model's energies, silently."""
    from eblnn_agent.checkpoint import checkpoint_digest

    path = Path(path) if path is not None else default_calibration_path(checkpoint)
    cal = TrustCalibration.load(path)
    digest = checkpoint_digest(checkpoint)
    if cal.checkpoint_sha256 and cal.checkpoint_sha256 != digest:
        raise ValueError(f"trust calibration {str(path)!r} was made for another world model (sha256 "
                         f"{cal.checkpoint_sha256[:12]}..., {str(checkpoint)!r} is {digest[:12]}...); recalibrate "
                         f"with python evaluate/calibrate_trust.py --checkpoint {checkpoint}")
    return cal


def make_supervised_planner(env, checkpoint: str, calibration: str | None = None, log: bool = True,
                            **planner_kwargs: Any) -> TrustSupervisedController:
    """Factory for the comparison harness: the EB-LNN planner (:func:`~planners.factories.make_eblnn_planner`,
    ``planner_kwargs`` go there) supervised by the trust monitor on the same world model, PI as fallback.

    ``calibration``: a stored :class:`TrustCalibration` (default: ``trust_calibration.json`` beside the
    checkpoint, made by ``python evaluate/calibrate_trust.py --checkpoint ...``).
    """
    from eblnn_agent.checkpoint import load_checkpoint
    from furnace_env.pi import make_pi
    from planners.factories import make_eblnn_planner

    cal_path = Path(calibration) if calibration is not None else default_calibration_path(checkpoint)
    if not cal_path.is_file():
        raise FileNotFoundError(f"no trust calibration at {str(cal_path)!r}; make it with "
                                f"python evaluate/calibrate_trust.py --checkpoint {checkpoint}")
    cal = load_calibration_for(checkpoint, cal_path)
    inner = make_eblnn_planner(env, checkpoint, **planner_kwargs)
    model, _, _ = load_checkpoint(Path(checkpoint), device="cpu")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return TrustSupervisedController(inner, TrustMonitor(model, cal.config), cal, make_pi(env),
                                     log=print if log else None)
