"""Plot the tiny training runs' loss curves into docs/img/ (needs matplotlib: pip install '.[dev]').

Usage: python docs/plot_training.py [RUN_DIR ...]   (default: runs/tiny/{t2i,stage1,stage1_scratch,stage2})

Reads each run's metrics.jsonl. A resumed run appends to that file and re-logs the steps after
its checkpoint, so records are de-duplicated by step (the last record of a step wins).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DEFAULT = ["runs/tiny/t2i", "runs/tiny/stage1", "runs/tiny/stage1_scratch", "runs/tiny/stage2"]


def records(run: Path) -> list[dict]:
    rows: dict[int, dict] = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        rows[rec["step"]] = rec  # the last record of a step wins (resumed runs re-log steps)
    return [rows[s] for s in sorted(rows)]


def main() -> None:
    runs = [Path(p) for p in (sys.argv[1:] or DEFAULT)]
    out = Path(__file__).parent / "img"
    out.mkdir(exist_ok=True)
    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 3.4), squeeze=False)
    for ax, run in zip(axes[0], runs):
        recs = records(run)
        ax.plot([r["step"] for r in recs], [r["loss"] for r in recs], label="train", lw=1)
        val = [r for r in recs if "val_loss" in r]
        ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", label="validation", ms=3)
        ax.set_title(run.name)
        ax.set_xlabel("step")
        ax.set_ylabel("cross-entropy (image tokens)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "tiny_training.png", dpi=110)
    print(f"wrote {out / 'tiny_training.png'}")


if __name__ == "__main__":
    main()
