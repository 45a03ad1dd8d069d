"""Train a stable-baselines3 PPO or SAC baseline on Furnace-v0's training mix.

    python train/baselines.py --algo ppo                      # small default budget
    python train/baselines.py --algo sac --steps 50000 --seed 1 --out runs/sac_50k
    python train/baselines.py --algo ppo --config configs/ppo.yaml --n_envs 4 --wandb auto
    python train/baselines.py --algo sac-residual --residual_bound 0.1   # residual on PI

``sac-residual`` and ``ppo-residual`` train the same algorithms as a bounded residual on the PI
controller. The settings (every one a flag, a YAML ``--config`` below the flags), the training and
the outputs in ``--out`` are documented in :mod:`planners.sb3_training`, which does the work.
"""

from __future__ import annotations

import sys
from pathlib import Path

from planners.sb3_training import ConfigError, parse_config, train


def main(argv: list[str] | None = None) -> dict:
    algo, run, cfg = parse_config(argv)
    command = " ".join([Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)])
    return train(algo, run, cfg, command)


if __name__ == "__main__":
    try:
        main()
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
