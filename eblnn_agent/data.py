"""Transitions from Furnace-v0 for the world model: exploratory collection, storage, split, windows.

Behaviour (chosen per episode, so every split sees both):

* **PI + noise**: the tuned reference PI controller with time-correlated (AR(1)) action
  noise of a random size, i.e. closed-loop operation with excitation;
* **random**: time-correlated random commands that cover the operating range: a firing
  fraction and a burner air ratio ``lambda`` (0.9-1.8) held for random durations, so
  the data reach high and low fire, lean and slightly rich combustion.

Episodes run on the native vector env (one batched physics call for all furnaces) and
end at truncation or at a trip; ``lengths`` gives each episode's valid transitions.
Datasets are saved as ``.npz`` with their provenance and reloaded when it matches.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from eblnn_agent.transforms import obs_to_model
from furnace_env.physics import FurnaceParams
from furnace_env.pi import PIController
from furnace_env.scenarios import get_scenario
from furnace_env.vector import FurnaceVectorEnv

__all__ = [
    "TransitionData",
    "reload_matching",
    "DataSplit",
    "NormStats",
    "Windows",
    "collect_transitions",
    "load_or_collect",
    "scenario_digest",
    "split_episodes",
    "compute_norm_stats",
    "sample_windows",
    "tile_windows",
]

#: Bump when the collection procedure changes: stored datasets with another version are re-collected.
COLLECTOR_VERSION = 1
BEHAVIOURS = ("pi_noise", "random")


@dataclass
class TransitionData:
    """Episodes of real transitions: ``obs [E, T+1, 8]``, ``actions [E, T, 2]``, valid ``lengths [E]``.

    Transition ``k`` of episode ``e`` is ``(obs[e, k], actions[e, k]) -> obs[e, k+1]`` for
    ``k < lengths[e]``; entries beyond are padding (repeats of the last observation).
    """

    obs: np.ndarray
    actions: np.ndarray
    lengths: np.ndarray
    behaviour: np.ndarray
    provenance: dict[str, Any]

    @property
    def n_episodes(self) -> int:
        return int(self.obs.shape[0])

    @property
    def env_steps(self) -> int:
        """Number of real transitions (env steps) these episodes hold."""
        return int(self.lengths.sum())

    def subset(self, idx: np.ndarray) -> TransitionData:
        """The episodes ``idx`` (same provenance)."""
        return TransitionData(self.obs[idx], self.actions[idx], self.lengths[idx], self.behaviour[idx],
                              self.provenance)

    def save(self, path: str | Path) -> Path:
        """Write a compressed ``.npz`` with the provenance as JSON (atomically)."""
        from eblnn_agent.utils import atomic_write

        def write(tmp: str) -> None:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, obs=self.obs, actions=self.actions, lengths=self.lengths,
                                    behaviour=self.behaviour, provenance=json.dumps(self.provenance))

        return atomic_write(path, write)

    @classmethod
    def load(cls, path: str | Path) -> TransitionData:
        """Read a dataset written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as z:
            return cls(z["obs"], z["actions"], z["lengths"], z["behaviour"], json.loads(str(z["provenance"])))


class DataSplit(NamedTuple):
    """Episode-level split."""

    train: TransitionData
    val: TransitionData
    test: TransitionData


class NormStats(NamedTuple):
    """Normalisation statistics (training split only): observations and one-step deltas."""

    obs_mean: np.ndarray
    obs_std: np.ndarray
    delta_mean: np.ndarray
    delta_std: np.ndarray


class Windows(NamedTuple):
    """A batch of windows: ``obs [B, W+1, 8]``, ``actions [B, W, 2]``, ``mask [B, W]`` (valid steps)."""

    obs: torch.Tensor
    actions: torch.Tensor
    mask: torch.Tensor


def _env_version() -> str:
    try:
        return metadata.version("furnace-eblnn")
    except metadata.PackageNotFoundError:
        return "unknown"


def scenario_digest(scenario) -> str:
    """A fingerprint of a scenario's whole definition (not just its name).

    A stored dataset is reused only when it was collected from the same programme: a changed
    preset (e.g. ``train_mix`` gaining a plant range) keeps its name but gets another digest,
    so the data are collected again instead of silently reloaded.
    """
    scen = get_scenario(scenario)
    text = json.dumps(dataclasses.asdict(scen), sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _provenance(n_env_steps: int, seed: int, scenario, num_envs: int, pi_fraction: float) -> dict[str, Any]:
    return {
        "env_id": "Furnace-v0",
        "env_version": _env_version(),
        "collector_version": COLLECTOR_VERSION,
        "scenario": get_scenario(scenario).name,
        "scenario_digest": scenario_digest(scenario),
        "n_env_steps": int(n_env_steps),
        "seed": int(seed),
        "num_envs": int(num_envs),
        "pi_fraction": float(pi_fraction),
        "behaviours": list(BEHAVIOURS),
    }


class _RandomBehaviour:
    """Time-correlated random commands: firing fraction and air ratio held for random durations."""

    def __init__(self, n: int, rng: np.random.Generator, params: FurnaceParams) -> None:
        self.rng = rng
        self.n = n
        self.air_per_fuel = params.afr * params.fuel_max / params.air_max  # stoichiometric, in fractions
        self.fire = rng.uniform(0.1, 0.9, n)
        self.lam = rng.uniform(1.0, 1.6, n)
        self.jitter = np.zeros((n, 2))

    def act(self) -> np.ndarray:
        rng, n = self.rng, self.n
        # New firing target with probability 1/12 per step (mean hold 60 s), air ratio 1/20.
        new_fire = rng.random(n) < 1 / 12
        self.fire = np.where(new_fire, rng.uniform(0.02, 1.0, n), self.fire)
        # Air ratio: mostly lean (1.03-1.8) for ~100 s, sometimes near or just below
        # stoichiometric (where CO rises steeply) for ~15 s, short of the flame safeguard's 20 s.
        near_stoich = self.lam < 1.03
        new_lam = rng.random(n) < np.where(near_stoich, 1 / 3, 1 / 20)
        lam = np.where(rng.random(n) < 0.85, rng.uniform(1.03, 1.8, n), rng.uniform(0.96, 1.03, n))
        self.lam = np.where(new_lam, lam, self.lam)
        # Small relative AR(1) jitter on both commands (correlation ~20 s).
        self.jitter = 0.8 * self.jitter + 0.6 * 0.04 * rng.standard_normal((n, 2))
        fuel = self.fire * (1.0 + self.jitter[:, 0])
        air = self.fire * self.air_per_fuel * self.lam * (1.0 + self.jitter[:, 1])
        return np.stack([2.0 * fuel - 1.0, 2.0 * air - 1.0], axis=1)


def collect_transitions(n_env_steps: int, seed: int, scenario: str = "train_mix", num_envs: int = 64,
                        pi_fraction: float = 0.5, path: str | Path | None = None,
                        progress: bool = False, params: FurnaceParams | None = None) -> TransitionData:
    """Collect ``ceil(n_env_steps / episode_length)`` episodes of exploratory behaviour (see module doc).

    All randomness derives from ``seed`` (``np.random.default_rng`` and the env seeds), so
    the same arguments give the same dataset. Saved to ``path`` when given. ``params``: the
    plant (default: the nominal :class:`~furnace_env.physics.FurnaceParams`).
    """
    if n_env_steps < 1:
        raise ValueError(f"n_env_steps={n_env_steps!r} must be >= 1")
    scen = get_scenario(scenario)
    horizon = scen.n_steps
    n_episodes = max(1, math.ceil(n_env_steps / horizon))
    rng = np.random.default_rng(seed)
    obs_all = np.zeros((n_episodes, horizon + 1, 8), dtype=np.float32)
    act_all = np.zeros((n_episodes, horizon, 2), dtype=np.float32)
    lengths = np.zeros(n_episodes, dtype=np.int64)
    behaviour = np.zeros(n_episodes, dtype=np.int8)
    params = params if params is not None else FurnaceParams()
    rounds = range(0, n_episodes, num_envs)
    if progress:
        from tqdm import tqdm

        rounds = tqdm(rounds, desc="collect", unit="round", leave=False)
    for start in rounds:
        n = min(num_envs, n_episodes - start)
        env = FurnaceVectorEnv(num_envs=n, scenario=scen, params=params)
        env_seeds = [int(s) for s in rng.integers(0, 2**31 - 1, size=n)]
        obs, _ = env.reset(seed=env_seeds)
        is_pi = rng.random(n) < pi_fraction
        pi = PIController(params=params)
        rand = _RandomBehaviour(n, rng, params)
        noise_std = rng.uniform(0.03, 0.3, n)[:, None]
        noise_a = np.exp(-params.dt / rng.uniform(10.0, 60.0, n))[:, None]
        noise = np.zeros((n, 2))
        alive = np.ones(n, dtype=bool)
        sl = slice(start, start + n)
        obs_all[sl, 0] = obs
        behaviour[sl] = np.where(is_pi, 0, 1)
        for k in range(horizon):
            noise = noise_a * noise + np.sqrt(1.0 - noise_a**2) * noise_std * rng.standard_normal((n, 2))
            # Mostly common-mode noise on both commands (a firing change), a third independent.
            a_pi = pi.act(obs.astype(np.float64)) + noise[:, :1] + noise * np.array([0.0, 0.35])
            a = np.clip(np.where(is_pi[:, None], a_pi, rand.act()), -1.0, 1.0).astype(np.float32)
            obs, _, term, trunc, _ = env.step(a)
            rows = np.flatnonzero(alive)
            act_all[start + rows, k] = a[rows]
            obs_all[start + rows, k + 1] = obs[rows]
            lengths[start + rows] += 1
            ended = alive & (term | trunc)
            alive &= ~ended
            if not alive.any():
                break
        env.close()
    # Pad each episode after its end with its last observation (never used as a target).
    for e in np.flatnonzero(lengths < horizon):
        obs_all[e, lengths[e] + 1:] = obs_all[e, lengths[e]]
    data = TransitionData(obs_all, act_all, lengths, behaviour,
                          _provenance(n_env_steps, seed, scen, num_envs, pi_fraction))
    if path is not None:
        data.save(path)
    return data


def reload_matching(path: Path, provenance: dict[str, Any], log=print) -> TransitionData | None:
    """The dataset stored at ``path`` when it exists, reads and has exactly ``provenance``; else None
    (saying why), so that the caller collects it again."""
    if not path.is_file():
        return None
    try:
        data = TransitionData.load(path)
    except (OSError, ValueError, KeyError) as err:
        log(f"dataset {path} unreadable ({err}); collecting again")
        return None
    if data.provenance != provenance:
        log(f"dataset {path} has other provenance; collecting again")
        return None
    log(f"dataset {path}: reloaded {data.n_episodes} episodes, {data.env_steps} transitions")
    return data


def load_or_collect(path: str | Path, n_env_steps: int, seed: int, scenario: str = "train_mix",
                    num_envs: int = 64, pi_fraction: float = 0.5, progress: bool = False,
                    log=print) -> TransitionData:
    """Reload ``path`` when its provenance matches these arguments, else collect and save there."""
    path = Path(path)
    data = reload_matching(path, _provenance(n_env_steps, seed, scenario, num_envs, pi_fraction), log)
    if data is not None:
        return data
    data = collect_transitions(n_env_steps, seed, scenario, num_envs, pi_fraction, path=path, progress=progress)
    log(f"dataset {path}: collected {data.n_episodes} episodes, {data.env_steps} transitions")
    return data


def split_episodes(data: TransitionData, val_fraction: float, test_fraction: float, seed: int) -> DataSplit:
    """Random split by episode (at least one episode in each part)."""
    e = data.n_episodes
    if e < 3:
        raise ValueError(f"need at least 3 episodes to split into train/val/test, got {e}")
    perm = np.random.default_rng(seed).permutation(e)
    n_test = max(1, round(test_fraction * e))
    n_val = max(1, round(val_fraction * e))
    test, val, train = perm[:n_test], perm[n_test:n_test + n_val], perm[n_test + n_val:]
    return DataSplit(data.subset(np.sort(train)), data.subset(np.sort(val)), data.subset(np.sort(test)))


def _valid_mask(data: TransitionData) -> np.ndarray:
    return np.arange(data.actions.shape[1])[None, :] < data.lengths[:, None]


def compute_norm_stats(train: TransitionData, min_std: float = 1e-3, *, co_log_scale: float) -> NormStats:
    """Mean/std of observations and one-step deltas over the valid transitions of the training split.

    In the model's observation space: pass the model's ``ModelConfig.co_log_scale`` (required, so that
    no caller can silently compute linear-CO statistics for a log-CO model; see :mod:`eblnn_agent.transforms`).
    """
    m = _valid_mask(train)
    z = obs_to_model(train.obs.astype(np.float64), co_log_scale)
    o = z[:, :-1][m]
    d = (z[:, 1:] - z[:, :-1])[m]
    return NormStats(o.mean(0), np.maximum(o.std(0), min_std), d.mean(0), np.maximum(d.std(0), min_std))


def _gather(data: TransitionData, ep: np.ndarray, off: np.ndarray, window: int, device) -> Windows:
    t = off[:, None] + np.arange(window + 1)[None, :]
    obs = data.obs[ep[:, None], np.minimum(t, data.obs.shape[1] - 1)]
    act = data.actions[ep[:, None], np.minimum(t[:, :-1], data.actions.shape[1] - 1)]
    mask = t[:, :-1] < data.lengths[ep][:, None]
    return Windows(torch.as_tensor(obs, device=device), torch.as_tensor(act, device=device),
                   torch.as_tensor(mask, device=device))


def sample_windows(data: TransitionData, n: int, window: int, rng: np.random.Generator,
                   device: str | torch.device = "cpu", p: np.ndarray | None = None) -> Windows:
    """``n`` random windows (random episode, random start); short episodes give masked windows.

    ``p``: probabilities of the episodes (``[E]``, summing to 1); None draws them uniformly.
    """
    if p is None:
        ep = rng.integers(0, data.n_episodes, size=n)
    else:
        p = np.asarray(p, dtype=np.float64)
        if p.shape != (data.n_episodes,) or not np.all(np.isfinite(p)) or np.any(p < 0) or abs(p.sum() - 1) > 1e-9:
            raise ValueError(f"episode probabilities must be {data.n_episodes} finite values >= 0 summing to 1, "
                             f"got shape {p.shape} summing to {p.sum():.6g}")
        ep = rng.choice(data.n_episodes, size=n, p=p)
    hi = np.maximum(data.lengths[ep] - window, 0) + 1
    off = (rng.random(n) * hi).astype(np.int64)
    return _gather(data, ep, off, window, device)


def tile_windows(data: TransitionData, window: int, device: str | torch.device = "cpu") -> Windows:
    """Every episode cut into consecutive non-overlapping windows (deterministic; for validation)."""
    eps, offs = [], []
    for e in range(data.n_episodes):
        for off in range(0, max(int(data.lengths[e]) - 1, 1), window):
            eps.append(e)
            offs.append(off)
    return _gather(data, np.asarray(eps), np.asarray(offs), window, device)
