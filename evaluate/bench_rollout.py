"""Speed of a planning rollout: fused CfC cell (``fast=True``) vs the stock ncps forward, in one run.

``python evaluate/bench_rollout.py [--checkpoint runs/world_model/best.pt] [--threads 1]``

Measures, for each batch size, the time of ``model.rollout`` over a horizon with frozen
weights, as the planners call it: forward + backward w.r.t. the actions (Langevin
planning) and forward only under ``no_grad`` (CEM/MPPI/random shooting); checks that both
paths agree. Without a checkpoint a freshly initialised default model is timed (the speed
does not depend on the weights).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from eblnn_agent.checkpoint import load_checkpoint
from eblnn_agent.model import EBLNN


def _time(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    best = float("inf")
    for _ in range(3):  # best of three blocks: robust to other processes on a shared machine
        t = time.perf_counter()
        for _ in range(repeats):
            fn()
        best = min(best, (time.perf_counter() - t) / repeats)
    return best * 1e3


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None, help="world-model checkpoint (default: a fresh default model)")
    ap.add_argument("--batch", type=int, nargs="+", default=[32, 128, 256], help="candidate counts")
    ap.add_argument("--horizon", type=int, default=15, help="rollout length")
    ap.add_argument("--repeats", type=int, default=10, help="timed calls per block")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.checkpoint:
        model = load_checkpoint(args.checkpoint, device="cpu")[0]
    else:
        torch.manual_seed(0)
        model = EBLNN()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    rows = []
    for b in args.batch:
        g = torch.Generator().manual_seed(0)
        obs0 = model.obs_mean + model.obs_std * torch.randn(b, 8, generator=g) * 0.3
        h0 = model.step(obs0, torch.zeros(b, 2), model.initial_state(b))
        acts = torch.rand(b, args.horizon, 2, generator=g) * 2 - 1
        fast, stock = model.rollout(obs0, h0, acts, fast=True), model.rollout(obs0, h0, acts, fast=False)
        err = float((fast.hidden - stock.hidden).abs().max())
        row = {"batch": b, "horizon": args.horizon, "max_abs_diff_hidden": err}
        for fast_flag in (True, False):
            def fwd(ff=fast_flag, o=obs0, h=h0, a=acts):
                with torch.no_grad():
                    model.rollout(o, h, a, fast=ff)

            def fwd_bwd(ff=fast_flag, o=obs0, h=h0, a0=acts):
                a = a0.clone().requires_grad_(True)
                out = model.rollout(o, h, a, fast=ff)
                torch.autograd.grad(out.obs[..., 0].sum() + model.sequence_energy(out.hidden).sum(), a)

            key = "fast" if fast_flag else "stock"
            row[f"{key}_fwd_ms"] = _time(fwd, args.repeats)
            row[f"{key}_fwd_bwd_ms"] = _time(fwd_bwd, args.repeats)
        row["speedup_fwd"] = row["stock_fwd_ms"] / row["fast_fwd_ms"]
        row["speedup_fwd_bwd"] = row["stock_fwd_bwd_ms"] / row["fast_fwd_bwd_ms"]
        rows.append(row)
        print(f"B={b:4d} T={args.horizon}: forward {row['fast_fwd_ms']:.2f} ms fast vs {row['stock_fwd_ms']:.2f} ms "
              f"stock (x{row['speedup_fwd']:.2f}); forward+backward {row['fast_fwd_bwd_ms']:.2f} vs "
              f"{row['stock_fwd_bwd_ms']:.2f} ms (x{row['speedup_fwd_bwd']:.2f}); max |dh| {err:.1e}")
    result = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s), "
                         f"torch {torch.__version__}", "rows": rows}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return result


if __name__ == "__main__":
    main()
