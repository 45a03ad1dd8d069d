"""Tune the EB-LNN planner's objective and budget on training-mix episodes (never the evaluation seeds).

    python evaluate/tune_planner.py --checkpoint runs/artifacts/world_model/best.pt
    python evaluate/tune_planner.py --grid beta=0,0.01,0.03 smooth=0.5 horizon=12 --episodes 4
    python evaluate/tune_planner.py --grid co_backoff=0,0.5 excess_air=-0.05:1.0,0.08:1.0

    python evaluate/tune_planner.py --scenario eval --steps 0 --episodes 2 --grid beta=0,0.1
    python evaluate/tune_planner.py --scenario eval --steps 0 --grid optimizer=cem init_std=0.1 optimizer.beta=2,3
    python evaluate/tune_planner.py --scenario eval --steps 0 --grid checkpoint=a/best.pt,b/best.pt,a/best.pt:b/best.pt

(``optimizer.<name>`` sets an optimiser option that an objective option shadows, e.g. CEM's noise
colour ``optimizer.beta`` beside the energy weight ``beta``; ``a:b`` as a checkpoint plans on the
ensemble of both models.)

Every grid point runs the planner and the reference PI controller on the same tuning episodes
(:mod:`planners.tuning`, which does the work; the training mix by default, or named scenarios,
``eval`` for the ``tune`` family; test-family scenarios are refused) and prints each one's margin over PI.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eblnn_agent.cli import parse_dataclass_args  # noqa: E402
from planners.tuning import TuneConfig, tune  # noqa: E402


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cfg, _ = parse_dataclass_args(TuneConfig, argv, parser=parser)
    try:
        return tune(cfg, report=lambda line: print(line, flush=True))
    except ValueError as err:
        parser.error(str(err))


if __name__ == "__main__":
    main()
