"""Compare every controller on the named scenarios: table, CSV and plots.

    python evaluate/compare_planners.py                       # every controller, named scenarios
    python evaluate/compare_planners.py --scenario my.yaml --seeds 5
    python evaluate/compare_planners.py --family test           # the held-out test family
    python evaluate/compare_planners.py --controllers pi oracle eblnn-langevin
    python evaluate/compare_planners.py --controllers pi oracle eblnn-langevin --planner_set beta=1
    python evaluate/compare_planners.py --controllers pi oracle sac-residual ppo-residual --train_seeds 3

Controllers that need a trained artefact (the EB-LNN world model, PPO, SAC and their residual
versions on PI) look for it under
``--artifacts``; a missing one is trained there on the small default budget first (``--no_train``
skips such controllers instead, and prints the command that makes each artefact). With
``--train_seeds N`` each trained controller is trained and scored from N seeds (seed k >= 1 under
``<artifacts>/<name>/seed_<k>/``) and the table reports the mean over them.
Evaluation seeds start at 10 000, a range no training script uses.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eblnn_agent.cli import parse_dataclass_args  # noqa: E402
from planners.experiment import CONTROLLERS, CompareConfig, run_comparison, validate_config  # noqa: E402


def parse_args(argv: list[str] | None = None) -> CompareConfig:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="list the controllers and exit")
    cfg, args = parse_dataclass_args(CompareConfig, argv, parser=parser)
    if args.list:
        for k, v in CONTROLLERS.items():
            print(f"{k:24s} {v}")
        raise SystemExit(0)
    return validate_config(cfg)


def main(argv: list[str] | None = None) -> list[dict]:
    return run_comparison(parse_args(argv))


if __name__ == "__main__":
    main()
