"""``gatectl camera aim``: the pure report (plain values) and the command on the replay
camera with the real pipeline: face placement on the grid, hints, no picture written
anywhere (P1), buffers wiped (P2), camera closed on every path, refusal while the
service runs."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from gate.camera import Camera, CameraError, Mode, open_camera
from gate.camera.replay import ReplayCamera, ReplayOptions, fit_into
from gate.cli import camera as camera_cli
from gate.cli.main import build_parser, main
from gate.detect.quality import Measures, QualityLimits
from gate.exitcodes import EXIT_FAIL, EXIT_OK, EXIT_SERVICE
from gate.service.control import ControlServer
from gate.tools import aim

LIMITS = QualityLimits()
GOOD = Measures(faces_sizeable=1, presence=0.99, interocular_px=60.0, yaw_deg=2.0,
                pitch_deg=3.0, roll_deg=1.0, outside_fraction=0.0, sharpness=4.0,
                brightness=130.0, dark_fraction=0.0, bright_fraction=0.0,
                eye_visibility=math.nan)
CENTRED: aim.Box = (260.0, 160.0, 380.0, 300.0)


def reading(box: aim.Box | None = CENTRED, **changes: Any) -> aim.Reading:
    m = dataclasses.replace(GOOD, **changes)
    return aim.Reading(640, 480, (box,) if box else (), m if box else None, 60.0, 10.0, 20.0)


def codes(r: aim.Reading) -> list[str]:
    return [h.code for h in aim.hints(r, LIMITS)]


# --- the pure report ---------------------------------------------------------------------


def test_a_centred_lit_sharp_face_needs_nothing():
    assert codes(reading()) == []
    assert aim.text(reading(), LIMITS)[-1].startswith("→ good")
    assert aim.as_dict(reading(), LIMITS)["ok"] is True


@pytest.mark.parametrize(("changes", "code", "words"), [
    ({"brightness": 12.0}, "too_dark", "too dark"),
    ({"dark_fraction": 0.7}, "too_dark", "too dark"),
    ({"brightness": 245.0}, "too_bright", "too bright"),
    ({"sharpness": 0.1}, "blur", "out of focus"),
    ({"interocular_px": 20.0}, "too_small", "face too small: move the camera closer or zoom"),
    ({"faces_sizeable": 2}, "several_faces", "2 faces"),
    ({"pitch_deg": 40.0}, "pitch", "face height"),
    ({"yaw_deg": -45.0}, "yaw", "along the lane"),
    ({"outside_fraction": 0.2}, "cut_off", "cut off"),
])
def test_each_problem_has_its_hint(changes, code, words):
    r = reading(**changes)
    found = aim.hints(r, LIMITS)
    assert [h.code for h in found] == [code]
    assert words in found[0].text
    assert f"→ {found[0].text}" in aim.text(r, LIMITS)


def test_limits_come_from_the_config_not_constants():
    r = reading(interocular_px=40.0)
    assert codes(r) == []
    assert codes(r) != [h.code for h in aim.hints(r, QualityLimits(min_interocular_px=50))]
    assert "min 50" in "\n".join(aim.text(r, QualityLimits(min_interocular_px=50)))


@pytest.mark.parametrize(("box", "code"), [((5.0, 200.0, 100.0, 300.0), "edge_left"),
                                           ((560.0, 200.0, 636.0, 300.0), "edge_right"),
                                           ((280.0, 2.0, 360.0, 100.0), "edge_top"),
                                           ((280.0, 400.0, 360.0, 479.0), "edge_bottom")])
def test_a_face_near_an_edge_is_named(box, code):
    assert code in codes(reading(box))
    side = code.split("_")[1]
    assert any(f"face near the {side} edge" in line for line in aim.text(reading(box), LIMITS))


def test_a_face_filling_the_frame_asks_to_zoom_out():
    assert "too_large" in codes(reading((60.0, 20.0, 580.0, 460.0)))


def test_no_face_in_the_dark_says_both():
    dark = aim.Reading(640, 480, (), None, scene_brightness=8.0)
    assert codes(dark) == ["no_face", "too_dark"]
    assert codes(dataclasses.replace(dark, scene_brightness=80.0)) == ["no_face"]
    assert "face        none" in aim.text(dark, LIMITS)


def _marks(lines: list[str], char: str) -> set[tuple[int, int]]:
    """(row, col) of ``char`` inside the grid's border."""
    body = lines[1:-1]
    return {(r, c) for r, line in enumerate(body) for c, ch in enumerate(line[1:-1]) if ch == char}


def test_grid_has_the_frames_shape_and_puts_the_face_where_it_is():
    lines = aim.grid(aim.Reading(640, 480, ((0.0, 0.0, 160.0, 120.0),)))
    assert len(lines) == aim.GRID_ROWS + 2
    assert {len(line) for line in lines} == {aim.GRID_COLS + 2}
    assert lines[0] == lines[-1] == "+" + "-" * aim.GRID_COLS + "+"
    face = _marks(lines, "#")
    # The top-left quarter of the frame is the top-left 8×3 cells; the outline is on them.
    assert {r for r, _ in face} == {0, 1, 2} and {c for _, c in face} == set(range(8))
    assert (1, 3) not in face  # an outline, not a filled block
    assert _marks(lines, "+") == {(aim.GRID_ROWS // 2, aim.GRID_COLS // 2)}  # frame centre


def test_grid_marks_other_faces_apart_and_ignores_boxes_off_the_frame():
    r = aim.Reading(640, 480, ((400.0, 100.0, 600.0, 300.0), (10.0, 100.0, 60.0, 150.0),
                               (700.0, 10.0, 800.0, 50.0)))
    lines = aim.grid(r)
    assert min(c for _, c in _marks(lines, "#")) >= 20
    assert max(c for _, c in _marks(lines, "o")) <= 3
    tiny = aim.grid(aim.Reading(640, 480, ((300.0, 200.0, 305.0, 205.0),)))
    assert len(_marks(tiny, "#")) == 1


def test_json_report_is_numbers_and_codes():
    d = aim.as_dict(reading(interocular_px=20.0), LIMITS)
    assert json.loads(json.dumps(d)) == d
    assert d["face"]["box"] == [260, 160, 380, 300] and d["face"]["width_share"] == 0.188
    assert d["hints"] == ["too_small"] and d["ok"] is False
    assert d["limits"]["min_interocular_px"] == LIMITS.min_interocular_px


# --- the command on the replay camera ------------------------------------------------------


def _placed(photo, *, left: bool) -> np.ndarray:
    """A 640×480 frame with the portrait at 80 % of the height at the left or right."""
    face = photo("obama.jpg")
    h = 384
    w = round(face.shape[1] * h / face.shape[0])
    canvas = np.full((480, 640, 3), 90, np.uint8)
    x = 0 if left else 640 - w
    canvas[48:48 + h, x:x + w] = cv2.resize(face, (w, h), interpolation=cv2.INTER_AREA)
    return canvas


def _frames_dir(root: Path, frames: dict[str, np.ndarray]) -> Path:
    root.mkdir()
    for name, rgb in frames.items():
        cv2.imwrite(str(root / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return root


def _args(*argv: str):
    return build_parser().parse_args(["camera", "aim", *argv])


@pytest.fixture
def aim_run(config, tmp_path, pipeline):
    """Run ``camera aim`` with ``argv`` on the replay camera over ``source``, with the
    session's pipeline; the control socket points where no service runs."""
    def run(source: Path, *argv: str) -> int:
        cfg = dataclasses.replace(
            config,
            camera=dataclasses.replace(config.camera, backend="replay", source=str(source)),
            cache=dataclasses.replace(config.cache, dir=str(tmp_path / "state")),
            service=dataclasses.replace(config.service,
                                        control_socket=str(tmp_path / "c.sock")))
        return camera_cli.run(_args(*argv), cfg, pipeline=pipeline)
    return run


@pytest.fixture
def frames(tmp_path):
    """Write RGB frames as images into a new folder for the replay camera."""
    def write(images: dict[str, np.ndarray]) -> Path:
        return _frames_dir(tmp_path / "frames", images)
    return write


def _blocks(out: str) -> list[list[str]]:
    """The human output split into one list of lines per reading."""
    blocks = []
    for chunk in out.split("\n\n"):
        lines = chunk.splitlines()
        starts = [k for k, line in enumerate(lines) if line.startswith("frame ")]
        if starts:
            blocks.append(lines[starts[0]:])
    return blocks


@pytest.fixture
def opened(monkeypatch):
    """Every camera the command builds, to look at it afterwards."""
    made: list[Camera] = []

    def spy(*a, **kw):
        cam = open_camera(*a, **kw)
        made.append(cam)
        return cam
    monkeypatch.setattr(camera_cli, "open_camera", spy)
    return made


def test_the_face_lands_in_the_grid_where_it_is_in_the_frame(aim_run, frames, photo,
                                                             opened, pipeline):
    src = frames({"1.png": _placed(photo, left=True), "2.png": _placed(photo, left=False)})
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert aim_run(src, "--frames", "2", "--interval", "0") == EXIT_OK
    left, right = _blocks(out.getvalue())
    for block, side in ((left, "left"), (right, "right")):
        assert "1 face" in block[0]
        cols = {c for _, c in _marks(block[1:aim.GRID_ROWS + 3], "#")}
        assert cols, block
        if side == "left":
            assert max(cols) < aim.GRID_COLS // 2 and min(cols) <= 6
        else:
            assert min(cols) > aim.GRID_COLS // 2 and max(cols) >= 24
        assert any(line.startswith("face ") and "px wide" in line for line in block)
        assert any(line.startswith("eyes ") and "min 28" in line for line in block)
    cam = opened[0]
    assert not cam.is_open and cam.captures == 2 and not cam.frame.any()
    # P2: what the pipeline held for the last frame is zeros.
    assert not pipeline.aligner.crop.any() and not pipeline.embedder.embedding.any()


def test_every_buffer_is_zero_before_a_reading_is_printed(aim_run, pipeline, photos, opened,
                                                          monkeypatch):
    """P2 per frame, not only at the end: when a report is shown, the camera frame and
    the pipeline's crop and embedding already hold zeros."""
    seen: list[tuple[bool, bool, bool]] = []
    real = camera_cli._Screen.show

    def show(self, reading, limits):
        seen.append((bool(opened[0].frame.any()), bool(pipeline.aligner.crop.any()),
                     bool(pipeline.embedder.embedding.any())))
        real(self, reading, limits)
    monkeypatch.setattr(camera_cli._Screen, "show", show)
    assert aim_run(photos, "--frames", "3", "--interval", "0", "--json") == EXIT_OK
    assert seen == [(False, False, False)] * 3


def test_dark_and_blurred_frames_get_their_hints(aim_run, frames, config, photo, capsys):
    frame = np.zeros((480, 640, 3), np.uint8)
    fit_into(photo("obama.jpg"), frame)
    src = frames({"1-dark.png": (frame * 0.08).astype(np.uint8),
                  "2-blur.png": cv2.GaussianBlur(frame, (0, 0), 4)})
    assert aim_run(src, "--frames", "2", "--interval", "0", "--json") == EXIT_OK
    dark, blurred = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert dark["faces"] == 1 and "too_dark" in dark["hints"] and "blur" not in dark["hints"]
    assert dark["face"]["brightness"] < config.quality.min_brightness
    assert "too dark: add light or raise the exposure" in dark["advice"]
    assert "blur" in blurred["hints"] and "too_dark" not in blurred["hints"]
    assert blurred["face"]["sharpness"] < config.quality.min_sharpness


_WRITES: list[str] | None = None
_HOOKED = False


def _audit(event: str, args: tuple) -> None:
    if _WRITES is None or event != "open":
        return
    path, mode, flags = args
    writing = any(c in mode for c in "wax+") if isinstance(mode, str) else \
        bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
    if writing:
        _WRITES.append(str(path))


def _tree(*roots: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for root in roots
            for p in [root, *root.rglob("*")] if p.exists()}


def test_nothing_is_written_anywhere_and_nothing_image_like_is_printed(
        tmp_path, models_dir, photos, monkeypatch, capsys):
    """P1, through ``main`` (config file, model loading and all): no file is opened for
    writing, the work, state and temp directories are unchanged, and the output is short
    lines of text: no pixel or array dump."""
    global _WRITES, _HOOKED  # noqa: PLW0603 - an audit hook cannot be removed, only muted
    if not _HOOKED:
        sys.addaudithook(_audit)
        _HOOKED = True
    (tmp_path / "state").mkdir()
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    conf = tmp_path / "gate.toml"
    conf.write_text(f'[models]\ndir = "{models_dir}"\nthreads = 1\n'
                    f'[camera]\nbackend = "replay"\nsource = "{photos}"\n'
                    f'[cache]\ndir = "{tmp_path / "state"}"\n'
                    f'[service]\ncontrol_socket = "{tmp_path / "c.sock"}"\n')
    before = _tree(tmp_path, photos)
    _WRITES = []
    try:
        code = main(["--config", str(conf), "camera", "aim", "--frames", "4",
                     "--interval", "0"])
        written = list(_WRITES)
    finally:
        _WRITES = None
    out = capsys.readouterr().out
    assert code == EXIT_OK
    assert written == []
    assert _tree(tmp_path, photos) == before
    assert len(_blocks(out)) == 4
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 140
    assert not re.search(r"array\(|\[\[|\d{12,}|[A-Za-z0-9+/]{40,}", out)


class _Faulty(ReplayCamera):
    """Replays a folder, then fails (or is interrupted) at read number ``fail_at``."""

    def __init__(self, *a, fail_at: int, error: BaseException, **kw) -> None:
        super().__init__(*a, **kw)
        self.fail_at, self.error, self.reads = fail_at, error, 0

    def _grab(self, out):
        self.reads += 1
        if self.reads == self.fail_at:
            raise self.error
        super()._grab(out)


def _failing(monkeypatch, error: BaseException) -> list[_Faulty]:
    made: list[_Faulty] = []

    def faulty(backend: str, source: str, mode: Mode) -> _Faulty:
        assert backend == "replay"
        made.append(_Faulty(mode, ReplayOptions.from_source(source), fail_at=3, error=error))
        return made[-1]
    monkeypatch.setattr(camera_cli, "open_camera", faulty)
    return made


def test_ctrl_c_ends_the_view_and_closes_the_camera(aim_run, photos, monkeypatch, capsys):
    made = _failing(monkeypatch, KeyboardInterrupt())
    assert aim_run(photos, "--interval", "0") == EXIT_OK  # how a technician ends it
    assert "stopped" in capsys.readouterr().out
    assert made[0].reads == 3 and not made[0].is_open and not made[0].frame.any()


def test_a_camera_fault_closes_the_camera_and_exits_1(tmp_path, models_dir, photos,
                                                     monkeypatch, capsys):
    made = _failing(monkeypatch, CameraError("camera: unplugged"))
    conf = tmp_path / "gate.toml"
    conf.write_text(f'[models]\ndir = "{models_dir}"\nthreads = 1\n'
                    f'[camera]\nsource = "{photos}"\n'
                    f'[service]\ncontrol_socket = "{tmp_path / "c.sock"}"\n')
    assert main(["--config", str(conf), "camera", "aim", "--interval", "0"]) == EXIT_FAIL
    assert capsys.readouterr().err.strip() == "gatectl: camera: unplugged"
    assert made[0].reads == 3 and not made[0].is_open and not made[0].frame.any()


def test_on_a_terminal_each_reading_redraws_in_place(aim_run, photos, monkeypatch):
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True
    screen = Tty()
    monkeypatch.setattr(sys, "stdout", screen)
    assert aim_run(photos, "--frames", "3", "--interval", "0") == EXIT_OK
    out = screen.getvalue()
    ups = re.findall(r"\x1b\[(\d+)F\x1b\[J", out)
    assert len(ups) == 2  # before the 2nd and 3rd reading
    assert int(ups[0]) == len(out.split("\x1b[")[0].splitlines()) - 1  # the 1st report


def test_refuses_while_the_service_runs_and_never_opens_the_camera(tmp_path, models_dir,
                                                                   opened, capsys):
    sock = Path(tempfile.mkdtemp(prefix="g", dir="/tmp")) / "c.sock"
    server = ControlServer(sock, {"status": lambda _p: {"state": "idle"}})
    server.start()
    conf = tmp_path / "gate.toml"
    conf.write_text(f'[models]\ndir = "{models_dir}"\n'
                    f'[service]\ncontrol_socket = "{sock}"\n')
    try:
        assert main(["--config", str(conf), "camera", "aim", "--frames", "1"]) == EXIT_SERVICE
    finally:
        server.stop()
        sock.parent.rmdir()
    err = capsys.readouterr().err.strip()
    assert err.startswith("gatectl: ") and "\n" not in err
    assert "service is running" in err and "sudo systemctl stop gate" in err
    assert opened == []


@pytest.mark.parametrize("argv", [["--frames", "0"], ["--frames", "x"], ["--interval", "-1"]])
def test_bad_options_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["camera", "aim", *argv])
    assert exc.value.code == 2
    assert "\n" not in capsys.readouterr().err.strip()


def test_interval_paces_the_readings(aim_run, photos, capsys):
    start = time.monotonic()
    assert aim_run(photos, "--frames", "3", "--interval", "0.2", "--json") == EXIT_OK
    assert time.monotonic() - start >= 0.4
    assert len(capsys.readouterr().out.splitlines()) == 3
