"""Load a stable-baselines3 PPO or SAC artefact (``train/baselines.py``) as a controller.

The artefact is a model zip with its ``VecNormalize`` statistics beside it:
``DIR/model.zip`` + ``DIR/vecnormalize.pkl`` (the final model), or
``DIR/checkpoints/<algo>_<N>_steps.zip`` + ``DIR/checkpoints/<algo>_vecnormalize_<N>_steps.pkl``
(a checkpoint). A zip made by ``train/baselines.py`` records the action coordinates its policy
acts in (``furnace_env_record`` in its ``data``; without it, the env's own). :func:`load_sb3_policy` returns an object with SB3's ``predict`` that
normalises raw env observations with the frozen statistics, so it runs on a plain
``gym.make("Furnace-v0", scenario=...)`` env (e.g. in :func:`planners.evaluation.run_episode`).

Trust: an SB3 model zip is trusted input, like any pickle-based format (SB3 itself unpickles
parts of it, e.g. its spaces and schedules): load only zips you made or trust. The
``VecNormalize`` statistics beside it are read by :func:`load_vecnormalize`, an unpickler that
admits only the classes such a file holds (the wrapper, its running mean/std, numpy arrays and
generators, a Box space) and refuses any other global before it is called, so a crafted
``vecnormalize.pkl`` cannot run code.

A residual agent (``--algo sac-residual`` or ``ppo-residual``; its record holds ``residual``)
runs on the PI controller it was trained on: the policy sees the measurements and PI's action,
and its action goes through PI's safety layer (:class:`planners.residual.ResidualPI`).
"""

from __future__ import annotations

import json
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from furnace_env.env import validate_observation
from furnace_env.features import TrackingIntegral
from furnace_env.physics import FurnaceParams
from furnace_env.ratio import ACTION_COORDS, DEFAULT_EXCESS_AIR, RatioActions
from planners.residual import ResidualPI, residual_from_record

__all__ = ["SB3Policy", "SB3ArtefactError", "load_sb3_policy", "load_vecnormalize", "vecnormalize_path"]

#: The training script's algorithms, longest first (a folder name is matched by its prefix).
ALGOS = ("ppo-residual", "sac-residual", "ppo", "sac")
_CKPT_RE = re.compile(r"^(?P<prefix>.+)_(?P<steps>\d+)_steps\.zip$")


class SB3ArtefactError(RuntimeError):
    """A missing or unreadable artefact; the message names the path and the command that makes it."""


def _make_command(path: Path, algo: str | None) -> str:
    out = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return f"python train/baselines.py --algo {algo or '{' + ','.join(ALGOS) + '}'} --out {out}"


def _guess_algo(path: Path) -> str | None:
    for part in (path.name, *(p.name for p in path.parents)):
        for algo in ALGOS:
            if part.lower().startswith(algo):
                return algo
    return None


def vecnormalize_path(model_path: str | Path) -> Path:
    """Where the ``VecNormalize`` statistics of a model zip live (final model or checkpoint)."""
    path = Path(model_path)
    m = _CKPT_RE.match(path.name)
    if m and path.parent.name == "checkpoints":
        return path.with_name(f"{m['prefix']}_vecnormalize_{m['steps']}_steps.pkl")
    return path.with_name("vecnormalize.pkl")


#: The globals a ``VecNormalize.save`` pickle references (numpy 1.x and 2.x module names).
_VECNORM_GLOBALS = frozenset({
    ("stable_baselines3.common.vec_env.vec_normalize", "VecNormalize"),
    ("stable_baselines3.common.running_mean_std", "RunningMeanStd"),
    ("gymnasium.spaces.box", "Box"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy.random._pickle", "__generator_ctor"),
    ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random._pcg64", "PCG64"),
    ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
    ("numpy.random.bit_generator", "SeedSequence"),
    ("builtins", "slice"),
})


class _VecNormalizeUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`_VECNORM_GLOBALS` (everything else is refused unresolved)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _VECNORM_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in VecNormalize statistics "
                                         "(only the wrapper, its running mean/std and numpy types are)")
        return super().find_class(module, name)


def load_vecnormalize(path: str | Path) -> Any:
    """Read ``VecNormalize`` statistics saved by SB3 without running arbitrary code (see module docstring).

    Returns the wrapper without its venv, frozen (``training = False``). Raises
    ``pickle.UnpicklingError`` for a file that references any other global, ``TypeError`` for
    a pickle of another object.
    """
    with open(path, "rb") as f:
        obj = _VecNormalizeUnpickler(f).load()
    from stable_baselines3.common.vec_env import VecNormalize

    if not isinstance(obj, VecNormalize):
        raise TypeError(f"expected a VecNormalize, got {type(obj).__name__}")
    obj.training = False
    return obj


def _zip_data(path: Path) -> dict:
    """The ``data`` record of an SB3 zip (hyperparameters and plain attributes, JSON)."""
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read("data"))


def _algo_of_zip(data: dict) -> str:
    """The algorithm of an SB3 zip, from the hyperparameters its ``data`` record holds."""
    if "gae_lambda" in data and "clip_range" in data:
        return "ppo"
    if "tau" in data and "ent_coef" in data:
        return "sac"
    raise ValueError("the zip holds neither a PPO nor a SAC model")


def _integral_feature(data: dict) -> TrackingIntegral | None:
    """The integral feature of a policy trained with it (``furnace_env_record``), else None."""
    spec = (data.get("furnace_env_record") or {}).get("obs_integral")
    return None if not spec else TrackingIntegral(float(spec["dt"]), float(spec["limit"]))


def _residual(data: dict, params: FurnaceParams | None) -> ResidualPI | None:
    """The PI interface of a residual agent (``furnace_env_record["residual"]``), else None."""
    spec = (data.get("furnace_env_record") or {}).get("residual")
    return None if not spec else residual_from_record(spec, params)


def _action_map(data: dict) -> RatioActions | None:
    """The ratio-coordinate map of a policy trained in them, else None (the env's own coordinates).

    A zip without ``furnace_env_record`` predates the option and acts in the env's coordinates."""
    record = data.get("furnace_env_record") or {}
    coords = record.get("action_coords", "raw")
    if coords not in ACTION_COORDS:
        raise ValueError(f"action_coords={coords!r}; allowed: {', '.join(ACTION_COORDS)}")
    if coords == "raw":
        return None
    return RatioActions(excess_air=tuple(record.get("excess_air", DEFAULT_EXCESS_AIR)))


class SB3Policy:
    """A trained SB3 model behind frozen observation normalisation, with SB3's ``predict``."""

    def __init__(self, model: Any, obs_norm: Any, algo: str, env_steps: int, path: Path,
                 ratio: RatioActions | None = None, integral: TrackingIntegral | None = None,
                 residual: ResidualPI | None = None) -> None:
        if residual is not None and (ratio is not None or integral is not None):
            raise ValueError("a residual agent acts on PI's commands and observes PI's inputs: "
                             "it takes neither ratio coordinates nor the integral feature")
        self.model = model
        self.residual = residual
        """Set for a residual agent: PI runs beside it and its safety layer applies after the residual."""
        self.obs_norm = obs_norm
        self.ratio = ratio
        """Set for a policy trained in ratio coordinates: its actions are mapped to the env's."""
        self.integral = integral
        """Set for a policy trained with the integrated temperature error as an input."""
        self._fresh = True
        self.algo = algo
        self.name = algo if residual is None else f"{algo}-residual"
        self.env_steps = env_steps
        """Real env steps the model consumed in training."""
        self.path = path

    def reset(self) -> None:
        """Start a new episode (the integral feature, if any, restarts at zero; PI, if any, restarts bumpless)."""
        self._fresh = True
        if self.residual is not None:
            self.residual.reset()

    def features(self, observation: np.ndarray, episode_start: np.ndarray | None = None) -> np.ndarray:
        """Env observation -> the policy's observation: with the integral feature, integrated
        once per call as ``TrackingIntegralWrapper`` does once per env step (reset at an episode start)."""
        if self.integral is None:
            return observation
        obs = np.asarray(observation, dtype=np.float32)
        if obs.shape != (8,):
            raise ValueError(f"observation of shape {obs.shape}: a policy with the integral feature "
                             "keeps state for one furnace; pass one observation [8] per call")
        if self._fresh or (episode_start is not None and np.any(episode_start)):
            self.integral.reset()
            self._fresh = False
        else:
            self.integral.update(obs)
        return self.integral.augment(obs)

    def normalize(self, observation: np.ndarray) -> np.ndarray:
        """Policy observation(s) -> the network's input (statistics are never updated)."""
        obs = np.asarray(observation, dtype=np.float32)
        return obs if self.obs_norm is None else self.obs_norm.normalize_obs(obs).astype(np.float32)

    def predict(self, observation: np.ndarray, state: Any = None, episode_start: np.ndarray | None = None,
                deterministic: bool = True) -> tuple[np.ndarray, Any]:
        """Env actions in [-1, 1] for one observation ``[8]`` or a batch ``[N, 8]`` (deterministic by default)."""
        obs, single = validate_observation(observation)  # before the integral feature moves
        observation = (obs[0] if single else obs).astype(np.float32)
        if self.residual is not None:
            return self._predict_residual(observation, state, episode_start, deterministic)
        x = self.normalize(self.features(observation, episode_start))
        action, state = self.model.predict(x, state=state, episode_start=episode_start, deterministic=deterministic)
        if self.ratio is not None:
            action = self.ratio.to_env(np.asarray(action, dtype=np.float64)).astype(np.float32)
        return action, state

    def _predict_residual(self, observation: np.ndarray, state: Any, episode_start: np.ndarray | None,
                          deterministic: bool) -> tuple[np.ndarray, Any]:
        """PI advances one step, the agent adds its residual, PI's safety layer applies."""
        obs = np.asarray(observation, dtype=np.float64)
        single = obs.ndim == 1
        if episode_start is not None and np.any(episode_start):
            self.residual.reset()
        x = self.normalize(self.residual.observe(obs[None] if single else obs))
        u, state = self.model.predict(x, state=state, episode_start=episode_start, deterministic=deterministic)
        action = self.residual.act(u)
        return (action[0] if single else action), state

    def __repr__(self) -> str:
        return f"SB3Policy({self.name}, env_steps={self.env_steps}, path={str(self.path)!r})"


def load_sb3_policy(path: str | Path, device: str = "cpu", params: FurnaceParams | None = None) -> SB3Policy:
    """Load ``model.zip`` (or a checkpoint zip) and its VecNormalize statistics for evaluation.

    ``params``: the plant's parameters for a residual agent's PI controller (its actuator
    ranges; default: the nominal plant's).

    Raises :class:`SB3ArtefactError` naming the path and the command that makes the artefact
    when the zip or its statistics are missing or unreadable.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.zip"
    guess = _guess_algo(path)
    if not path.is_file():
        raise SB3ArtefactError(f"SB3 model {str(path)!r} does not exist; make it with:\n    "
                               f"{_make_command(path, guess)}")
    try:
        data = _zip_data(path)
        algo = _algo_of_zip(data)
        ratio = _action_map(data)
        integral = _integral_feature(data)
        residual = _residual(data, params)
        from stable_baselines3 import PPO, SAC

        model = {"ppo": PPO, "sac": SAC}[algo].load(path, device=device)
    except Exception as err:  # noqa: BLE001 - any failure here means an unusable artefact
        raise SB3ArtefactError(f"SB3 model {str(path)!r} is unreadable ({type(err).__name__}: {err}); "
                               f"make it again with:\n    {_make_command(path, guess)}") from err
    stats = vecnormalize_path(path)
    if not stats.is_file():
        raise SB3ArtefactError(f"observation statistics {str(stats)!r} for {str(path)!r} are missing; "
                               f"make the artefact again with:\n    {_make_command(path, algo)}")
    try:
        obs_norm = load_vecnormalize(stats)  # without its venv: only its statistics are used
    except Exception as err:  # noqa: BLE001
        raise SB3ArtefactError(f"observation statistics {str(stats)!r} are unreadable "
                               f"({type(err).__name__}: {err}); make the artefact again with:\n    "
                               f"{_make_command(path, algo)}") from err
    if not obs_norm.norm_obs:
        obs_norm = None
    return SB3Policy(model, obs_norm, algo, int(model.num_timesteps), path, ratio, integral, residual)


def _main(argv: list[str] | None = None) -> None:
    """``python -m planners.sb3_policy MODEL.zip ... [--seeds 0 1 2]``: returns next to the PI's."""
    import argparse

    from furnace_env.pi import make_pi
    from furnace_env.scenarios import EVAL_SCENARIOS
    from planners.evaluation import episode_metrics, make_scenario_env, run_episode

    parser = argparse.ArgumentParser(description=_main.__doc__)
    parser.add_argument("models", nargs="+", help="model zips (final models or checkpoints)")
    parser.add_argument("--scenarios", nargs="+", default=list(EVAL_SCENARIOS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = parser.parse_args(argv)
    policies = [load_sb3_policy(p) for p in args.models]
    names = ["pi"] + [f"{p.name} {p.env_steps // 1000}k" for p in policies]
    print("| scenario | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    totals = np.zeros(len(names))
    for scen in args.scenarios:
        env = make_scenario_env(scen)
        cells = []
        for i, ctrl in enumerate([make_pi(env), *policies]):
            mets = [episode_metrics(run_episode(ctrl, env, seed=s)) for s in args.seeds]
            ret, trips = np.mean([m["return"] for m in mets]), int(sum(m["trips"] for m in mets))
            totals[i] += ret
            cells.append(f"{ret:.0f}" + (f" ({trips} trips)" if trips else ""))
        print(f"| {scen} | " + " | ".join(cells) + " |", flush=True)
    print("| mean | " + " | ".join(f"{t / len(args.scenarios):.0f}" for t in totals) + " |")


if __name__ == "__main__":
    _main()
