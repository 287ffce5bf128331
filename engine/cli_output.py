"""What ``condiff-engine`` shows: progress bars (or a log line every 30 s without a terminal), ``--json`` output and
the evaluation tables."""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.cli_options import JSON_STDOUT

if TYPE_CHECKING:
    from engine.evaluation_records import EvaluationReport, SyntheticReport

logger = logging.getLogger("engine.cli")


def progress_bar(total: int, desc: str, unit: str) -> Any:
    from tqdm import tqdm  # noqa: PLC0415

    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr,
                disable=None)  # disable=None: no bar when stderr is not a terminal


class BarCallback:
    """Adapts engine progress reports to a tqdm bar (loss and other text go in the postfix)."""

    def __init__(self, total: int, desc: str, unit: str) -> None:
        self.bar = progress_bar(total, desc, unit)
        self.last_log = 0.0

    def __call__(self, progress: Any) -> None:
        self.bar.total = progress.total
        self.bar.n = progress.done
        if progress.message:
            self.bar.set_postfix_str(progress.message, refresh=False)
        self.bar.refresh()
        now = time.monotonic()
        if self.bar.disable and now - self.last_log > 30:  # no terminal: a log line every 30 s instead
            self.last_log = now
            eta = progress.eta_s
            logger.info("%d/%d %s%s", progress.done, progress.total, progress.message,
                        f", {eta / 60:.1f} min left" if eta is not None else "")

    def close(self) -> None:
        self.bar.close()


def emit_json(target: str | None, data: dict[str, Any]) -> bool:
    """Print or write ``data`` as ``--json`` asks; True when it went to stdout (so the table is left out)."""
    if target is None:
        return False
    if target == JSON_STDOUT:
        print(json.dumps(data, indent=2))
        return True
    from engine.writers import atomic_write_json  # noqa: PLC0415

    atomic_write_json(Path(target), data)
    return False


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f} %"


def print_table(report: EvaluationReport | SyntheticReport) -> None:
    from engine.evaluation_records import HEADLINE, EvaluationReport, SyntheticReport  # noqa: PLC0415

    detection = report.detection
    rows = [("model", detection.scores), ("random", detection.random), ("noise restoration", detection.noise),
            ("brain area", detection.brain_area)]
    print(f"{'':20s} {'AP_i':>7s} {'AUROC':>7s} {'AP_p':>7s} {'maxDice':>8s}")
    for name, values in rows:
        cells = [getattr(values, k) for k in HEADLINE]
        print(f"{name:20s} " + " ".join(f"{c:7.3f}" if c is not None else f"{'-':>7s}" for c in cells))
    chance = detection.random.ap_pixel
    if chance:
        print(f"AP_p is {detection.scores.ap_pixel / chance:.2f} x chance ({chance:.3f}: the anomaly share of brain "
              "pixels)")
    counts = asdict(report.counts)
    print(", ".join(f"{value} {key.replace('_', ' ')}" for key, value in counts.items()) + f"; {report.counting}")
    if isinstance(report, EvaluationReport):
        at = report.at_threshold
        if at.threshold is not None:
            print(f"at the calibrated threshold {at.threshold:.4g}: lesion sensitivity {at.lesion_sensitivity:.3f}, "
                  f"Dice {at.dice:.3f}, non-lesion brain flagged {at.healthy_brain_flagged:.4f}")
        t = report.transfer
        if t is not None:
            print(f"on the map a user gets (each scan's grid) at {t.threshold:.4g}: sensitivity "
                  f"{pct(t.sensitivity)}, precision {pct(t.precision)}, non-lesion brain flagged "
                  f"{pct(t.nonlesion_flagged)}, brain > 10 mm from any lesion flagged {pct(t.far_flagged)}")
        if report.healthy is not None:
            h = report.healthy
            shifted = "".join(f", {k} {pct(v)}" for k, v in h.shifted_flagged.items())
            print(f"healthy ({h.scans} scans): restoration 1-SSIM {h.restoration_dssim_in_brain:.3f}, MAE "
                  f"{h.restoration_mae_in_brain:.4f}; brain flagged {pct(h.flagged_brain_fraction)}{shifted}")
    if isinstance(report, SyntheticReport):
        r = report.removal
        print(f"removal: restoration MAE inside anomalies {r.mae_to_truth:.4f} to the truth, "
              f"{r.mae_to_input:.4f} to the input; healthy slices 1-SSIM {r.healthy_dssim:.3f}")
