"""The state estimator's gains for a world model (``ObjectiveConfig.state_gain``).

    python evaluate/estimator_gains.py --checkpoint runs/artifacts/world_model/best.pt

Collects fresh episodes (a seed the training data never used; the training mix by default),
measures the model's one-step error per channel on them and prints the steady-state gains of
:mod:`planners.estimate`, with the ``state_gain=...`` option that passes them to a planner.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eblnn_agent.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from eblnn_agent.data import collect_transitions  # noqa: E402
from planners.estimate import ESTIMATED_CHANNELS, estimate_gains  # noqa: E402

#: Seed of the held-out episodes (the training data is collected with seeds 0, 1, ...).
HELD_OUT_SEED = 770_001


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="runs/artifacts/world_model/best.pt", help="world-model checkpoint")
    ap.add_argument("--n_env_steps", type=int, default=20_000, help="steps of held-out episodes to collect")
    ap.add_argument("--scenario", default="train_mix", help="scenario of the held-out episodes")
    ap.add_argument("--seed", type=int, default=HELD_OUT_SEED, help="seed of the held-out episodes")
    ap.add_argument("--num_envs", type=int, default=16, help="furnaces collected at once")
    ap.add_argument("--out", default=None, help="write the result as JSON here")
    args = ap.parse_args(argv)
    if args.n_env_steps < 1:
        ap.error(f"--n_env_steps {args.n_env_steps}: expected >= 1")
    model, _, _ = load_checkpoint(args.checkpoint)
    model.eval()
    data = collect_transitions(args.n_env_steps, args.seed, args.scenario, num_envs=args.num_envs)
    est = estimate_gains(model, data)
    names = ("temperature", "o2", "co", "fuel_flow", "air_flow")
    result = {"checkpoint": str(args.checkpoint), "episodes": data.n_episodes, "transitions": data.env_steps,
              "channels": {n: {"gain": g, "one_step_mse": m, "noise_var": r}
                           for n, g, m, r in zip(names, est.gains, est.one_step_mse, est.noise_var, strict=True)},
              "option": "state_gain=" + ":".join(f"{g:.3g}" for g in est.gains)}
    assert len(names) == len(ESTIMATED_CHANNELS)
    for n, v in result["channels"].items():
        print(f"{n:12s} gain {v['gain']:.3f}  one-step MSE {v['one_step_mse']:.4g}  noise variance {v['noise_var']:.4g}")
    print(result["option"])
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    try:
        main()
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
