"""Online model-based RL: collect with the planner, retrain the world model, repeat (as PETS does).

    python train/online_mbrl.py                                   # small defaults, a few minutes
    python train/online_mbrl.py --iterations 5 --episodes_per_iter 8 --init_env_steps 20000
    python train/online_mbrl.py --init_checkpoint runs/artifacts/world_model/best.pt --planner_weight 10

Iteration 0 trains the world model on a small exploratory dataset (the same collector as
``train/world_model.py``); each later iteration runs the EB-LNN Langevin MPC on the training
scenario mix with time-correlated exploration noise, appends those real transitions, and
fine-tunes the model on everything collected so far. Every iteration writes
``<out_dir>/iter_<k>/best.pt`` whose metadata records the real environment steps consumed so
far (``env_steps``): the points of the EB-LNN's sample-efficiency curve in
``evaluate/compare_planners.py``. Normalisation statistics are those of iteration 0 throughout,
so fine-tuning keeps the network's input scaling.

With ``--init_checkpoint`` the loop starts from an already trained world model and the dataset it
was trained on (reloaded from its recorded path, or collected again from its recorded seed):
iteration 0 is that model, and the planner's own episodes then correct it where the planner
drives the plant (the data-aggregation argument of Ross & Bagnell, "Agnostic system
identification for model-based reinforcement learning", ICML 2012). ``--planner_weight`` makes a
planner episode that many times more likely than an exploratory one to be drawn for a training
window, so that a few on-policy episodes are not drowned by a large offline dataset.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import furnace_env  # noqa: F401  (registers Furnace-v0)
from eblnn_agent.checkpoint import CheckpointError, load_checkpoint
from eblnn_agent.cli import parse_dataclass_args
from eblnn_agent.config import WorldModelRunConfig
from eblnn_agent.data import TransitionData, compute_norm_stats, load_or_collect, split_episodes
from eblnn_agent.logger import WANDB_DEFAULT, make_logger
from eblnn_agent.model import EBLNN
from eblnn_agent.trainer import Trainer
from eblnn_agent.utils import atomic_write, process_pool, resolve_device
from furnace_env.scenarios import get_scenario
from planners.evaluation import run_episode
from planners.factories import make_eblnn_planner

#: Behaviour code of planner-collected episodes (the collector uses 0 = PI + noise, 1 = random).
PLANNER_BEHAVIOUR = 2
#: Environment seeds of collection episodes start here (evaluation seeds start at 10 000).
COLLECT_SEED0 = 2_000_000


@dataclass
class OnlineConfig:
    """Settings of the online loop (every field is a command-line flag)."""

    iterations: int = 4
    """Planner-collection rounds after the initial model. With 4 rounds of 4 episodes and 5
    epochs the planner improves on the initial model; with 2 rounds of 2 episodes and 3 epochs
    it did not (docs/tuning.md, "Online loop: the initial model's epochs")."""
    episodes_per_iter: int = 4
    """Episodes collected with the planner per round."""
    init_env_steps: int = 20_000
    """Real env steps of exploratory data for the initial model."""
    init_epochs: int = 30
    """Training epochs of the initial model (at most: early stopping as in ``train/world_model.py``).
    30, as the world-model trainer: with 8 the initial model was undertrained and planned far worse
    (docs/tuning.md, "Online loop: the initial model's epochs")."""
    epochs_per_iter: int = 5
    """Fine-tuning epochs per round."""
    optimizer: str = "langevin"
    """Planner's optimiser during collection."""
    explore_std: float = 0.05
    """Std of the AR(1) exploration noise added to the planner's actions."""
    explore_tau: float = 30.0
    """Correlation time of the exploration noise, s."""
    world_model_config: str = ""
    """Optional YAML of the world model's config (else its defaults)."""
    seed: int = 0
    """Seed of everything (data, weights, planner, noise)."""
    device: str = "auto"
    """Training device ('auto' picks CUDA when present)."""
    out_dir: str = "runs/artifacts/online"
    """Output folder: iter_<k>/best.pt, data.npz, report.json."""
    wandb: str = WANDB_DEFAULT
    """W&B mode: auto (offline without an account), online, offline, disabled."""
    episode_steps: int = 0
    """Truncate planner episodes to this many steps (0: the scenario's 240); for smoke tests."""
    init_checkpoint: str = ""
    """Start from this trained world model and its dataset instead of training an initial one
    (``init_env_steps``, ``init_epochs`` and ``world_model_config`` then do not apply)."""
    planner_weight: float = 1.0
    """Sampling weight of a planner episode relative to an exploratory one (1: uniform)."""
    workers: int = 2
    """Processes that collect the planner's episodes in parallel (1: in this process)."""


def parse_args(argv: list[str] | None = None) -> OnlineConfig:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no_wandb", action="store_true", help="same as --wandb disabled")
    cfg, args = parse_dataclass_args(OnlineConfig, argv, parser=parser)
    if args.no_wandb:
        cfg.wandb = "disabled"
    for name in ("iterations", "init_epochs", "epochs_per_iter", "init_env_steps"):
        if getattr(cfg, name) < 0 or (name != "iterations" and getattr(cfg, name) < 1):
            parser.error(f"--{name} {getattr(cfg, name)}: must be >= 1 (iterations >= 0)")
    if cfg.episodes_per_iter < 1:
        parser.error(f"--episodes_per_iter {cfg.episodes_per_iter}: must be >= 1")
    if cfg.workers < 1:
        parser.error(f"--workers {cfg.workers}: must be >= 1 (1: collect in this process)")
    if not (np.isfinite(cfg.planner_weight) and cfg.planner_weight > 0):
        parser.error(f"--planner_weight {cfg.planner_weight}: must be a finite number > 0")
    if cfg.init_checkpoint and cfg.world_model_config:
        parser.error("--init_checkpoint and --world_model_config exclude each other: the checkpoint "
                     "carries its own config")
    return cfg


def _planner_episode(checkpoint: str, cfg: OnlineConfig, seed: int, horizon: int
                     ) -> tuple[np.ndarray, np.ndarray, int, float]:
    """One episode of the MPC planner (plus AR(1) noise) on the training mix, from env seed ``seed``.

    Returns ``(obs [horizon + 1, 8], actions [horizon, 2], length, return)``, padded to ``horizon``.
    Its exploration noise has its own generator, seeded by ``(cfg.seed, seed)``: an episode is the
    same whichever process runs it and whatever ran before it.
    """
    scenario = get_scenario("train_mix")
    if cfg.episode_steps:
        scenario = replace(scenario, n_steps=min(cfg.episode_steps, horizon))
    env = gym.make("Furnace-v0", scenario=scenario)
    rng = np.random.default_rng((cfg.seed, seed))
    a_noise = float(np.exp(-env.unwrapped.params.dt / cfg.explore_tau))
    noise = np.zeros(2)

    def perturb(action: np.ndarray) -> np.ndarray:
        nonlocal noise
        noise = a_noise * noise + np.sqrt(1 - a_noise**2) * cfg.explore_std * rng.standard_normal(2)
        return np.clip(np.asarray(action, dtype=np.float64).reshape(2) + noise, -1.0, 1.0).astype(np.float32)

    try:
        ctrl = make_eblnn_planner(env, checkpoint=checkpoint, optimizer=cfg.optimizer, seed=seed)
        ep = run_episode(ctrl, env, seed=seed, perturb=perturb)
    finally:
        env.close()
    length = len(ep.actions)
    obs_ep = np.zeros((horizon + 1, 8), dtype=np.float32)
    act_ep = np.zeros((horizon, 2), dtype=np.float32)
    obs_ep[:length + 1], act_ep[:length] = ep.obs, ep.actions
    ret = sum(float(r) for r in ep.rewards)
    obs_ep[length + 1:] = obs_ep[length]
    return obs_ep, act_ep, length, ret


def collect_with_planner(checkpoint: Path, cfg: OnlineConfig, n_episodes: int, seed0: int,
                         horizon: int) -> tuple[TransitionData, list[float]]:
    """``n_episodes`` of the MPC planner (plus AR(1) noise) on the training mix; and their returns.

    Episodes run in ``cfg.workers`` processes (spawned, one torch thread each); the data are the
    same for any number of workers. Arrays are ``horizon`` long (the dataset's episode length);
    shorter episodes are padded.
    """
    seeds = [seed0 + e for e in range(n_episodes)]
    workers = min(cfg.workers, n_episodes)
    if workers <= 1:
        eps = [_planner_episode(str(checkpoint), cfg, s, horizon) for s in seeds]
    else:
        with process_pool(workers) as pool:
            eps = list(pool.map(_planner_episode, [str(checkpoint)] * n_episodes, [cfg] * n_episodes, seeds,
                                [horizon] * n_episodes))
    obs_all, act_all, lengths, returns = zip(*eps, strict=True)
    prov = {"env_id": "Furnace-v0", "collector": "planner", "optimizer": cfg.optimizer, "seed0": seed0,
            "explore_std": cfg.explore_std}
    data = TransitionData(np.stack(obs_all), np.stack(act_all), np.array(lengths, dtype=np.int64),
                          np.full(n_episodes, PLANNER_BEHAVIOUR, np.int8), prov)
    return data, list(returns)


def concat(a: TransitionData, b: TransitionData) -> TransitionData:
    """Episodes of ``a`` then ``b`` (same episode length)."""
    prov = {"parts": [a.provenance, b.provenance]}
    return TransitionData(np.concatenate([a.obs, b.obs]), np.concatenate([a.actions, b.actions]),
                          np.concatenate([a.lengths, b.lengths]), np.concatenate([a.behaviour, b.behaviour]), prov)


class StepOffsetLogger:
    """A view of a logger whose steps start at ``offset`` (one trainer per iteration, one run)."""

    def __init__(self, logger, offset: int) -> None:
        self._logger, self.offset = logger, offset

    def log(self, metrics: dict, step: int | None = None) -> None:
        self._logger.log(metrics, step=None if step is None else step + self.offset)

    def __getattr__(self, name: str):
        return getattr(self._logger, name)


def initial_model(cfg: OnlineConfig, out: Path, device: torch.device
                  ) -> tuple[EBLNN, WorldModelRunConfig, TransitionData, bool]:
    """The starting ``(model, config, data, trained)``: untrained (to fit at iteration 0) or ``--init_checkpoint``."""
    if cfg.init_checkpoint:
        model, wm, meta = load_checkpoint(cfg.init_checkpoint, device=device)
        dc = wm.data
        data = load_or_collect(dc.data_path, dc.n_env_steps, wm.data_seed, dc.scenario, dc.num_envs,
                               dc.pi_fraction)
        if meta.get("env_steps") != data.env_steps:
            raise CheckpointError(f"--init_checkpoint {cfg.init_checkpoint!r} records {meta.get('env_steps')} "
                                  f"env steps but its dataset {dc.data_path!r} holds {data.env_steps}")
        (out / "iter_0").mkdir(parents=True, exist_ok=True)
        atomic_write(out / "iter_0" / "best.pt", lambda tmp: shutil.copyfile(cfg.init_checkpoint, tmp))
        return model, wm.with_overrides(seed=cfg.seed, wandb="disabled"), data, True
    wm = WorldModelRunConfig.from_yaml(cfg.world_model_config) if cfg.world_model_config else WorldModelRunConfig()
    wm = wm.with_overrides(seed=cfg.seed, n_env_steps=cfg.init_env_steps, epochs=cfg.init_epochs,
                           data_path=str(out / "init_data.npz"), wandb="disabled")
    data = load_or_collect(wm.data.data_path, wm.data.n_env_steps, cfg.seed, wm.data.scenario,
                           wm.data.num_envs, wm.data.pi_fraction)
    torch.manual_seed(cfg.seed)
    model = EBLNN(wm.model)
    model.set_norm_stats(*compute_norm_stats(split_episodes(data, wm.data.val_fraction, wm.data.test_fraction,
                                                            cfg.seed).train, co_log_scale=wm.model.co_log_scale))
    return model, wm, data, False


def episode_weights(data: TransitionData, planner_weight: float) -> np.ndarray | None:
    """Window-sampling probabilities of ``data``'s episodes (planner episodes ``planner_weight`` times the rest)."""
    if planner_weight == 1.0:
        return None
    w = np.where(data.behaviour == PLANNER_BEHAVIOUR, planner_weight, 1.0)
    return w / w.sum()


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_args(argv)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    t0 = time.perf_counter()
    model, wm, data, pretrained = initial_model(cfg, out, device)
    logger = make_logger(cfg.wandb, wm.train.wandb_project, {"online": asdict(cfg), **wm.to_dict()}, dir=str(out))
    history = []
    offset = 0  # global step: each iteration's trainer counts from 0, W&B needs increasing steps
    for it in range(cfg.iterations + 1):
        if it > 0:
            prev = out / f"iter_{it - 1}" / "best.pt"
            new, returns = collect_with_planner(prev, cfg, cfg.episodes_per_iter,
                                                COLLECT_SEED0 + 1000 * it, data.actions.shape[1])
            data = concat(data, new)
            logger.log({"online/iteration": it, "online/collect_return_mean": float(np.mean(returns)),
                        "online/env_steps": data.env_steps}, step=offset)
            model, _, _ = load_checkpoint(prev, device=device)  # fine-tune from the best of the last round
            wm = wm.with_overrides(epochs=cfg.epochs_per_iter)
        if it == 0 and pretrained:
            history.append({"iteration": 0, "env_steps": data.env_steps, "best_val_loss": None,
                            "init_checkpoint": cfg.init_checkpoint, "seconds": time.perf_counter() - t0})
            print(f"iteration 0: {cfg.init_checkpoint} ({data.env_steps} real env steps)", flush=True)
            continue
        split = split_episodes(data, wm.data.val_fraction, wm.data.test_fraction, cfg.seed + it)
        trainer = Trainer(model, wm, split, StepOffsetLogger(logger, offset), device, env_steps=data.env_steps,
                          out_dir=out / f"iter_{it}", episode_weights=episode_weights(split.train, cfg.planner_weight))
        res = trainer.fit()
        offset += trainer.step + 1
        history.append({"iteration": it, "env_steps": data.env_steps, "best_val_loss": res.best_val_loss,
                        "seconds": time.perf_counter() - t0})
        print(f"iteration {it}: {data.env_steps} real env steps, val/loss {res.best_val_loss:.4g}, "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
    data.save(out / "data.npz")
    report = {"config": asdict(cfg), "history": history}
    (out / "report.json").write_text(json.dumps(report, indent=1))
    logger.finish()
    return report


if __name__ == "__main__":
    try:
        sys.exit(0 if main() else 1)
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
