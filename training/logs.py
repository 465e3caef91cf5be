"""A run's logs: CSV files of one row per step, and the loss curve drawn from them."""
from __future__ import annotations

import csv
import io
from pathlib import Path

from common.atomic import atomic_path, write_text


def read_log(path: str | Path) -> list[dict]:
    """The rows of a run's CSV log (strings, as written); [] when there is none yet."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class CsvLog:
    """A CSV file of rows keyed by "step", appended and flushed row by row. Rows after
    ``keep_through_step`` (written by a run that died after its last checkpoint) are dropped on opening,
    so a resumed run's log reads as one uninterrupted run."""

    def __init__(self, path: Path, keep_through_step: int):
        self.path, self.rows, self._file, self._writer = Path(path), [], None, None
        if self.path.exists():
            self.rows = [r for r in read_log(self.path) if int(r["step"]) <= keep_through_step]
            if self.rows:
                text = io.StringIO()
                writer = csv.DictWriter(text, fieldnames=list(self.rows[0]))
                writer.writeheader()
                writer.writerows(self.rows)
                write_text(self.path, text.getvalue())
            else:
                self.path.unlink()

    def write(self, row: dict) -> None:
        if self._writer is None:
            fields = list(self.rows[0]) if self.rows else list(row)
            self._file = open(self.path, "a", newline="")
            self._writer = csv.DictWriter(self._file, fieldnames=fields, extrasaction="ignore")
            if not self.rows:
                self._writer.writeheader()
        self._writer.writerow(row)
        self._file.flush()
        self.rows.append(row)

    def __enter__(self) -> "CsvLog":
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            self._file.close()
            self._file = self._writer = None


def plot_losses(train_rows: list[dict], val_rows: list[dict], path: Path) -> None:
    """Training loss per step and validation loss, as a PNG. Drawn on a plain Figure: no pyplot state and
    no backend switch, so it is safe in any process (farm jobs, notebooks, many runs)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    if train_rows:
        ax.plot([int(r["step"]) for r in train_rows], [float(r["loss"]) for r in train_rows], lw=1, label="train")
    if val_rows:
        ax.plot([int(r["step"]) for r in val_rows], [float(r["loss"]) for r in val_rows], "o-", label="val")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    if train_rows or val_rows:
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
