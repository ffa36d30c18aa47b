"""Detection error trade-off (DET) curves: miss rate against false-positive rate.

A curve is computed from the same pooled search (or pair) scores the report's operating
points come from, and stops where the false-positive rate rests on fewer than
:data:`~gate.eval.metrics.MIN_DISTINCT_EVENTS` distinct negatives: further left it would
be drawn through a handful of images. Drawing needs matplotlib (the ``dev`` extra), which
is imported only by :func:`plot`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gate.errors import EvalError
from gate.eval.metrics import MIN_DISTINCT_EVENTS
from gate.types import Array

#: Points per decade of false-positive rate.
PER_DECADE = 12


@dataclass(frozen=True)
class Curve:
    """One DET curve: ``fnr[k]`` is the miss rate where the false-positive rate is
    ``fpr[k]`` (ascending)."""

    label: str
    fpr: tuple[float, ...]
    fnr: tuple[float, ...]

    def as_dict(self) -> dict[str, object]:
        """JSON form (reports carry their curves)."""
        return {"label": self.label, "fpr": list(self.fpr), "fnr": list(self.fnr)}


def curve(label: str, hits: Array, positives: Array, negatives: Array, *,
          distinct: int | None = None) -> Curve:
    """DET curve from scores.

    ``positives`` are the scores of mated searches (or genuine pairs), ``hits`` whether
    each returned the right identity at all (all True for pairs), ``negatives`` the
    scores of non-mated searches (or impostor pairs); ``-inf`` means no candidate.
    """
    pos = np.asarray(positives, np.float64)
    ok = np.asarray(hits, bool)
    neg = np.sort(np.asarray(negatives, np.float64))[::-1]
    if pos.size == 0 or neg.size == 0 or ok.shape != pos.shape:
        raise EvalError("a DET curve needs positives and negatives")
    n = distinct or neg.size
    lowest = MIN_DISTINCT_EVENTS / n
    if lowest >= 1:
        return Curve(label, (), ())
    fprs, fnrs = [], []
    steps = math.ceil(-math.log10(lowest) * PER_DECADE)
    for k in range(steps + 1):
        target = lowest * 10 ** (k / PER_DECADE)
        if target > 1:
            break
        allowed = math.floor(target * neg.size + 1e-9)
        if allowed >= neg.size:
            t, fpr = -math.inf, 1.0
        else:
            # Just above the (allowed+1)-th highest negative: at most ``allowed`` pass.
            t = float(np.nextafter(neg[allowed], math.inf))
            fpr = float(np.mean(neg >= t))
        fnr = float(1.0 - np.mean(ok & (pos >= t)))
        fprs.append(fpr)
        fnrs.append(fnr)
    return Curve(label, tuple(fprs), tuple(fnrs))


def curves_of(report: dict[str, Any]) -> list[Curve]:
    """The DET curves a ``gatectl eval --json`` report carries, labelled with its model."""
    raw = [r["det"] for r in report.get("results", []) if "det" in r]
    if "det" in report:
        raw.append(report["det"])
    return [Curve(f"{report['model']}: {c['label']}", tuple(c["fpr"]), tuple(c["fnr"]))
            for c in raw]


#: Marks of the text plot's curves, in order.
MARKS = "ox+*#@"


def text_plot(curves: Sequence[Curve], *, xlabel: str = "FPIR", ylabel: str = "FNIR",
              width: int = 60, height: int = 14, x_range: tuple[float, float] = (1e-4, 1.0),
              y_range: tuple[float, float] = (1e-3, 1.0)) -> str:
    """The curves as a log-log character plot (for a README, a terminal, a commit that must
    not carry a picture); the legend follows it."""
    lx0, lx1 = (math.log10(v) for v in x_range)
    ly0, ly1 = (math.log10(v) for v in y_range)
    grid = [[" "] * width for _ in range(height)]
    for mark, c in zip(MARKS, curves, strict=False):
        for x, y in zip(c.fpr, c.fnr, strict=True):
            if x <= 0 or not x_range[0] <= x <= x_range[1]:
                continue
            shown = min(max(y, y_range[0]), y_range[1])
            col = round((math.log10(x) - lx0) / (lx1 - lx0) * (width - 1))
            row = round((ly1 - math.log10(shown)) / (ly1 - ly0) * (height - 1))
            grid[row][col] = mark
    decades = {round((ly1 - e) / (ly1 - ly0) * (height - 1)): f"{10.0 ** e:g}"
               for e in range(math.ceil(ly0), math.floor(ly1) + 1)}
    lines = [f"{decades.get(r, ''):>7} |{''.join(cells)}" for r, cells in enumerate(grid)]
    lines.append(" " * 8 + "+" + "-" * width)
    ticks = {e: f"{10.0 ** e:g}" for e in range(math.ceil(lx0), math.floor(lx1) + 1)}
    axis = [" "] * (width + 16)
    for e, t in ticks.items():
        at = 9 + round((e - lx0) / (lx1 - lx0) * (width - 1)) - len(t) // 2
        for j, ch in enumerate(t):
            if 0 <= at + j < len(axis):
                axis[at + j] = ch
    lines.append("".join(axis).rstrip())
    lines.append(f"{' ' * 9}{xlabel} →, {ylabel} ↑ (both log)")
    lines += [f"  {mark}  {c.label}" for mark, c in zip(MARKS, curves, strict=False)]
    return "\n".join(lines)


def plot(curves: Sequence[Curve], path: Path, *, title: str, xlabel: str = "FPIR",
         ylabel: str = "FNIR") -> None:
    """Draw ``curves`` on log axes into ``path``: a PNG, or a text plot for ``.txt``."""
    if path.suffix == ".txt":
        path.write_text(f"{title}\n\n{text_plot(curves, xlabel=xlabel, ylabel=ylabel)}\n",
                        encoding="utf-8")
        return
    import matplotlib  # the dev extra; never needed on a gate

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=100)
    try:
        for c in curves:
            if c.fpr:
                ax.plot(c.fpr, [max(v, 1e-4) for v in c.fnr], label=c.label, linewidth=1.6)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{ylabel} (floored at 1e-4)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", linewidth=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
