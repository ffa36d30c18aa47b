"""Rules a value passes only in context: where the gate creates files and sockets, and
which match thresholds and margins can still accept somebody (and nobody wrongly)."""

from __future__ import annotations

import os
import posixpath
import socket
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from gate import config as config_mod
from gate.cli.main import main
from gate.config import calibrated_range, from_dict, validate
from gate.configcheck import MAX_SOCKET_PATH
from gate.errors import ConfigError
from gate.exitcodes import EXIT_CONFIG, EXIT_OK
from gate.match.embedders import EMBEDDERS
from gate.match.threshold import CALIBRATIONS
from tests.ledger import Ledger

pytestmark = pytest.mark.hostile

CLASS = "config garbage"
LANE = '[gate]\nid = "lane-1"\nvenue = "arena"\nevent = "final"\n'
FIXTURE_OK = [HealthCheck.function_scoped_fixture]


def errors_of(data: dict, base_dir: Path | None = None) -> dict[str, str]:
    _, errors = validate(data, base_dir=base_dir)
    return {e.path: e.reason for e in errors}


# --- where the gate creates things: judged from the spelling (no I/O) ---------------------

_SEGMENT = st.sampled_from(["gate", "state", ".", "..", "x", "cache", ""])


@settings(max_examples=300)
@given(tree=st.sampled_from(["/proc", "/sys", "/dev"]), below=st.lists(_SEGMENT, max_size=4),
       key=st.sampled_from(["cache.dir", "service.control_socket"]),
       lead=st.sampled_from(["", "/", "//", "/tmp/..", "/./"]))
def test_nothing_is_created_in_a_kernel_tree(ledger: Ledger, tree, below, key, lead):
    path = (lead.rstrip("/") + tree + "/" + "/".join(below)) if lead else \
        tree + "/" + "/".join(below)
    table, name = key.split(".")
    with ledger.case(CLASS):
        got = errors_of({table: {name: path}})
        norm = posixpath.normpath(path)
        inside = any(norm == t or norm.startswith(t + "/") for t in ("/proc", "/sys", "/dev"))
        if inside:
            assert key in got and "kernel file system" in got[key], (path, got)
        else:
            assert key not in got or "kernel file system" not in got[key], (path, got)


@pytest.mark.parametrize("path", ["/procedure/gate", "/system/gate", "/devices/x",
                                  "/var/lib/gate", "relative/proc"])
def test_names_that_only_look_like_kernel_trees_are_fine(path):
    assert errors_of({"cache": {"dir": path}}) == {}


@settings(max_examples=200)
@given(length=st.integers(1, 300), char=st.sampled_from(["a", "é", "門"]))
@example(length=MAX_SOCKET_PATH, char="a")
@example(length=MAX_SOCKET_PATH + 1, char="a")
def test_a_control_socket_path_fits_a_unix_socket_address(ledger: Ledger, length, char):
    head = "/run/"
    name = (char * length)[:max(0, length - len(head))]
    path = head + name
    size = len(path.encode())
    with ledger.case(CLASS):
        got = errors_of({"service": {"control_socket": path}})
        if size > MAX_SOCKET_PATH:
            reason = got["service.control_socket"]
            assert f"is {size} bytes long" in reason and "at most 107" in reason
        else:
            assert got == {}


def test_the_socket_limit_is_the_kernels(tmp_path):
    """107 bytes binds; 108 does not (what the rule protects the service from)."""
    base = str(tmp_path) + "/"
    for size, binds in ((MAX_SOCKET_PATH, True), (MAX_SOCKET_PATH + 1, False)):
        path = base + "s" * (size - len(base))
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            if binds:
                s.bind(path)
                os.unlink(path)
            else:
                with pytest.raises(OSError, match="too long"):
                    s.bind(path)
        finally:
            s.close()


def test_a_long_relative_socket_is_judged_once_resolved(tmp_path, ledger: Ledger):
    rel = "r" * 90 + ".sock"
    with ledger.case(CLASS):
        got = errors_of({"service": {"control_socket": rel}}, base_dir=tmp_path)
        assert "service.control_socket" in got  # tmp_path + 94 bytes is too long


@pytest.mark.parametrize(("table", "name"), [("cache", "dir"), ("service", "control_socket"),
                                             ("models", "dir"), ("camera", "source"),
                                             ("sync", "ca_file")])
def test_a_nul_byte_in_a_path_is_a_config_error(tmp_path, ledger: Ledger, table, name):
    with ledger.case(CLASS):
        got = errors_of({table: {name: "state\x00/x"}}, base_dir=tmp_path)
        assert got == {f"{table}.{name}": "must not contain a NUL character"}


@pytest.mark.parametrize("key", ["cache.dir", "service.control_socket"])
def test_empty_is_not_a_place(ledger: Ledger, key):
    table, name = key.split(".")
    with ledger.case(CLASS):
        assert errors_of({table: {name: ""}}) == {key: "must not be empty"}


# --- where the gate creates things: what is there already (service rules, one stat) -------

def _service_errors(tmp_path: Path, extra: str) -> dict[str, str]:
    f = tmp_path / "gate.toml"
    f.write_text(LANE + extra)
    return {e.path: e.reason for e in config_mod.check(f, service=True)}


def test_the_cache_dir_must_be_a_directory_if_it_exists(tmp_path, ledger: Ledger):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "state").mkdir()
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "link").symlink_to(tmp_path / "state")
    cases = {"afile": "exists and is a regular file, not a directory",
             "fifo": "exists and is a FIFO (named pipe), not a directory",
             "afile/below": "a component of the path is not a directory",
             "state": None, "link": None, "new/deeper": None}
    for where, reason in cases.items():
        with ledger.case(CLASS):
            got = _service_errors(tmp_path, f'[cache]\ndir = "{tmp_path / where}"\n'
                                            f'[service]\ncontrol_socket = "{tmp_path}/c.sock"\n')
            if reason is None:
                assert got == {}, (where, got)
            else:
                assert list(got) == ["cache.dir"] and reason in got["cache.dir"], (where, got)
    # Without --service nothing is looked at: a bench or a demo config may name anything.
    f = tmp_path / "bench.toml"
    f.write_text(f'[cache]\ndir = "{tmp_path / "afile"}"\n')
    assert config_mod.check(f) == []


def test_the_control_socket_may_only_replace_a_socket(tmp_path, ledger: Ledger):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    stale = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(stale))
    s.close()
    cases = {"afile": "exists and is a regular file", "adir": "exists and is a directory",
             "afile/c.sock": "a component of the path is not a directory",
             "stale.sock": None, "new.sock": None}
    for where, reason in cases.items():
        with ledger.case(CLASS):
            got = _service_errors(tmp_path, f'[cache]\ndir = "{tmp_path}/state"\n'
                                            f'[service]\ncontrol_socket = "{tmp_path / where}"\n')
            if reason is None:
                assert got == {}, (where, got)
            else:
                assert list(got) == ["service.control_socket"], (where, got)
                assert reason in got["service.control_socket"], (where, got)


def test_gatectl_run_refuses_a_cache_dir_that_is_a_file_without_a_traceback(tmp_path,
                                                                             capsys,
                                                                             ledger: Ledger):
    (tmp_path / "afile").write_text("x")
    bad = {"a file": f'dir = "{tmp_path / "afile"}"', "in /proc": 'dir = "/proc/gate"',
           "in /sys": 'dir = "/sys/gate"'}
    for name, line in bad.items():
        f = tmp_path / "gate.toml"
        f.write_text(LANE + f"[cache]\n{line}\nallow_ephemeral_keys = true\n"
                            '[gpio]\nbackend = "mock"\n'
                            f'[service]\ncontrol_socket = "{tmp_path}/c.sock"\n')
        with ledger.case(CLASS):
            assert main(["--config", str(f), "run"]) == EXIT_CONFIG, name
            out = capsys.readouterr()
            assert "Traceback" not in out.out + out.err, name
            errors = [line for line in out.out.splitlines() if " ERROR " in line]
            assert len(errors) == 1 and "cache.dir" in errors[0], (name, errors)
            assert main(["config", "check", "--service", str(f)]) == EXIT_CONFIG
            assert "✗ cache.dir: " in capsys.readouterr().out


# --- thresholds and margins ------------------------------------------------------------------

@pytest.mark.parametrize("embedder", sorted(EMBEDDERS))
def test_the_calibrated_range_comes_from_the_calibration_table(embedder):
    points = CALIBRATIONS[EMBEDDERS[embedder].calibration].points
    lo, hi = calibrated_range(embedder)
    assert (lo, hi) == (min(s for s, _ in points), max(s for s, _ in points))
    assert 0 < lo < hi < 1


@settings(max_examples=300)
@given(embedder=st.sampled_from(sorted(EMBEDDERS)),
       threshold=st.floats(min_value=1e-9, max_value=1.0))
@example(embedder="int8", threshold=0.01)
@example(embedder="float", threshold=0.2549)
def test_a_fixed_threshold_below_the_calibrated_range_is_refused(ledger: Ledger, embedder,
                                                                  threshold):
    lo, hi = calibrated_range(embedder)
    with ledger.case(CLASS):
        got = errors_of({"models": {"embedder": embedder}, "match": {"threshold": threshold}})
        if threshold < lo:
            reason = got["match.threshold"]
            assert f"below the calibrated range {lo:g}–{hi:g}" in reason and embedder in reason
            assert "or 0 to use the calibration table" in reason
        elif threshold >= 1:
            assert "must be below 1" in got["match.threshold"]
        else:
            assert got == {}


def test_zero_means_calibrated_and_is_always_fine():
    for embedder in EMBEDDERS:
        assert from_dict({"models": {"embedder": embedder}}).match.threshold == 0.0


@settings(max_examples=100)
@given(threshold=st.floats(min_value=1.0, max_value=1e9, allow_nan=False,
                           allow_infinity=False) | st.just(1.0))
def test_thresholds_that_accept_nobody_are_refused(ledger: Ledger, threshold):
    with ledger.case(CLASS):
        got = errors_of({"match": {"threshold": threshold}})
        assert list(got) == ["match.threshold"]


@settings(max_examples=200)
@given(margin=st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False))
@example(margin=1.0)
@example(margin=0.9999)
def test_margins_that_accept_nobody_are_refused(ledger: Ledger, margin):
    with ledger.case(CLASS):
        got = errors_of({"match": {"margin": margin}})
        if margin >= 1:
            assert list(got) == ["match.margin"]
        else:
            assert got == {}


def test_a_bad_embedder_does_not_cause_a_made_up_threshold_error(ledger: Ledger):
    with ledger.case(CLASS):
        got = errors_of({"models": {"embedder": "int4"}, "match": {"threshold": 0.01}})
        assert list(got) == ["models.embedder"]


def test_threshold_errors_reach_config_check_with_the_range(tmp_path, capsys, ledger: Ledger):
    f = tmp_path / "gate.toml"
    f.write_text("[match]\nthreshold = 0.01\n")
    with ledger.case(CLASS):
        assert main(["config", "check", str(f)]) == EXIT_CONFIG
        lo, hi = calibrated_range(from_dict({}).models.embedder)
        line = capsys.readouterr().out.splitlines()[0]
        assert line.startswith("✗ match.threshold: 0.01 is below the calibrated range") and \
            f"{lo:g}–{hi:g}" in line
    f.write_text(f"[match]\nthreshold = {lo}\n")
    assert main(["config", "check", str(f)]) == EXIT_OK
    f.write_text("[match]\nthreshold = 0.2\n")
    with ledger.case(CLASS), pytest.raises(ConfigError, match=r"^match\.threshold: "):
        config_mod.load(f)


@settings(max_examples=50, deadline=None, suppress_health_check=FIXTURE_OK)
@given(name=st.text(min_size=1, max_size=40))
def test_unknown_keys_are_named_on_one_line_whatever_they_are(tmp_path, ledger: Ledger, name):
    assume(name not in {"gate", "models", "match", "cache", "service", "camera", "gpio",
                        "lane", "quality", "sync", "detect", "embed"})
    with ledger.case(CLASS):
        got = errors_of({name: 1})
        (path,) = got
        assert path.isprintable() and len(path) <= 60 and "unknown key" in got[path]
