"""Calibrate the run-time trust monitor of a world model: ``python evaluate/calibrate_trust.py --checkpoint best.pt``.

Wiring only (:func:`planners.trust.calibrate_checkpoint`): runs the monitor over in-distribution
validation episodes (the training scenario mix from the calibration seeds, driven by PI or by the
EB-LNN planner itself, ``--calibrate_on``), sets the alarm threshold at the lowest level whose
alarms stay within the false-alarm target there, and writes ``trust_calibration.json`` beside the
checkpoint (the ``eblnn-supervised`` controller reads it). Every :class:`~planners.trust.TrustConfig`
field is a flag.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eblnn_agent.cli import ConfigError, add_dataclass_flags, apply_overrides  # noqa: E402
from eblnn_agent.utils import check_file_target  # noqa: E402
from planners.factories import planner_options  # noqa: E402
from planners.trust import (  # noqa: E402
    CALIBRATION_EPISODES,
    TrustConfig,
    calibrate_checkpoint,
    default_calibration_path,
)


def main(argv: list[str] | None = None):
    import dataclasses

    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="world-model checkpoint (best.pt)")
    p.add_argument("--episodes", type=int, default=CALIBRATION_EPISODES,
                   help=f"calibration episodes (default {CALIBRATION_EPISODES})")
    p.add_argument("--planner_set", nargs="*", default=[],
                   help="planner options KEY=VALUE for --calibrate_on planner (as the comparison's)")
    p.add_argument("--workers", type=int, default=2, help="processes for the planner's episodes")
    add_dataclass_flags(p, TrustConfig)
    args = p.parse_args(argv)
    if args.episodes < 1:
        p.error(f"--episodes={args.episodes} must be >= 1")
    if args.workers < 0:
        p.error(f"--workers={args.workers} must be >= 0 (0 or 1: in this process)")
    try:
        cfg = apply_overrides(TrustConfig(), {f.name: getattr(args, f.name) for f in dataclasses.fields(TrustConfig)},
                              "command line")
        options = planner_options(args.planner_set)
    except (ConfigError, ValueError) as err:
        p.error(str(err))
    if options and cfg.calibrate_on != "planner":
        p.error(f"--planner_set {args.planner_set}: planner options apply with --calibrate_on planner only "
                f"(PI drives the episodes with --calibrate_on {cfg.calibrate_on})")
    if not Path(args.checkpoint).is_file():
        p.error(f"--checkpoint {args.checkpoint!r}: no such file; train one with python train/world_model.py")
    try:
        check_file_target(default_calibration_path(args.checkpoint), "the calibration beside --checkpoint")
    except ValueError as err:
        p.error(str(err))
    torch.set_num_threads(1)
    return calibrate_checkpoint(args.checkpoint, cfg, episodes=args.episodes, planner_options=options,
                                workers=args.workers)


if __name__ == "__main__":
    main()
