"""A run-time trust monitor for model-based control, and the supervisor that falls back to PI.

As an industrial advanced-control layer falls back to base control when its model no longer
fits the plant, :class:`TrustSupervisedController` wraps any model-based controller (same
``predict``/``reset`` interface) and hands the plant to the PI controller while the world model
is not trusted, and back when trust returns:

* :class:`TrustMonitor` filters the real trajectory through the world model (its own copy of the
  filter, independent of the controller it watches) and keeps, per step, the energy of the
  filtered state and the ``kstep`` innovation: the error of the model's ``kstep``-step open-loop
  prediction of the observation just received, made from the filtered state ``kstep`` steps ago
  with the actions applied since (one-step errors are dominated by sensor noise; a plant whose
  dynamics differ shows as a drift over a few steps). Each is averaged over the last ``window``
  steps and standardised with statistics from in-distribution validation data; the trust score
  is one of them or their mean (``TrustConfig.score``).
* :func:`calibrate` runs the monitor over in-distribution validation episodes and sets the alarm
  threshold at the lowest level whose alarms (with the hysteresis) stay within the false-alarm
  target there; :class:`TrustCalibration` stores it as JSON beside the checkpoint.
* :class:`Hysteresis`: the alarm is raised after ``raise_steps`` consecutive steps above the
  threshold and cleared after ``release_steps`` consecutive steps below the (lower) release level.
* The hand-over is bumpless: PI's integrators start from the action last applied
  (:meth:`~furnace_env.pi.PIController.handover`); the model-based controller keeps filtering the plant
  while PI holds it (``track``, when it has one) and resumes from the action PI last applied.

Alarms are logged under ``planner/trust`` (console and the controller's :meth:`stats`), and
:meth:`TrustSupervisedController.episode_extras` gives the steps PI held control for the episode record.
"""

from __future__ import annotations

import dataclasses
import json
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eblnn_agent.data import TransitionData
from eblnn_agent.negatives import prediction_error
from furnace_env.control import Controller, one_plant_observation
from furnace_env.physics import FurnaceParams
from furnace_env.pi import PIController
from furnace_env.scenarios import get_scenario
from furnace_env.vector import FurnaceVectorEnv

__all__ = ["TrustConfig", "TrustCalibration", "TrustMonitor", "Hysteresis", "calibrate", "calibration_scores",
           "TrustSupervisedController", "make_supervised_planner", "SCORES", "pi_episodes", "calibrate_checkpoint",
           "default_calibration_path", "CALIBRATION_SEED0"]

#: The trust scores: the window energy, the window k-step innovation, or the mean of both (standardised).
SCORES = ("energy", "innovation", "combined")


@dataclass(frozen=True)
class TrustConfig:
    """Settings of the trust monitor and its alarm."""

    score: str = "energy"
    """Which standardised window statistic is the trust score: "energy", "innovation" or "combined"
    (their mean)."""
    window: int = 20
    """Steps averaged into the window statistics (100 s at the 5 s step)."""
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
    """Consecutive steps below the release level that clear it."""

    def __post_init__(self) -> None:
        if self.score not in SCORES:
            raise ValueError(f"TrustConfig.score={self.score!r}; allowed: {SCORES}")
        for name in ("window", "kstep", "raise_steps", "release_steps"):
            v = getattr(self, name)
            if not (isinstance(v, int) and v >= 1):
                raise ValueError(f"TrustConfig.{name}={v!r} must be an integer >= 1")
        if not (isinstance(self.burn_in, int) and self.burn_in >= 0):
            raise ValueError(f"TrustConfig.burn_in={self.burn_in!r} must be an integer >= 0")
        if not 0.0 < self.false_alarm_target < 0.5:
            raise ValueError(f"TrustConfig.false_alarm_target={self.false_alarm_target!r} must lie in (0, 0.5)")
        if not 0.5 <= self.release_quantile < 1.0:
            raise ValueError(f"TrustConfig.release_quantile={self.release_quantile!r} must lie in [0.5, 1)")


@dataclass(frozen=True)
class TrustCalibration:
    """The monitor's calibration on in-distribution validation data (stored as JSON)."""

    config: TrustConfig
    """The settings it was calibrated with."""
    energy_mean: float
    """Mean window energy over the validation steps."""
    energy_std: float
    """Its standard deviation."""
    innovation_mean: float
    """Mean window k-step innovation over the validation steps."""
    innovation_std: float
    """Its standard deviation."""
    threshold: float
    """Alarm threshold of the score."""
    release: float
    """Release level of the score (trust returns below it)."""
    false_alarm_share: float
    """Share of validation steps on which the alarm was on (after the burn-in)."""
    n_steps: int
    """Validation steps it was calibrated on."""
    source: str = ""
    """What it was calibrated on (checkpoint, data)."""

    def score(self, energy: np.ndarray, innovation: np.ndarray) -> np.ndarray:
        """The trust score of window statistics (high = less trust)."""
        ze = (np.asarray(energy) - self.energy_mean) / self.energy_std
        zi = (np.asarray(innovation) - self.innovation_mean) / self.innovation_std
        return {"energy": ze, "innovation": zi, "combined": 0.5 * (ze + zi)}[self.config.score]

    def save(self, path: str | Path) -> Path:
        from eblnn_agent.utils import atomic_write

        d = dataclasses.asdict(self)
        d["format"] = "eblnn-trust-calibration"
        return atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(d, indent=2)))

    @classmethod
    def load(cls, path: str | Path) -> TrustCalibration:
        p = Path(path)
        try:
            d = json.loads(p.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"trust calibration {str(p)!r} unreadable ({err}); recalibrate with "
                             f"python evaluate/calibrate_trust.py --checkpoint <best.pt>") from err
        if d.pop("format", None) != "eblnn-trust-calibration":
            raise ValueError(f"{str(p)!r} is not a trust calibration (written by evaluate/calibrate_trust.py)")
        d["config"] = TrustConfig(**d["config"])
        return cls(**d)


def pi_episodes(params: FurnaceParams, seeds: Sequence[int], scenario: str = "train_mix") -> TransitionData:
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
    """Filters real observations of ``N`` plants through the world model; window energy and innovation.

    Call :meth:`update` once per control step with the new observations and the actions applied at
    the previous step (``None`` at the first). The energy at step ``t`` is that of the state that has
    consumed ``(obs_{t-1}, a_{t-1})``.
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
        self._energy: deque = deque(maxlen=self.cfg.window)
        self._innov: deque = deque(maxlen=self.cfg.window)
        self.t = 0

    @torch.no_grad()
    def update(self, obs: np.ndarray, prev_action: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Consume observations ``[N, 8]`` (and the actions ``[N, 2]`` applied before them); returns the
        window means ``(energy [N], innovation [N])`` so far."""
        m = self.model
        o = torch.as_tensor(np.atleast_2d(np.asarray(obs, dtype=np.float64)), dtype=self.dtype, device=self.device)
        if self._h is None:
            self._h = m.initial_state(o.shape[0]).to(self.device, self.dtype)
        else:
            if prev_action is None:
                raise ValueError("update: prev_action is required after the first step of an episode")
            a = torch.as_tensor(np.atleast_2d(np.asarray(prev_action, dtype=np.float64)), dtype=self.dtype,
                                device=self.device)
            if a.shape != (o.shape[0], 2):
                raise ValueError(f"prev_action of shape {tuple(a.shape)}; expected ({o.shape[0]}, 2)")
            obs_s, h_s, _ = self._hist[-1]
            self._hist[-1] = (obs_s, h_s, a)
            self._h = m.step(self._last_obs, a, self._h)
            self._energy.append(m.energy(self._h))
            if len(self._hist) == self.cfg.kstep:
                o0, h0, _ = self._hist[0]
                acts = torch.stack([x[2] for x in self._hist], dim=1)
                pred = m.rollout(o0, h0, acts).obs[:, -1]
                self._innov.append(prediction_error(m, pred, o))
        self._hist.append((o, self._h, None))
        self._last_obs = o
        self.t += 1
        n = o.shape[0]
        e = torch.stack(list(self._energy)).mean(0) if self._energy else o.new_zeros(n)
        i = torch.stack(list(self._innov)).mean(0) if self._innov else o.new_zeros(n)
        return e.cpu().numpy().astype(np.float64), i.cpu().numpy().astype(np.float64)


class Hysteresis:
    """Alarm state of ``N`` rows: raised after ``raise_steps`` steps above ``threshold`` (once ``t >=
    burn_in``), cleared after ``release_steps`` steps below ``release``."""

    def __init__(self, n: int, threshold: float, release: float, raise_steps: int, release_steps: int,
                 burn_in: int) -> None:
        if release > threshold:
            raise ValueError(f"release level {release!r} must not exceed the threshold {threshold!r}")
        self.threshold, self.release = float(threshold), float(release)
        self.raise_steps, self.release_steps, self.burn_in = int(raise_steps), int(release_steps), int(burn_in)
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
        self.on = np.where(self.on, self._below < self.release_steps, self._above >= self.raise_steps)
        self.t += 1
        return self.on.copy()


def calibration_scores(model, data: TransitionData, config: TrustConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Window energy and innovation ``[E, T]`` of every step of ``data``'s episodes (the monitor run
    over all episodes at once), and the mask of valid steps past the burn-in."""
    mon = TrustMonitor(model, config)
    e_n, t_n = data.actions.shape[:2]
    energy, innov = np.zeros((e_n, t_n)), np.zeros((e_n, t_n))
    for t in range(t_n):
        e, i = mon.update(data.obs[:, t], data.actions[:, t - 1] if t > 0 else None)
        energy[:, t], innov[:, t] = e, i
    mask = (np.arange(t_n)[None] < data.lengths[:, None]) & (np.arange(t_n)[None] >= config.burn_in)
    return energy, innov, mask


def calibrate(model, data: TransitionData, config: TrustConfig | None = None, source: str = "") -> TrustCalibration:
    """Calibrate the monitor on in-distribution episodes ``data`` (e.g. the world model's validation split)."""
    cfg = config if config is not None else TrustConfig()
    energy, innov, mask = calibration_scores(model, data, cfg)
    if mask.sum() < 10:
        raise ValueError(f"calibrate: only {int(mask.sum())} valid steps past the burn-in ({cfg.burn_in}); "
                         f"give longer or more episodes")
    e, i = energy[mask], innov[mask]
    stats = dict(energy_mean=float(e.mean()), energy_std=float(max(e.std(), 1e-6)),
                 innovation_mean=float(i.mean()), innovation_std=float(max(i.std(), 1e-6)))
    probe = TrustCalibration(cfg, **stats, threshold=0.0, release=0.0, false_alarm_share=0.0, n_steps=0)
    scores = probe.score(energy, innov)
    rel_q = float(np.quantile(scores[mask], cfg.release_quantile))

    def alarm_share(thr: float) -> float:
        hyst = Hysteresis(scores.shape[0], thr, min(rel_q, thr), cfg.raise_steps, cfg.release_steps, cfg.burn_in)
        on = np.stack([hyst.step(scores[:, t]) for t in range(scores.shape[1])], axis=1)
        return float(on[mask].mean())

    # The lowest candidate level (quantiles of the validation score, then beyond its maximum) within the target.
    levels = [*np.quantile(scores[mask], np.linspace(0.9, 1.0, 201)), float(scores[mask].max()) + 1e-6]
    thr = next(lv for lv in levels if alarm_share(lv) <= cfg.false_alarm_target)
    return dataclasses.replace(probe, threshold=float(thr), release=float(min(rel_q, thr)),
                               false_alarm_share=alarm_share(thr), n_steps=int(mask.sum()), source=source)


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
        c = self.cal.config
        self.alarm = Hysteresis(1, self.cal.threshold, self.cal.release, c.raise_steps, c.release_steps, c.burn_in)
        self._last_action: np.ndarray | None = None
        self.held: list[bool] = []
        self.scores: list[float] = []
        self.alarms = 0

    def act(self, obs: np.ndarray) -> np.ndarray:
        obs = one_plant_observation(obs, "TrustSupervisedController")[None]
        e, i = self.monitor.update(obs, self._last_action)
        score = float(self.cal.score(e, i)[0])
        was = bool(self.alarm.on[0])
        on = bool(self.alarm.step(np.array([score]))[0])
        step = len(self.held)
        if on and not was:
            self.alarms += 1
            if self._last_action is not None:
                self.pi.handover(obs, self._last_action)
            self._say(f"planner/trust: alarm at step {step} (score {score:.2f} > {self.cal.threshold:.2f}); PI holds control")
        elif was and not on:
            self._say(f"planner/trust: trust returned at step {step} (score {score:.2f}); model-based control resumes")
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


def default_calibration_path(checkpoint: str | Path) -> Path:
    """Where the calibration of a checkpoint is stored: ``trust_calibration.json`` beside it."""
    return Path(checkpoint).with_name("trust_calibration.json")


#: First env seed of the calibration episodes (disjoint from training, tuning and evaluation seeds).
CALIBRATION_SEED0 = 40_000


def calibrate_checkpoint(checkpoint: str | Path, config: TrustConfig | None = None, episodes: int = 32,
                         scenario: str = "train_mix", log: Callable[[str], None] | None = print) -> TrustCalibration:
    """Calibrate on in-distribution validation episodes: the base controller (PI) on the nominal plant
    over the training scenario mix, ``episodes`` env seeds from :data:`CALIBRATION_SEED0`; store the
    result beside the checkpoint. (The world model's own validation split mixes in random-action
    episodes, far from closed-loop operation, which would set the threshold too high to detect anything.)"""
    from eblnn_agent.checkpoint import load_checkpoint

    model, _, _ = load_checkpoint(Path(checkpoint), device="cpu")
    model.eval()
    data = pi_episodes(FurnaceParams(), range(CALIBRATION_SEED0, CALIBRATION_SEED0 + episodes), scenario)
    cal = calibrate(model, data, config, source=f"{checkpoint}: PI on the nominal plant, {scenario}, "
                                              f"{episodes} seeds from {CALIBRATION_SEED0}")
    cal.save(default_calibration_path(checkpoint))
    if log is not None:
        log(f"trust calibration: threshold {cal.threshold:.3f}, release {cal.release:.3f}, "
            f"{cal.false_alarm_share:.2%} of {cal.n_steps} validation steps alarmed -> {default_calibration_path(checkpoint)}")
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
    cal = TrustCalibration.load(cal_path)
    inner = make_eblnn_planner(env, checkpoint, **planner_kwargs)
    model, _, _ = load_checkpoint(Path(checkpoint), device="cpu")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return TrustSupervisedController(inner, TrustMonitor(model, cal.config), cal, make_pi(env),
                                     log=print if log else None)
