"""gatectl: called as main([...]); exit codes mean something, errors are one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

import numpy as np
import pytest

from gate.cli.main import main
from gate.exitcodes import EXIT_CONFIG, EXIT_DATA, EXIT_MODELS, EXIT_OK, EXIT_USAGE
from gate.models import manifest
from gate.sim import demo as demo_module
from gate.sim.demo import main as demo
from gate.sim.lane import SimulatedLane
from tests.support import PORTRAITS


@pytest.fixture
def cfg_file(tmp_path, models_dir) -> Path:
    f = tmp_path / "gate.toml"
    f.write_text(f'[models]\ndir = "{models_dir}"\nthreads = 1\n')
    return f


@pytest.fixture
def people(tmp_path, photos) -> Path:
    """A folder-per-person set made of links to the test photos (nothing copied)."""
    root = tmp_path / "people"
    for person, names in {"obama": ["obama.jpg", "obama3.jpg", "obama2.jpg"],
                          "biden": ["biden.jpg"]}.items():
        (root / person).mkdir(parents=True)
        for n in names:
            (root / person / n).symlink_to(photos / n)
    return root


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("gatectl: ") and "\n" not in err and "Traceback" not in err
    return err


def test_models_lists_and_verifies(cfg_file, capsys):
    assert main(["--config", str(cfg_file), "models", "--json"]) == EXIT_OK
    out = json.loads(capsys.readouterr().out)
    assert {r["status"] for r in out["files"]} == {"ok"}
    assert len(out["files"]) == len(manifest()) == 9
    assert main(["--config", str(cfg_file), "models"]) == EXIT_OK
    assert "✓ mobilefacenet_int8.tflite" in capsys.readouterr().out


def test_models_reports_missing_files(tmp_path, capsys):
    f = tmp_path / "gate.toml"
    f.write_text(f'[models]\ndir = "{tmp_path}"\n')
    assert main(["--config", str(f), "models"]) == EXIT_MODELS
    assert "✗" in capsys.readouterr().out


def test_eval_on_a_small_folder(cfg_file, people, capsys):
    code = main(["--config", str(cfg_file), "eval", str(people), "--model", "float", "--json"])
    assert code == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    assert report["mode"] == "folder" and report["images"] == 4 and report["unusable"] == 0
    assert report["pairs"] == {"genuine": 3, "impostor": 3}
    assert report["auc"] == 1.0
    assert report["tar_at_far"][0]["resolvable"] is False  # 3 impostors cannot show 1e-3
    assert report["model_file"] == "mobilefacenet_float.tflite"


def test_eval_human_output_and_blazeface_alignment(cfg_file, people, capsys):
    assert main(["--config", str(cfg_file), "eval", str(people), "--align", "blazeface",
                 "--no-flip"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "align blazeface" in out and "flip off" in out and "accuracy" in out
    assert "TAR at FAR 0.001: not resolvable" in out


def test_eval_with_an_lfw_pairs_file(cfg_file, tmp_path, photos, capsys):
    root = tmp_path / "lfw"
    for person, names in {"Barack_Obama": ["obama.jpg", "obama3.jpg"],
                          "Joe_Biden": ["biden.jpg"]}.items():
        (root / person).mkdir(parents=True)
        for k, n in enumerate(names, start=1):
            (root / person / f"{person}_{k:04d}.jpg").symlink_to(photos / n)
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("Barack_Obama 1 2\nBarack_Obama 1 Joe_Biden 1\n")
    assert main(["--config", str(cfg_file), "eval", str(root), "--pairs", str(pairs),
                 "--json", "--plot", str(tmp_path / "det.txt")]) == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    assert report["mode"] == "pairs" and report["accuracy"] == 1.0
    assert "optimistic" in report["accuracy_protocol"]
    assert report["pairs"]["genuine_with_unusable_image"] == 0
    assert "FMR" in (tmp_path / "det.txt").read_text()


@pytest.mark.parametrize("case", [
    (["--fuse", "0"], "--fuse must be ≥ 1"),
    (["--occlude", "mask"], "--occlude measures open-set searches"),
    (["--pose", "--align", "blazeface"], "--pose compares with the face mesh"),
    (["--plot", "/nonexistent/dir/det.png"], "--plot: /nonexistent/dir is not a directory"),
    (["--plot", "PLOT"], "--plot: this kind of evaluation has no DET curve"),
])
def test_eval_refuses_bad_arguments_in_one_line(cfg_file, people, tmp_path, capsys, case):
    args, message = case
    args = [str(tmp_path / "det.png") if a == "PLOT" else a for a in args]
    assert main(["--config", str(cfg_file), "eval", str(people), *args]) == EXIT_DATA
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and not (tmp_path / "det.png").exists()


def test_openset_needs_enough_people(cfg_file, people, capsys):
    assert main(["--config", str(cfg_file), "eval", str(people), "--openset",
                 "--gallery-size", "5"]) == EXIT_DATA
    assert "gallery size 5" in _one_line_error(capsys)


@pytest.mark.parametrize("argv", [["eval"], ["frobnicate"], ["eval", "x", "--model", "int4"],
                                  ["bench", "--photos", "x", "--repeat", "many"], []])
def test_usage_errors_exit_2_in_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == EXIT_USAGE
    _one_line_error(capsys)


def test_bad_config_exits_3_naming_the_key(tmp_path, capsys):
    f = tmp_path / "gate.toml"
    f.write_text("[models]\nthreads = -1\n")
    assert main(["--config", str(f), "models"]) == EXIT_CONFIG
    assert "models.threads" in _one_line_error(capsys)


def test_eval_of_a_missing_or_empty_folder_exits_5(cfg_file, tmp_path, capsys):
    assert main(["--config", str(cfg_file), "eval", str(tmp_path / "nope")]) == EXIT_DATA
    _one_line_error(capsys)
    (tmp_path / "empty").mkdir()
    assert main(["--config", str(cfg_file), "eval", str(tmp_path / "empty")]) == EXIT_DATA
    _one_line_error(capsys)


def test_eval_of_a_folder_of_non_images(cfg_file, tmp_path, capsys):
    for person in ("a", "b"):
        (tmp_path / "junk" / person).mkdir(parents=True)
        (tmp_path / "junk" / person / "x.jpg").write_text("not an image")
    assert main(["--config", str(cfg_file), "eval", str(tmp_path / "junk")]) == EXIT_DATA
    assert "usable" in _one_line_error(capsys)


def test_eval_with_broken_models_exits_4(tmp_path, people, capsys):
    f = tmp_path / "gate.toml"
    f.write_text(f'[models]\ndir = "{tmp_path}"\n')
    assert main(["--config", str(f), "eval", str(people)]) == EXIT_MODELS
    assert "make models" in _one_line_error(capsys)


def test_bench_runs_and_reports_every_stage(cfg_file, people, capsys):
    assert main(["--config", str(cfg_file), "bench", "--photos", str(people / "obama"),
                 "--repeat", "1", "--threads", "1", "--models", "int8", "--json"]) == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    row = report["rows"][0]
    assert row["model"] == "int8" and row["threads"] == 1
    assert set(row["stages"]) == {"detect", "landmarks", "align", "quality", "embed"}
    assert report["rss_mb"] > 0


def test_bench_bad_frame_size(cfg_file, people, capsys):
    assert main(["--config", str(cfg_file), "bench", "--photos", str(people),
                 "--frame", "huge"]) == EXIT_DATA
    assert "--frame" in _one_line_error(capsys)


def test_debug_env_shows_the_traceback(cfg_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DEBUG", "1")
    assert main(["--config", str(cfg_file), "eval", str(tmp_path / "nope")]) == EXIT_DATA
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_without_a_broker_keeps_events_in_the_outbox(photos, models_dir, tmp_path,
                                                         capsys):
    assert demo(["--workdir", str(tmp_path / "w"), "--models", str(models_dir), "--photos",
                 str(photos), "--portraits", str(PORTRAITS), "--no-broker"]) == 0
    out = capsys.readouterr().out
    assert "recognised: flapper open" in out
    assert "entry events waiting in the outbox for a broker: 1" in out
    assert "all 7 steps of the queue went as expected" in out


def test_demo_without_portraits_says_what_to_run(photos, models_dir, tmp_path, capsys):
    assert demo(["--workdir", str(tmp_path / "w"), "--models", str(models_dir), "--photos",
                 str(photos), "--portraits", str(tmp_path), "--no-broker"]) == 1
    assert "make calibration-data" in capsys.readouterr().err


class _ScriptedLane:
    """Stands in for the simulated lane: each visit reports the given events."""

    def __init__(self, out, turns):
        self.out, self.turns = out, iter(turns)

    def visit(self, _visitor, *, patience_s):
        assert patience_s > 0
        for event in next(self.turns):
            self.out.lane({"phase": "x", "event": event, "indication": "off"})


def _queue_as_expected():
    return [expected for *_, expected in demo_module.QUEUE]


def test_demo_checks_each_turn_of_its_queue(monkeypatch):
    d = demo_module
    monkeypatch.setattr(d, "log_event", lambda _e: None)
    people = {k: np.zeros((2, 2, 3), np.uint8) for k in ("a_probe", "b", "c", "e")}
    out = d.Printer()
    lane = cast(SimulatedLane, _ScriptedLane(out, _queue_as_expected()))
    assert d._play_queue(lane, people, out) == []
    # The revoked attendee let in; the two people's events in the wrong order.
    turns = _queue_as_expected()
    turns[2] = ("recognised: flapper open", "passage confirmed: entry recorded")
    turns[3] = tuple(reversed(turns[3]))
    out = d.Printer()
    wrong = d._play_queue(cast(SimulatedLane, _ScriptedLane(out, turns)), people, out)
    assert len(wrong) == 2
    assert wrong[0].startswith("visitor-c (enrolment cancelled) steps into the lane: "
                               "no 'denied: not recognised' (saw: recognised: flapper open")
    assert "two people" in wrong[1]


@pytest.mark.parametrize("pace", ["0", "0.5", "-3", "101", "nan", "fast", ""])
def test_demo_refuses_a_bad_pace(pace, capsys):
    with pytest.raises(SystemExit) as exc:
        demo(["--pace", pace])
    assert exc.value.code == 2
    assert "--pace" in capsys.readouterr().err
