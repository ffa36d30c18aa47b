"""DET curves: computed from the scores behind the operating points, drawn on log axes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gate.errors import EvalError
from gate.eval import det
from tests.support import tool


def _scores(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(0.7, 0.1, 2000), rng.normal(0.1, 0.1, 5000)


def test_the_curve_trades_misses_for_false_positives_and_stops_where_data_runs_out():
    pos, neg = _scores()
    c = det.curve("m", np.ones(pos.size, bool), pos, neg)
    assert c.fpr[0] >= 10 / neg.size * 0.99 and c.fpr[-1] > 0.5
    assert list(c.fpr) == sorted(c.fpr)
    assert all(a >= b for a, b in zip(c.fnr, c.fnr[1:], strict=False))
    # Each point is the rate actually realised at its threshold.
    t = np.sort(neg)[::-1][int(0.01 * neg.size)]
    assert np.mean(pos >= t) == pytest.approx(1 - np.interp(0.01, c.fpr, c.fnr), abs=0.02)
    # Pooled searches of few distinct strangers: the curve starts further right.
    short = det.curve("m", np.ones(pos.size, bool), pos, neg, distinct=100)
    assert short.fpr[0] >= 0.1 * 0.99
    # A wrong identity returned is a miss at any threshold.
    wrong = det.curve("m", np.zeros(pos.size, bool), pos, neg)
    assert set(wrong.fnr) == {1.0}
    with pytest.raises(EvalError):
        det.curve("m", np.ones(0, bool), np.zeros(0), neg)


def test_png_and_text_plots_are_written(tmp_path):
    pos, neg = _scores()
    curves = [det.curve("a", np.ones(pos.size, bool), pos, neg),
              det.curve("b", np.ones(pos.size, bool), pos - 0.1, neg)]
    det.plot(curves, tmp_path / "det.png", title="t")
    assert (tmp_path / "det.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    det.plot(curves, tmp_path / "det.txt", title="t")
    text = (tmp_path / "det.txt").read_text()
    assert "o  a" in text and "x  b" in text and "FPIR" in text
    body = text.split("+---")[0]
    assert body.count("o") > 5 and body.count("x") > 5


def test_the_plot_tool_draws_the_curves_of_reports_and_refuses_reports_without(tmp_path):
    pos, neg = _scores()
    c = det.curve("1000 enrolled", np.ones(pos.size, bool), pos, neg)
    report = {"model": "m", "results": [{"det": c.as_dict()}]}
    (tmp_path / "r.json").write_text(json.dumps(report))
    assert [x.label for x in det.curves_of(report)] == ["m: 1000 enrolled"]
    det_plot = tool("det_plot")
    assert det_plot.main([str(tmp_path / "r.json"), "--out", str(tmp_path / "d.txt")]) == 0
    assert "m: 1000 enrolled" in (tmp_path / "d.txt").read_text()
    (tmp_path / "none.json").write_text(json.dumps({"model": "m", "mode": "folder"}))
    assert det_plot.main([str(tmp_path / "none.json"), "--out", str(tmp_path / "e.txt")]) == 1
