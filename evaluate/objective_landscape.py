"""The planning objective over burner excess air: on the learned world model and on the true physics.

    python evaluate/objective_landscape.py --checkpoint runs/artifacts/world_model/best.pt \\
        --scenario nominal --seed 900300 --at 80 160
    python evaluate/objective_landscape.py ... --set co_backoff=0 o2_backoff=0   # planner options

The EB-LNN planner controls one episode. At each step of ``--at`` its objective is evaluated on
constant plans over a grid of burner air ratios ``lambda`` (the planner's ratio coordinate, at
nominal fuel quality) and fuel commands around the one applied, and for each ``lambda`` the best
over the fuel grid is reported for: the planner's objective; the same without the energy term;
its stage cost alone (tracking, fuel, CO and O2 terms with the planner's back-offs); and the true
cost of the same env actions on the true physics from the plant's true state (the oracle's
objective: the env's own weights, no back-offs, no cost-to-go). Where the columns put their
minimum says which term holds the planner's excess air where the truth would not.

Over the whole episode it also reports the first step of each plan against the plan's next ten
(a receding-horizon plan that keeps postponing a change shows as a first step that differs from
the rest). Tuning-range seeds (below 10 000) keep the evaluation seeds untouched.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import gymnasium as gym  # noqa: E402

import furnace_env  # noqa: E402,F401
from planners.factories import make_eblnn_planner, parse_options  # noqa: E402
from planners.oracle import OracleConfig, OracleModel  # noqa: E402

DEFAULT_LAMBDAS = (1.0, 1.03, 1.06, 1.09, 1.12, 1.15, 1.2, 1.25, 1.3)
COLUMNS = ("objective", "without_energy", "stage_cost", "true_cost")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="runs/artifacts/world_model/best.pt")
    p.add_argument("--scenario", default="nominal")
    p.add_argument("--seed", type=int, default=900_300, help="episode seed (keep below 10 000 for tuning)")
    p.add_argument("--at", type=int, nargs="+", default=[80, 160], help="control steps to map the objective at")
    p.add_argument("--lambdas", type=float, nargs="+", default=list(DEFAULT_LAMBDAS),
                   help="burner air ratios of the constant plans")
    p.add_argument("--fuel_span", type=float, default=0.12, help="fuel commands applied +- this (action units)")
    p.add_argument("--fuel_points", type=int, default=25)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="planner options (make_eblnn_planner keywords, e.g. beta=0 co_backoff=0.5)")
    p.add_argument("--json", default=None, help="also write the results here")
    a = p.parse_args(argv)
    if not a.at or min(a.at) < 1:
        p.error(f"--at {a.at}: steps must be >= 1")
    if a.fuel_points < 1 or not a.fuel_span >= 0:
        p.error(f"--fuel_points {a.fuel_points} must be >= 1 and --fuel_span {a.fuel_span} >= 0")
    if min(a.lambdas) <= 0:
        p.error(f"--lambdas {a.lambdas}: air ratios must be > 0")
    try:
        a.options = parse_options(a.set)
    except ValueError as err:
        p.error(f"--set: {err}")
    return a


def air_ratio(u1, excess_air) -> np.ndarray:
    """Burner air ratio lambda of the excess-air search coordinate ``u1`` in [-1, 1]."""
    lo, hi = excess_air
    return 1.0 + lo + (hi - lo) * 0.5 * (np.clip(u1, -1.0, 1.0) + 1.0)


def air_coordinate(lam, excess_air) -> np.ndarray:
    """The excess-air search coordinate of air ratios ``lam`` (inverse of :func:`air_ratio`)."""
    lo, hi = excess_air
    return 2.0 * (np.asarray(lam) - 1.0 - lo) / (hi - lo) - 1.0


def landscape(ctl, oracle: OracleModel, obs: np.ndarray, lambdas, fuel_span: float, fuel_points: int) -> dict:
    """Best-over-fuel value of each column at each lambda, from the planner's current state.

    Call after the controller has filtered ``obs`` (i.e. right after its ``predict``), so the
    model state and the env are at the same step.
    """
    pm = ctl.model
    fuel_u = float(pm.encode(np.asarray(obs[6:8], dtype=np.float64))[0])
    dfuel = np.linspace(-fuel_span, fuel_span, fuel_points)
    lam_u = air_coordinate(lambdas, pm.cfg.excess_air)
    grid_f, grid_l = np.meshgrid(np.clip(fuel_u + dfuel, -1.0, 1.0), lam_u, indexing="ij")
    horizon = ctl.trajopt.horizon
    u = torch.tensor(np.stack([grid_f.ravel(), grid_l.ravel()], -1), dtype=torch.float32)
    u = u[:, None, :].expand(-1, horizon, -1).contiguous()
    with torch.no_grad():
        parts = pm.make_objective(obs, terms=True)(u)
        env_actions = pm.to_actions(u).double().numpy()
    total = sum(parts.values())
    q = oracle.quality()
    true = oracle.make_objective()(torch.from_numpy(oracle.encode(env_actions, q))).double()
    cols = {"objective": total, "without_energy": total - parts["energy"],
            "stage_cost": parts["track"] + parts["fuel"] + parts["co"] + parts["o2"], "true_cost": true}
    shape = grid_f.shape
    rows = []
    for j, lam in enumerate(lambdas):
        row = {"lambda": float(lam)}
        for name, v in cols.items():
            vals = v.detach().double().numpy().reshape(shape)[:, j]
            k = int(np.argmin(vals))
            row[name] = float(vals[k])
            row[f"{name}_dfuel"] = float(dfuel[k])
        rows.append(row)
    best = {name: float(lambdas[int(np.argmin([r[name] for r in rows]))]) for name in COLUMNS}
    return {"applied_lambda": float(air_ratio(pm.encode(np.asarray(obs[6:8]))[1], pm.cfg.excess_air)),
            "fuel_quality": q, "rows": rows, "argmin_lambda": best}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(1)
    env = gym.make("Furnace-v0", scenario=args.scenario)
    ctl = make_eblnn_planner(env, args.checkpoint, **args.options)
    oracle = OracleModel(env, OracleConfig(coords="ratio"))
    excess_air = ctl.model.cfg.excess_air
    obs, _ = env.reset(seed=args.seed)
    ctl.reset()
    maps, first, later = {}, [], []
    step, done = 0, False
    while not done:
        action, _ = ctl.predict(obs)
        plan = ctl.last_plan.actions.detach().double().numpy()
        first.append(air_ratio(plan[0, 1], excess_air))
        later.append(air_ratio(plan[1:11, 1], excess_air).mean())
        if step in args.at:
            m = maps[step] = landscape(ctl, oracle, obs, args.lambdas, args.fuel_span, args.fuel_points)
            print(f"step {step}: T {obs[0]:.0f} K, setpoint {obs[1]:.0f} K, O2 {obs[2]:.2f} %, CO {obs[3]:.0f} ppm, "
                  f"applied lambda {m['applied_lambda']:.3f}, fuel quality {m['fuel_quality']:.3f}")
            print("  lambda | " + " | ".join(f"{c:>14s}" for c in COLUMNS) + "   (best over the fuel grid)")
            for r in m["rows"]:
                print(f"  {r['lambda']:6.3f} | " + " | ".join(f"{r[c]:14.1f}" for c in COLUMNS))
            print("  argmin | " + " | ".join(f"{m['argmin_lambda'][c]:14.3f}" for c in COLUMNS))
        obs, _, terminated, truncated, _ = env.step(action)
        done = terminated or truncated
        step += 1
    missing = sorted(set(args.at) - set(maps))
    if missing:
        print(f"steps {missing} are beyond the episode's {step} steps: not mapped")
    f, lt = np.asarray(first), np.asarray(later)
    skip = min(20, len(f) - 1)  # the start-up transient
    summary = {"first_step_lambda": float(f[skip:].mean()), "plan_steps_2_11_lambda": float(lt[skip:].mean())}
    print(f"over steps {skip}-{step - 1}: first plan step lambda {summary['first_step_lambda']:.3f}, "
          f"plan steps 2-11 {summary['plan_steps_2_11_lambda']:.3f}")
    result = {"args": {k: v for k, v in vars(args).items() if k != "set"}, "maps": maps, "episode": summary}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
