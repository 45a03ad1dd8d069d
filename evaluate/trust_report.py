"""Measure the run-time trust monitor on the planner's closed loop: ``python evaluate/trust_report.py``.

    python evaluate/trust_report.py --family tune --grid score=energy,innovation detector=window,cusum
    python evaluate/trust_report.py --family test --seeds 5 \
        --checkpoints runs/artifacts/world_model/best.pt runs/artifacts/world_model/seed_1/best.pt

Wiring only (:func:`planners.trust_eval.run_trust_report`): the EB-LNN planner runs each scenario of
the family (cached under ``--out``/episodes), each monitor setting is calibrated and replayed over
those records; the report gives false alarms on in-range steps and how soon each plant change out
of the training range is alarmed. Choose settings on ``--family tune``; ``--family test`` is for the record.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eblnn_agent.cli import parse_dataclass_args  # noqa: E402
from planners.trust_eval import TrustReportConfig, run_trust_report  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    import torch

    cfg, _ = parse_dataclass_args(TrustReportConfig, argv, description=__doc__.splitlines()[0])
    torch.set_num_threads(1)
    try:
        return run_trust_report(cfg)
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"trust_report: {err}") from err


if __name__ == "__main__":
    main()
