"""One-step and open-loop errors of a world model on plants in and out of its training range.

    python evaluate/world_model_generalisation.py --checkpoint runs/artifacts/world_model/best.pt
    python evaluate/world_model_generalisation.py --checkpoint a/best.pt --cases cases.json --seeds 0 1 2 3 4

Runs each case (a scenario on a plant, :data:`eblnn_agent.generalisation.DEFAULT_CASES` unless
``--cases`` names a JSON list of ``{name, scenario, plant, in_range}``) under the reference PI,
and writes ``generalisation.json`` and ``generalisation.md`` (one row per case: RMSE one step and
``--horizon`` steps ahead per channel, then the out-of-range / in-range ratio) to ``--out_dir``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eblnn_agent.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from eblnn_agent.generalisation import (  # noqa: E402
    DEFAULT_CASES,
    cases_from_dicts,
    generalisation_report,
    markdown_table,
)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="runs/artifacts/world_model/best.pt", help="world-model checkpoint")
    ap.add_argument("--cases", default=None, help="JSON list of cases (default: the module's DEFAULT_CASES)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="episode seeds of every case")
    ap.add_argument("--horizon", type=int, default=20, help="open-loop horizon, steps")
    ap.add_argument("--out_dir", default=None, help="where to write the report (default: the checkpoint's folder)")
    ap.add_argument("--device", default="cpu", help="torch device")
    args = ap.parse_args(argv)
    if args.horizon < 1:
        ap.error(f"--horizon {args.horizon}: expected >= 1")
    cases = DEFAULT_CASES
    if args.cases is not None:
        try:
            cases = cases_from_dicts(json.loads(Path(args.cases).read_text()))
        except (OSError, json.JSONDecodeError, ValueError) as err:
            ap.error(f"--cases {args.cases}: {err}")
    model, _, _ = load_checkpoint(args.checkpoint, device=args.device)
    report = generalisation_report(model, cases, args.seeds, args.horizon, args.device)
    report["checkpoint"] = str(args.checkpoint)
    out = Path(args.out_dir) if args.out_dir else Path(args.checkpoint).parent
    out.mkdir(parents=True, exist_ok=True)
    (out / "generalisation.json").write_text(json.dumps(report, indent=2))
    table = markdown_table(report)
    (out / "generalisation.md").write_text(f"World model `{args.checkpoint}`, seeds {args.seeds}, RMSE\n\n{table}")
    print(table, end="")
    return report


if __name__ == "__main__":
    try:
        main()
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
