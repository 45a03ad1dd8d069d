"""Calibrate the run-time trust monitor of a world model: ``python evaluate/calibrate_trust.py --checkpoint best.pt``.

Wiring only (:func:`planners.trust.calibrate_checkpoint`): runs the monitor over the validation split
of the checkpoint's own data, sets the alarm threshold at a quantile of the trust score there, and
writes ``trust_calibration.json`` beside the checkpoint (the ``eblnn-supervised`` controller reads it).
"""

from __future__ import annotations

import argparse

import torch

from planners.trust import SCORES, TrustConfig, calibrate_checkpoint


def main(argv: list[str] | None = None):
    d = TrustConfig()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="world-model checkpoint (best.pt)")
    p.add_argument("--data_path", default=None, help="its dataset (default: the checkpoint config's data_path)")
    p.add_argument("--score", default=d.score, choices=SCORES, help=f"trust score (default {d.score})")
    p.add_argument("--quantile", type=float, default=d.quantile, help=f"alarm quantile (default {d.quantile})")
    p.add_argument("--max_episodes", type=int, default=64, help="validation episodes used")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cfg = TrustConfig(score=args.score, quantile=args.quantile)
    return calibrate_checkpoint(args.checkpoint, cfg, data_path=args.data_path, max_episodes=args.max_episodes)


if __name__ == "__main__":
    main()
