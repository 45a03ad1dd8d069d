"""Calibrate the run-time trust monitor of a world model: ``python evaluate/calibrate_trust.py --checkpoint best.pt``.

Wiring only (:func:`planners.trust.calibrate_checkpoint`): runs the monitor over in-distribution
validation episodes (PI on the nominal plant, the training scenario mix, calibration seeds), sets
the alarm threshold at the lowest level whose alarms stay within the false-alarm target there,
and writes ``trust_calibration.json`` beside the checkpoint (the ``eblnn-supervised`` controller reads it).
"""

from __future__ import annotations

import argparse

import torch

from planners.trust import SCORES, TrustConfig, calibrate_checkpoint


def main(argv: list[str] | None = None):
    d = TrustConfig()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="world-model checkpoint (best.pt)")
    p.add_argument("--score", default=d.score, choices=SCORES, help=f"trust score (default {d.score})")
    p.add_argument("--false_alarm_target", type=float, default=d.false_alarm_target,
                   help=f"share of validation steps the alarm may be on (default {d.false_alarm_target})")
    p.add_argument("--episodes", type=int, default=32, help="calibration episodes")
    args = p.parse_args(argv)
    if args.episodes < 1:
        p.error(f"--episodes={args.episodes} must be >= 1")
    torch.set_num_threads(1)
    cfg = TrustConfig(score=args.score, false_alarm_target=args.false_alarm_target)
    return calibrate_checkpoint(args.checkpoint, cfg, episodes=args.episodes)


if __name__ == "__main__":
    main()
