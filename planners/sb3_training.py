"""Train a stable-baselines3 PPO or SAC baseline on Furnace-v0's training mix (``train/baselines.py`` is its command line).

    python train/baselines.py --algo ppo                      # small default budget
    python train/baselines.py --algo sac --steps 50000 --seed 1 --out runs/sac_50k
    python train/baselines.py --algo ppo --config configs/ppo.yaml --n_envs 4 --wandb auto
    python train/baselines.py --algo sac-residual --residual_bound 0.1   # residual on PI

``sac-residual`` and ``ppo-residual`` train the same algorithms as a bounded residual on the PI
controller (``planners.residual``: the agent observes PI's inputs and PI's action, and PI's
cross-limits and CO override apply after its residual), with :class:`SACResidualConfig` and
:class:`PPOResidualConfig`.

Every hyperparameter is a field of :class:`PPOConfig` or :class:`SACConfig` (the algorithm's
settings, budget included) or of :class:`RunConfig` (seed, output, logging). A YAML file
(``--config``) and then the command line override those defaults; the flags are generated from
the fields, so each default is written once, here. Observations go through ``VecNormalize`` for
both algorithms (see :class:`PPOConfig.norm_obs`); its statistics are saved beside the model.

Outputs in ``--out`` (default ``runs/artifacts/<algo>``, where ``evaluate/compare_planners.py``
looks): ``model.zip`` (with the action coordinates it acts in, ``furnace_env_record``, as
every checkpoint zip has), ``vecnormalize.pkl``, ``meta.json`` (algorithm, real env steps consumed,
seed, config, package versions, wall time), ``progress.csv`` (the console's metrics), and
``checkpoints/<algo>_<N>_steps.zip`` with ``<algo>_vecnormalize_<N>_steps.pkl`` (N = env steps).
``model.zip`` is written last and atomically: where it exists, the artefact is complete.
Load it for evaluation with :func:`planners.sb3_policy.load_sb3_policy`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from eblnn_agent.cli import (
    ConfigError,
    add_dataclass_flags,
    apply_overrides,
    read_yaml_mapping,
)
from eblnn_agent.logger import WANDB_DEFAULT, WANDB_MODES, open_wandb_run
from eblnn_agent.utils import atomic_write, check_writable_dir, package_versions

__all__ = ["ALGOS", "RunConfig", "PPOConfig", "SACConfig", "SACResidualConfig", "PPOResidualConfig",
           "ConfigError", "parse_config", "validate", "make_env", "make_model", "env_record", "train"]

ALGOS = ("ppo", "sac", "ppo-residual", "sac-residual")


# -- configuration -------------------------------------------------------------------------------
@dataclass
class RunConfig:
    """Settings of one training run that do not depend on the algorithm."""

    seed: int = 0
    """Seed of the env programmes (sub-env i gets seed + i), the network initialisation and
    the exploration noise. Evaluation seeds (10 000 and up) are never used for training."""
    out: str = ""
    """Output folder (empty: ``runs/artifacts/<algo>``, where the comparison script looks)."""
    scenario: str = "train_mix"
    """Training scenario: a preset name or a YAML/JSON scenario file."""
    action_coords: str = "ratio"
    """The from-scratch policy's action coordinates (a residual agent acts on PI's commands, in
    the env's coordinates, whatever this says): "ratio" (fuel command and burner excess air,
    ``furnace_env.ratio``: the coordinates the planners search in, so every controller gets the
    same ratio-control structure) or "raw" (fuel-valve and air-damper commands, the env's own).
    Recorded in every model zip (:func:`env_record`), where the evaluation reads it. Ratio coordinates
    narrowed the baselines' gap to PI for both algorithms (docs/tuning.md, "Action coordinates and
    SAC settings")."""
    device: str = "auto"
    """Torch device for the networks: auto, cpu or cuda (small MLPs: cpu is usually fastest)."""
    threads: int = 1
    """Torch CPU threads (0: torch's default). One is fastest for these small networks."""
    checkpoints: int = 5
    """Evenly spaced checkpoints over the budget (0: none); the sample-efficiency plot uses them."""
    progress: bool = True
    """Show a tqdm progress bar."""
    wandb: str = WANDB_DEFAULT
    """W&B logging: auto (online with credentials, else offline), online, offline or disabled."""
    wandb_project: str = "furnace-eblnn"
    """W&B project name."""
    log_interval: int = 4
    """Console/CSV/W&B rows: every this many PPO rollouts, or SAC episodes (per sub-env)."""


@dataclass
class PPOConfig:
    """PPO (Schulman et al. 2017), from rl-baselines3-zoo's settings for continuous control
    (Pendulum, LunarLanderContinuous, BipedalWalker), adapted to 240-step episodes of 5 s."""

    steps: int = 200_000
    """Budget in real env steps, summed over the sub-envs (rounded up to whole rollouts)."""
    n_envs: int = 8
    """Parallel copies of the env (DummyVecEnv: one process; the physics step is cheap)."""
    n_steps: int = 256
    """Steps per sub-env per rollout: 8 x 256 = 2048 transitions, about eight episodes' worth."""
    batch_size: int = 128
    """Minibatch size of the PPO update."""
    n_epochs: int = 10
    """Passes over each rollout."""
    learning_rate: float = 3e-4
    """Adam step size (constant)."""
    gamma: float = 0.99
    """Discount: an effective horizon of 100 steps (8 min), about twice the furnace's time constant."""
    gae_lambda: float = 0.95
    """GAE bias/variance trade-off."""
    clip_range: float = 0.2
    """PPO ratio clipping."""
    ent_coef: float = 0.0
    """Entropy bonus (the zoo's 0 for continuous control)."""
    vf_coef: float = 0.5
    """Value-loss weight."""
    max_grad_norm: float = 0.5
    """Gradient clipping."""
    log_std_init: float = -1.0
    """Initial log std of the Gaussian policy: std 0.37 of the [-1, 1] range; std 1 (the default)
    slams valve and damper from end to end and trips the burner in most early episodes."""
    net_arch: list[int] = field(default_factory=lambda: [64, 64])
    """Hidden layers of the policy and the value network (separate networks, tanh)."""
    norm_obs: bool = True
    """VecNormalize the observations (running mean/std, clipped at 10 std). The channels span
    three orders of magnitude (temperature ~900 degC, CO 0-5000 ppm, air ~3000 kg/h, commands
    +-1) and the informative band is narrow against the instrument ranges, so a fixed affine map
    from the observation bounds would squeeze it; running statistics adapt to the operating
    region and SB3 saves, restores and (for SAC) applies them to replayed samples."""
    norm_reward: bool = True
    """VecNormalize the rewards by the running std of the discounted return (the zoo's default
    for PPO): a trip's cost (:func:`furnace_env.cost.trip_cost`, 500 and more) would otherwise
    dominate the value loss."""
    obs_integral: bool = False
    """Append the integrated temperature error to the observation (``furnace_env.features``), so
    that the memoryless policy can learn integral action, as a PI controller has; recorded in the
    model zips, and the evaluation integrates the same way. Off for PPO, which learned worse with
    it (docs/tuning.md, "Action coordinates and SAC settings")."""


@dataclass
class SACConfig:
    """SAC (Haarnoja et al. 2018), from rl-baselines3-zoo's LunarLanderContinuous and
    BipedalWalker settings, with a shorter warm-up to suit budgets of 10^4-10^5 steps."""

    steps: int = 30_000
    """Budget in real env steps."""
    n_envs: int = 1
    """Parallel copies of the env (one: an update per env step, the sample-efficient regime)."""
    learning_rate: float = 7.3e-4
    """Adam step size of actor, critics and temperature (the zoo's)."""
    buffer_size: int = 300_000
    """Replay buffer capacity (transitions; larger than the default budgets: nothing is dropped)."""
    learning_starts: int = 2_000
    """Uniform random actions before the first update (about eight episodes of the training mix)."""
    batch_size: int = 256
    """Replay minibatch size."""
    tau: float = 0.01
    """Polyak coefficient of the target critics."""
    gamma: float = 0.98
    """Discount: an effective horizon of 50 steps (4 min), about the furnace's time constant
    plus dead time; shorter horizons learn faster from TD targets."""
    train_freq: int = 4
    """Env steps (per sub-env) between updates."""
    gradient_steps: int = 2
    """Gradient steps per update (-1: as many as env steps collected). With ``train_freq`` 4: half
    an update per env step. An update costs 7-35 ms on one CPU thread (mostly fixed overhead),
    so the zoo's one-per-step would cap training at 30-100 env steps/s; half buys twice the steps
    for the same wall time, which is the budget that binds here."""
    ent_coef: str = "auto"
    """Entropy coefficient: "auto" (learned, target entropy -dim(A)) or a number, e.g. "0.01"."""
    use_sde: bool = False
    """Generalised state-dependent exploration (smooth noise; the zoo uses it for BipedalWalker)."""
    net_arch: list[int] = field(default_factory=lambda: [128, 128])
    """Hidden layers of the actor and of each critic (ReLU); 8 inputs and 2 actions need no more
    than 128 units, and an update costs a third less than with the zoo's 256."""
    norm_obs: bool = True
    """VecNormalize the observations (see :class:`PPOConfig`). The replay buffer keeps raw
    observations and SB3 normalises sampled batches with the current statistics."""
    norm_reward: bool = False
    """VecNormalize the rewards. Off: SAC's learned temperature adapts to the raw scale, and with
    normalisation SAC learned far worse (docs/benchmarks/baselines.md)."""
    obs_integral: bool = True
    """Append the integrated temperature error to the observation (see :class:`PPOConfig`). On for
    SAC, which gains integral action from it, most on ``low_fire`` (docs/tuning.md, "Action
    coordinates and SAC settings")."""


@dataclass
class SACResidualConfig(SACConfig):
    """SAC as a bounded residual on the PI controller (``planners.residual``); SAC's settings otherwise."""

    train_freq: int = 1
    """Env steps between updates: one gradient update per env step (the zoo's SAC setting)."""
    gradient_steps: int = 1
    """Gradient steps per update (with ``train_freq`` 1: one per env step)."""
    obs_integral: bool = False
    """Off: PI's integrator already removes the offset, and its action is among the inputs."""
    residual_bound: float = 0.1
    """Largest residual on PI's fuel and air commands, action units ([-1, 1] is the full stroke,
    so 0.1 is 5 % of full flow): small enough that PI's loops stay in charge, large enough to trim
    the excess air and the firing rate by a few per cent."""


@dataclass
class PPOResidualConfig(PPOConfig):
    """PPO as a bounded residual on the PI controller (``planners.residual``); PPO's settings otherwise."""

    residual_bound: float = 0.1
    """Largest residual on PI's commands, action units (see :class:`SACResidualConfig`)."""


ALGO_CONFIGS: dict[str, type] = {"ppo": PPOConfig, "sac": SACConfig, "ppo-residual": PPOResidualConfig,
                                 "sac-residual": SACResidualConfig}


def residual_bound(cfg: Any) -> float | None:
    """The residual's bound for a residual algorithm's config, None for a from-scratch one."""
    return getattr(cfg, "residual_bound", None)


def validate(algo: str, run: RunConfig, cfg: PPOConfig | SACConfig) -> None:
    """Fail fast on values SB3 would reject late (or never)."""
    if algo not in ALGOS:
        raise ConfigError(f"algo={algo!r}; allowed: {', '.join(ALGOS)}")
    from furnace_env.ratio import ACTION_COORDS

    if run.action_coords not in ACTION_COORDS:
        raise ConfigError(f"action_coords={run.action_coords!r}; allowed: {', '.join(ACTION_COORDS)}")
    if run.wandb not in WANDB_MODES:
        raise ConfigError(f"wandb={run.wandb!r}; allowed: {', '.join(WANDB_MODES)}")
    for name in ("steps", "n_envs", "batch_size"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name}={getattr(cfg, name)!r} must be >= 1")
    if run.checkpoints < 0 or run.log_interval < 1:
        raise ConfigError(f"checkpoints={run.checkpoints!r} must be >= 0 and log_interval="
                          f"{run.log_interval!r} >= 1")
    if not 0.0 < cfg.gamma <= 1.0:
        raise ConfigError(f"gamma={cfg.gamma!r} must lie in (0, 1]")
    if not (isinstance(run.seed, int) and 0 <= run.seed < 2**32):
        raise ConfigError(f"seed={run.seed!r} must be an integer in [0, 2**32) (numpy and gymnasium refuse others)")
    if run.threads < 0:
        raise ConfigError(f"threads={run.threads!r} must be >= 0 (0: torch's default)")
    if not (math.isfinite(cfg.learning_rate) and cfg.learning_rate > 0):
        raise ConfigError(f"learning_rate={cfg.learning_rate!r} must be a finite number > 0")
    if not all(isinstance(w, int) and w >= 1 for w in cfg.net_arch):
        raise ConfigError(f"net_arch={list(cfg.net_arch)!r}: every layer width must be an integer >= 1")
    from furnace_env.scenarios import get_scenario

    try:
        get_scenario(run.scenario)
    except ValueError as err:
        raise ConfigError(f"scenario={run.scenario!r}: {err}") from err
    bound = residual_bound(cfg)
    if bound is not None:
        if not (np.isfinite(bound) and 0.0 < bound <= 2.0):
            raise ConfigError(f"residual_bound={bound!r} must lie in (0, 2] (action units)")
        if cfg.obs_integral:
            raise ConfigError("obs_integral=True with a residual algorithm: the residual agent observes PI's "
                              "measurements and action only (PI integrates); set --no_obs_integral")
    if isinstance(cfg, PPOConfig) and (cfg.n_steps * cfg.n_envs) % cfg.batch_size:
        raise ConfigError(f"batch_size={cfg.batch_size} must divide n_steps * n_envs = "
                          f"{cfg.n_steps * cfg.n_envs} (PPO drops no samples)")
    if isinstance(cfg, SACConfig) and cfg.ent_coef != "auto" and not cfg.ent_coef.startswith("auto_"):
        try:
            float(cfg.ent_coef)
        except ValueError as err:
            raise ConfigError(f"ent_coef={cfg.ent_coef!r}; allowed: 'auto', 'auto_<init>' or a number") from err


def parse_config(argv: list[str] | None = None) -> tuple[str, RunConfig, PPOConfig | SACConfig]:
    """``(algo, run config, algorithm config)``: defaults, then ``--config`` YAML, then flags."""
    doc = (__doc__ or "").split("\n")[0]
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--algo", choices=ALGOS, default=None)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    yaml_values: dict[str, Any] = {}
    if known.config:
        yaml_values = dict(read_yaml_mapping(known.config))
    algo = known.algo or yaml_values.pop("algo", None)
    yaml_values.pop("algo", None)
    if algo is None and any(a in ("-h", "--help") for a in (sys.argv[1:] if argv is None else argv)):
        parser = argparse.ArgumentParser(description=doc, epilog="Add --algo ppo or --algo sac to "
                                         "--help to list that algorithm's settings too.")
        parser.add_argument("--algo", choices=ALGOS, help="Algorithm (required here or in --config).")
        add_dataclass_flags(parser, RunConfig)
        parser.parse_args(["--help"])  # prints and exits
    if algo not in ALGOS:
        # argparse prints the allowed values and exits with status 2.
        pre.error(f"--algo is required (in a flag or the --config file); allowed: {', '.join(ALGOS)}"
                  if algo is None else f"algo={algo!r}; allowed: {', '.join(ALGOS)}")
    algo_cls = ALGO_CONFIGS[algo]
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--algo", choices=ALGOS, default=argparse.SUPPRESS,
                        help="Algorithm (required here or in the --config file).")
    parser.add_argument("--config", default=None, help="YAML file of settings (flags override it).")
    parser.add_argument("--no_wandb", action="store_true", help="Same as --wandb disabled.")
    add_dataclass_flags(parser, RunConfig)
    add_dataclass_flags(parser, algo_cls)
    args = vars(parser.parse_args(argv))
    args.pop("algo", None)
    args.pop("config", None)
    if args.pop("no_wandb"):
        args["wandb"] = "disabled"
    run_names = {f.name for f in dataclasses.fields(RunConfig)}
    run, cfg = RunConfig(), algo_cls()
    for values, source in ((yaml_values, f"config file {known.config!r}"), (args, "command line")):
        run = apply_overrides(run, {k: v for k, v in values.items() if k in run_names}, source)
        cfg = apply_overrides(cfg, {k: v for k, v in values.items() if k not in run_names}, source)
    if not run.out:
        run = dataclasses.replace(run, out=f"runs/artifacts/{algo}")
    validate(algo, run, cfg)
    return algo, run, cfg


# -- logging ---------------------------------------------------------------------------------------
def make_sb3_logger(out: Path, wandb_run: Any):
    """SB3's logger writing the console table, ``progress.csv`` and (if open) W&B: the same keys."""
    from stable_baselines3.common.logger import CSVOutputFormat, HumanOutputFormat, KVWriter, Logger

    class WandbWriter(KVWriter):
        def write(self, key_values: dict[str, Any], key_excluded: dict, step: int = 0) -> None:
            scalars = {k: v for k, v in key_values.items() if isinstance(v, int | float | np.number)}
            wandb_run.log({**scalars, "time/env_steps": step}, step=step)

    formats = [HumanOutputFormat(sys.stdout), CSVOutputFormat(str(out / "progress.csv"))]
    if wandb_run is not None:
        formats.append(WandbWriter())
    return Logger(str(out), formats)


# -- environment and model ------------------------------------------------------------------------
def make_env(scenario: str, n_envs: int, seed: int, norm_obs: bool, norm_reward: bool, gamma: float,
             action_coords: str, obs_integral: bool, residual: float | None = None):
    """``n_envs`` Furnace-v0 copies (seeds ``seed + i``) in a DummyVecEnv under VecNormalize,
    each in ``action_coords`` (``RatioActionWrapper`` for "ratio") and, with ``obs_integral``,
    observing the integrated temperature error (``TrackingIntegralWrapper``); with ``residual``
    (a bound), acting as a residual on PI instead (``planners.residual.ResidualPIWrapper``)."""
    import gymnasium as gym
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    import furnace_env  # noqa: F401  (registers Furnace-v0)
    from furnace_env.features import TrackingIntegralWrapper
    from furnace_env.ratio import RatioActionWrapper

    def wrapper(env):
        if residual is not None:
            from planners.residual import ResidualPIWrapper

            return ResidualPIWrapper(env, residual)
        env = TrackingIntegralWrapper(env) if obs_integral else env
        return RatioActionWrapper(env) if action_coords == "ratio" else env

    venv = make_vec_env(lambda: gym.make("Furnace-v0", scenario=scenario), n_envs=n_envs, seed=seed,
                        wrapper_class=wrapper)
    return VecNormalize(venv, norm_obs=norm_obs, norm_reward=norm_reward, gamma=gamma)


def make_model(algo: str, cfg: PPOConfig | SACConfig, env, seed: int, device: str):
    """The SB3 model for ``cfg`` (the only place its fields meet SB3's argument names)."""
    import torch
    from stable_baselines3 import PPO, SAC

    if isinstance(cfg, PPOConfig):
        return PPO(
            "MlpPolicy", env, learning_rate=cfg.learning_rate, n_steps=cfg.n_steps,
            batch_size=cfg.batch_size, n_epochs=cfg.n_epochs, gamma=cfg.gamma, gae_lambda=cfg.gae_lambda,
            clip_range=cfg.clip_range, ent_coef=cfg.ent_coef, vf_coef=cfg.vf_coef,
            max_grad_norm=cfg.max_grad_norm, seed=seed, device=device, verbose=0,
            policy_kwargs={"net_arch": list(cfg.net_arch), "log_std_init": cfg.log_std_init,
                           "activation_fn": torch.nn.Tanh},
        )
    ent: str | float = cfg.ent_coef if cfg.ent_coef.startswith("auto") else float(cfg.ent_coef)
    return SAC(
        "MlpPolicy", env, learning_rate=cfg.learning_rate, buffer_size=cfg.buffer_size,
        learning_starts=cfg.learning_starts, batch_size=cfg.batch_size, tau=cfg.tau, gamma=cfg.gamma,
        train_freq=cfg.train_freq, gradient_steps=cfg.gradient_steps, ent_coef=ent, use_sde=cfg.use_sde,
        seed=seed, device=device, verbose=0, policy_kwargs={"net_arch": list(cfg.net_arch)},
    )


def make_callbacks(algo: str, run: RunConfig, cfg: PPOConfig | SACConfig, out: Path) -> list:
    """Checkpoints (with VecNormalize statistics) and, if asked, a tqdm progress bar."""
    from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback

    callbacks: list = []
    if run.checkpoints > 0:
        every = max(cfg.steps // (run.checkpoints * cfg.n_envs), 1)  # in vec-env steps
        callbacks.append(CheckpointCallback(every, str(out / "checkpoints"), name_prefix=algo,
                                            save_vecnormalize=True))
    if run.progress:
        from tqdm.auto import tqdm

        class TqdmCallback(BaseCallback):
            """SB3's ProgressBarCallback without its dependency on rich."""

            def _on_training_start(self) -> None:
                self.bar = tqdm(total=self.locals["total_timesteps"], unit="step", desc=algo,
                                mininterval=1.0 if sys.stderr.isatty() else 30.0,
                                file=sys.stderr)

            def _on_step(self) -> bool:
                self.bar.update(self.training_env.num_envs)
                return True

            def _on_training_end(self) -> None:
                self.bar.close()

        callbacks.append(TqdmCallback())
    return callbacks


# -- artefacts -------------------------------------------------------------------------------------
def env_record(run: RunConfig, cfg: PPOConfig | SACConfig) -> dict:
    """How the policy meets the env, saved in its zips (``planners.sb3_policy`` applies it)."""
    from furnace_env.features import INTEGRAL_LIMIT
    from furnace_env.physics import FurnaceParams
    from furnace_env.ratio import DEFAULT_EXCESS_AIR

    bound = residual_bound(cfg)
    if bound is not None:
        from planners.residual import residual_record

        return {"env_id": "Furnace-v0", "scenario": run.scenario, "action_coords": "raw",
                "residual": residual_record(bound)}
    record: dict[str, Any] = {"env_id": "Furnace-v0", "scenario": run.scenario, "action_coords": run.action_coords}
    if run.action_coords == "ratio":
        record["excess_air"] = list(DEFAULT_EXCESS_AIR)
    if cfg.obs_integral:
        record["obs_integral"] = {"limit": INTEGRAL_LIMIT, "dt": FurnaceParams().dt}
    return record


def save_artefact(out: Path, model, env, meta: dict) -> None:
    """``vecnormalize.pkl``, ``meta.json``, then ``model.zip``, each atomically."""
    atomic_write(out / "vecnormalize.pkl", env.save)
    atomic_write(out / "meta.json", lambda p: Path(p).write_text(json.dumps(meta, indent=2)))
    atomic_write(out / "model.zip", model.save)


def train(algo: str, run: RunConfig, cfg: PPOConfig | SACConfig, command: str = "") -> dict:
    """Train ``algo`` with these settings and write its artefact into ``run.out``; its ``meta.json`` record.

    ``command`` is recorded in the metadata (the command line that asked for the run).
    """
    import torch

    if run.threads > 0:
        torch.set_num_threads(run.threads)
    try:  # before any training: a run must not fail only when it first saves
        out = check_writable_dir(run.out, "--out")
    except ValueError as err:
        raise ConfigError(str(err)) from err
    config = {"algo": algo, "run": asdict(run), algo: asdict(cfg)}
    print(f"training {algo.upper()} on Furnace-v0 ({run.scenario}) for {cfg.steps} env steps, "
          f"{cfg.n_envs} env(s), seed {run.seed} -> {out}", flush=True)

    env = make_env(run.scenario, cfg.n_envs, run.seed, cfg.norm_obs, cfg.norm_reward, cfg.gamma,
                   run.action_coords, cfg.obs_integral, residual_bound(cfg))
    model = make_model(algo, cfg, env, run.seed, run.device)
    # A plain attribute is saved in the zip's "data" record: every checkpoint and the final model
    # carry their coordinates, so no side file can disagree with the weights.
    model.furnace_env_record = env_record(run, cfg)
    wandb_run = open_wandb_run(run.wandb, run.wandb_project, config, f"{algo}-s{run.seed}", str(out))
    model.set_logger(make_sb3_logger(out, wandb_run))

    t0 = time.perf_counter()
    model.learn(total_timesteps=cfg.steps, callback=make_callbacks(algo, run, cfg, out),
                log_interval=run.log_interval, progress_bar=False)
    wall = time.perf_counter() - t0
    env_steps = int(model.num_timesteps)
    meta = {
        "algo": algo,
        "env_steps": env_steps,
        "seed": run.seed,
        "scenario": run.scenario,
        "wall_time_s": round(wall, 2),
        "env_steps_per_s": round(env_steps / wall, 1),
        "device": str(model.device),
        "torch_threads": torch.get_num_threads(),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),  # noqa: UP017
        "command": command,
        "config": config,
        "versions": package_versions(),
    }
    save_artefact(out, model, env, meta)
    env.close()
    summary = {"summary/env_steps": env_steps, "summary/wall_time_s": wall,
               "summary/env_steps_per_s": env_steps / wall}
    if wandb_run is not None:
        wandb_run.summary.update(summary)
        wandb_run.finish()
    print(f"wrote {out / 'model.zip'}: {env_steps} env steps in {wall:.0f} s "
          f"({env_steps / wall:.0f} env steps/s)", flush=True)
    return meta
