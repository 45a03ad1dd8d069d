"""Speed of a planning rollout: fused CfC rollout (``fast=True``) vs the stock ncps forward, in one run.

``python evaluate/bench_rollout.py [--checkpoint runs/artifacts/world_model/best.pt] [--threads 1]``

Measures, for each batch size, the time of ``model.rollout`` over the planner's horizon with
frozen weights, as the planners call it: forward + backward w.r.t. the actions through the
rollout and the sequence energy (Langevin planning) and forward only under ``no_grad``
(CEM/MPPI/random shooting); checks that both paths agree (states and action gradients). The
two paths are timed in alternating blocks and each keeps its best block, so a load change on a
shared machine hits both alike. Without a checkpoint a freshly initialised default model is
timed (the speed does not depend on the weights).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eblnn_agent.checkpoint import load_checkpoint  # noqa: E402
from eblnn_agent.model import EBLNN  # noqa: E402
from planners.factories import DEFAULT_HORIZON  # noqa: E402


def _best_alternating(fns: dict[str, Callable[[], None]], repeats: int, blocks: int) -> dict[str, float]:
    """Best mean time per call (ms) of each function over ``blocks`` blocks, the functions alternating."""
    for fn in fns.values():
        for _ in range(3):
            fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(blocks):
        for key, fn in fns.items():
            t = time.perf_counter()
            for _ in range(repeats):
                fn()
            best[key] = min(best[key], (time.perf_counter() - t) / repeats)
    return {k: v * 1e3 for k, v in best.items()}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None, help="world-model checkpoint (default: a fresh default model)")
    ap.add_argument("--batch", type=int, nargs="+", default=[32, 256], help="candidate counts")
    ap.add_argument("--horizon", type=int, default=DEFAULT_HORIZON, help="rollout length")
    ap.add_argument("--repeats", type=int, default=10, help="timed calls per block")
    ap.add_argument("--blocks", type=int, default=5, help="alternating blocks per path (the best counts)")
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

        def fwd_bwd(fast: bool, a0: torch.Tensor = acts, o: torch.Tensor = obs0, h: torch.Tensor = h0):
            a = a0.clone().requires_grad_(True)
            out = model.rollout(o, h, a, fast=fast)
            grad = torch.autograd.grad(out.obs[..., 0].sum() + model.sequence_energy(out.hidden).sum(), a)[0]
            return out.hidden.detach(), grad

        def fwd(fast: bool, a: torch.Tensor = acts, o: torch.Tensor = obs0, h: torch.Tensor = h0):
            with torch.no_grad():
                model.rollout(o, h, a, fast=fast)

        (hid_f, grad_f), (hid_s, grad_s) = fwd_bwd(True), fwd_bwd(False)
        row = {"batch": b, "horizon": args.horizon,
               "max_abs_diff_hidden": float((hid_f - hid_s).abs().max()),
               "max_rel_diff_grad": float((grad_f - grad_s).abs().max() / grad_s.abs().max())}
        t_fwd = _best_alternating({"fast": lambda: fwd(True), "stock": lambda: fwd(False)}, args.repeats, args.blocks)
        t_fb = _best_alternating({"fast": lambda: fwd_bwd(True), "stock": lambda: fwd_bwd(False)},
                                 args.repeats, args.blocks)
        for key in ("fast", "stock"):
            row[f"{key}_fwd_ms"], row[f"{key}_fwd_bwd_ms"] = t_fwd[key], t_fb[key]
        row["speedup_fwd"] = row["stock_fwd_ms"] / row["fast_fwd_ms"]
        row["speedup_fwd_bwd"] = row["stock_fwd_bwd_ms"] / row["fast_fwd_bwd_ms"]
        rows.append(row)
        print(f"B={b:4d} T={args.horizon}: forward {row['fast_fwd_ms']:.2f} ms fast vs {row['stock_fwd_ms']:.2f} ms "
              f"stock (x{row['speedup_fwd']:.2f}); forward+backward {row['fast_fwd_bwd_ms']:.2f} vs "
              f"{row['stock_fwd_bwd_ms']:.2f} ms (x{row['speedup_fwd_bwd']:.2f}); "
              f"max |dh| {row['max_abs_diff_hidden']:.1e}, max rel. grad diff {row['max_rel_diff_grad']:.1e}")
    result = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s), "
                         f"torch {torch.__version__}", "rows": rows}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return result


if __name__ == "__main__":
    main()
