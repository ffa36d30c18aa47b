"""The installer (gate/tools/install.py, `make install`, `gatectl install`): a real install into
a temporary root (real venv, real pip install of this checkout, the installed gatectl run
against the installed models, the unit verified in that root), upgrade, crypto-erase on
uninstall, and one-line errors for bad input."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gate.cli import main as gatectl
from gate.exitcodes import EXIT_CANCELLED
from gate.match import atomic, erase
from gate.match.erase import CACHE_FILE, JOURNAL_FILE, KEY_FILE
from gate.templates import Templates
from gate.tools import install
from sync.templates import Enrolment
from tests.support import DAY, ROOT, open_store, random_unit

CHECKOUT = ROOT
MANIFEST = json.loads((CHECKOUT / "gate/model_manifest.json").read_text())["files"]
SYSTEM_TOOLS = ("systemd-sysusers", "systemd-analyze", "systemctl")


def run_module(*args: str, python: str = sys.executable) -> subprocess.CompletedProcess[str]:
    """`python -m gate.tools.install ...` from the checkout, as `make install` runs it."""
    return subprocess.run([python, "-m", "gate.tools.install", *args], cwd=CHECKOUT,
                          capture_output=True, text=True, check=False, timeout=600)


def system_python() -> str:
    """The python3 `make install` uses (PYTHON ?= python3)."""
    found = shutil.which("python3")
    if found is None:
        pytest.fail("no python3 on PATH; make install needs one")
    return found


def passwd(root: Path, db: str) -> dict[str, list[str]]:
    lines = (root / "etc" / db).read_text().splitlines()
    return {line.split(":")[0]: line.split(":") for line in lines}


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# --- the real thing -----------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.models
def test_install_upgrade_and_uninstall_into_a_temporary_root(tmp_path, models_dir):
    missing = [t for t in SYSTEM_TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (CI installs systemd)")
    root = tmp_path / "root"
    root.mkdir()
    python = system_python()

    t = time.monotonic()
    done = run_module("install", "--root", str(root), "-y", python=python)
    took = time.monotonic() - t
    assert done.returncode == 0, done.stderr
    assert took < 300, f"install took {took:.0f} s"
    assert "systemd-creds encrypt --name=NAME" in done.stdout
    assert "sudo systemctl enable --now gate" in done.stdout

    # The user, from the sysusers file, in ROOT's own database.
    users, groups = passwd(root, "passwd"), passwd(root, "group")
    assert users["gate"][6] == "/usr/sbin/nologin"
    gid = int(groups["gate"][2])
    assert "gate" in groups["gpio"][3].split(",") and "gate" in groups["video"][3].split(",")

    # Files and modes.
    def mode(p: Path) -> int:
        return p.stat().st_mode & 0o7777

    config = root / "etc/gate/gate.toml"
    assert config.read_bytes() == (CHECKOUT / "config/gate.example.toml").read_bytes()
    assert mode(config) == 0o640
    if os.geteuid() == 0:
        assert (config.stat().st_uid, config.stat().st_gid) == (0, gid)
    assert mode(root / "etc/credstore.encrypted") == 0o700
    unit = root / "etc/systemd/system/gate.service"
    assert unit.read_text() == (CHECKOUT / "systemd/gate.service").read_text()
    assert mode(unit) == 0o644
    sysusers = root / "usr/lib/sysusers.d/gate.conf"
    assert sysusers.read_text() == (CHECKOUT / "systemd/gate.sysusers").read_text()
    assert os.readlink(root / "usr/local/bin/gatectl") == "/opt/gate/venv/bin/gatectl"
    models = root / "opt/gate/models"
    for entry in MANIFEST:
        f = models / entry["name"]
        assert hashlib.sha256(f.read_bytes()).hexdigest() == entry["sha256"]
        assert mode(f) == 0o644
    venv = root / "opt/gate/venv"
    site = next(venv.glob("lib/python3*/site-packages"))
    assert (site / "gate/tools/install.py").is_file()  # a real copy, not an editable link
    assert not list(site.glob("__editable__*")) and not list(site.glob("*.egg-link"))
    assert not list(CHECKOUT.glob("build/lib*")), "pip built inside the checkout"

    # The installed gatectl runs against the installed models, as the unit runs it
    # (GATE_MODELS_DIR is the unit's Environment=), and its runtime loads them.
    env = {**os.environ, "GATE_MODELS_DIR": str(models)}
    env.pop("GATE_CONFIG", None)
    done = subprocess.run([str(venv / "bin/gatectl"), "--config", str(config), "models"],
                          env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("✓") == len(MANIFEST)
    probe = ("import numpy as np; from gate.config import load; "
             "from gate.pipeline import FacePipeline; "
             f"p = FacePipeline.from_config(load({str(config)!r})); "
             "r = p.process(np.zeros((480, 640, 3), np.uint8)); print(len(r.times_ms))")
    done = subprocess.run([str(venv / "bin/python"), "-c", probe], env=env,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]

    # The unit verifies inside that root with the real ExecStart (the distribution's
    # units stand in for the target's own, which sysinit.target etc. come from).
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system",
                    symlinks=True)
    done = subprocess.run(["systemd-analyze", "verify", f"--root={root}", str(unit)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr

    # Second install: an upgrade that keeps the operator's config. The dependencies are
    # already there, so pip is told to leave them (which also shows --pip-args reach pip),
    # and the upgraded gatectl still runs.
    config.write_text('[gate]\nid = "lane-7"\n')
    done = run_module("install", "--root", str(root), "-y", "--no-models",
                      "--pip-args=--no-deps", python=python)
    assert done.returncode == 0, done.stderr
    assert config.read_text() == '[gate]\nid = "lane-7"\n'
    assert "kept the existing" in done.stdout
    done = subprocess.run([str(venv / "bin/gatectl"), "--config", str(config), "models"],
                          env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    done = run_module("install", "--root", str(root), "-y", "--no-models",
                      "--pip-args=--no-such-pip-option", python=python)
    assert done.returncode == 1
    assert one_line_error(done.stderr).startswith("gate install: pip install failed")

    # Uninstall: enabled unit, a real-looking state dir, a link that must not be followed,
    # a credential.
    subprocess.run(["systemctl", f"--root={root}", "enable", "gate.service"], check=True,
                   capture_output=True)
    state = root / "var/lib/gate"
    state.mkdir(parents=True)
    for name in (KEY_FILE, CACHE_FILE, JOURNAL_FILE, "sync.db", "sync.db-wal"):
        (state / name).write_bytes(os.urandom(100))
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    (state / "link").symlink_to(outside)
    cred = root / "etc/credstore.encrypted/cache-key"
    cred.write_bytes(b"encrypted")

    done = run_module("uninstall", "--root", str(root), "-y", python=python)
    assert done.returncode == 0, done.stderr
    assert "crypto-erased (templates.dek, templates.cache, templates.journal" in done.stdout
    assert not state.exists() and outside.read_text() == "keep me"
    for gone in (root / "opt/gate", unit, sysusers, root / "usr/local/bin/gatectl",
                 root / "etc/systemd/system/multi-user.target.wants/gate.service"):
        assert not gone.exists() and not gone.is_symlink(), gone
    assert config.exists() and cred.exists()  # kept without --purge
    assert "gate" in passwd(root, "passwd")  # system users are never deleted

    # Idempotent; --purge then removes config and credentials.
    assert run_module("uninstall", "--root", str(root), "-y").returncode == 0
    done = run_module("uninstall", "--root", str(root), "-y", "--purge")
    assert done.returncode == 0, done.stderr
    assert not (root / "etc/gate").exists() and not cred.exists()


# --- crypto-erase ---------------------------------------------------------------------------

def test_uninstall_uses_the_one_shared_crypto_erase():
    # The installer erases with the cache's own erase (its file names, its order), not a
    # copy of its own that could drift from the names the cache writes.
    assert vars(install)["erase_state"] is erase.erase_state
    assert erase.ERASE_ORDER == (KEY_FILE, CACHE_FILE, JOURNAL_FILE)


def _store(directory: Path) -> Templates:
    return open_store(directory)


def test_erase_state_destroys_the_data_key_so_a_kept_cache_copy_is_useless(tmp_path):
    state = tmp_path / "state"
    store = _store(state)
    rows = random_unit(np.random.default_rng(3), 3)
    store.cache.upsert([Enrolment(f"a{i}", 1, int(time.time()) + DAY, rows[i:i + 1])
                        for i in range(3)])
    store.close()
    cache_copy = (state / CACHE_FILE).read_bytes()  # what flash might keep
    dek_copy = (state / KEY_FILE).read_bytes()

    erased = erase.erase_state(state)
    assert erased[0] == KEY_FILE and CACHE_FILE in erased
    assert not state.exists()

    # The surviving copy does not open without the destroyed data key...
    again = tmp_path / "again"
    again.mkdir()
    (again / CACHE_FILE).write_bytes(cache_copy)
    copy = _store(again)
    status = copy.cache.load()
    copy.close()
    assert status.state == "invalid" and status.attendees == 0
    # ...and it was a real cache: with the data key it opens.
    (again / KEY_FILE).write_bytes(dek_copy)
    copy = _store(again)
    assert copy.cache.load().attendees == 3
    copy.close()


def test_erase_state_destroys_the_key_before_anything_else(tmp_path, monkeypatch):
    state = tmp_path / "state"
    (state / "sub").mkdir(parents=True)
    stale = f".{KEY_FILE}.0123456789ab.tmp"  # atomic_write's temporary, left by a power cut
    for name in ("sync.db", CACHE_FILE, JOURNAL_FILE, KEY_FILE, "sub/x", stale):
        (state / name).write_bytes(b"x" * 10)
    order: list[str] = []

    def destroy(path: Path) -> None:
        order.append(path.name)
        atomic.destroy(path)

    monkeypatch.setattr(erase, "destroy", destroy)
    erase.erase_state(state)
    assert order[:4] == [KEY_FILE, stale, CACHE_FILE, JOURNAL_FILE]
    assert sorted(order[4:]) == ["sync.db", "x"]
    assert erase.erase_state(state) == []  # idempotent


# --- decisions without running pip --------------------------------------------------------

def test_raspberry_pi_detection_and_venv_plan(tmp_path):
    model = tmp_path / "model"
    model.write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\x00")
    assert install.is_raspberry_pi(model)
    model.write_bytes(b"NVIDIA Jetson Orin Nano\x00")
    assert not install.is_raspberry_pi(model)
    assert not install.is_raspberry_pi(tmp_path / "absent")
    assert install.venv_plan(pi=True) == (["--system-site-packages"], "[pi]")
    assert install.venv_plan(pi=False) == ([], "")


def test_prefix_moves_every_path_in_the_unit():
    text = install.unit_text(CHECKOUT, Path("/srv/facepass"))
    assert "ExecStart=/srv/facepass/venv/bin/gatectl --config /etc/gate/gate.toml run" in text
    assert "GATE_MODELS_DIR=/srv/facepass/models" in text
    settings = [line for line in text.splitlines() if not line.startswith("#")]
    assert not [line for line in settings if "/opt/gate" in line]


def test_the_installer_needs_only_the_standard_library():
    # -S: no site-packages at all, as on a machine where nothing is installed yet.
    done = subprocess.run([sys.executable, "-S", "-c", "import gate.tools.install"], cwd=CHECKOUT,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def _fake_source(tmp_path: Path, model: bytes) -> Path:
    src = tmp_path / "src"
    for name in ("pyproject.toml", "systemd/gate.service", "systemd/gate.sysusers",
                 "config/gate.example.toml"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(CHECKOUT / name, src / name)
    (src / "gate").mkdir()
    (src / "models").mkdir()
    (src / "models/m.tflite").write_bytes(model)
    (src / "gate/model_manifest.json").write_text(json.dumps({"files": [
        {"name": "m.tflite", "sha256": hashlib.sha256(b"pinned").hexdigest()}]}))
    return src


def test_a_model_that_is_not_the_pinned_one_is_refused_before_anything_changes(
        tmp_path, capsys):
    root = tmp_path / "root"
    root.mkdir()
    src = _fake_source(tmp_path, b"tampered")
    assert install.main(["install", "--root", str(root), "--source", str(src), "-y"]) == 1
    err = one_line_error(capsys.readouterr().err)
    assert "m.tflite: sha256" in err and "refusing it" in err and "make models" in err
    assert not any(root.iterdir())
    (src / "models/m.tflite").unlink()
    assert install.main(["install", "--root", str(root), "--source", str(src), "-y"]) == 1
    assert "model file missing; run `make models` first" in capsys.readouterr().err
    assert not any(root.iterdir())


@pytest.mark.parametrize("argv", [
    [], ["frobnicate"], ["install", "--bogus"], ["install", "--prefix"],
    ["uninstall", "--no-models"], ["install", "--purge"], ["uninstall", "extra"],
])
def test_garbage_arguments_give_one_line_and_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        install.main(argv)
    assert exc.value.code == 2
    assert one_line_error(capsys.readouterr().err).startswith("gate install: ")
    with pytest.raises(SystemExit) as exc:
        gatectl.main(argv or ["install", "--bogus"])
    assert exc.value.code == 2
    assert one_line_error(capsys.readouterr().err).startswith("gatectl: ")


@pytest.mark.parametrize(("argv", "needle"), [
    (["install", "--prefix", "opt/gate"], "must be an absolute path"),
    (["install", "--prefix", "/opt"], "at least two levels"),
    (["uninstall", "--prefix", "/home/pi/gate"], "not under /home"),
    (["uninstall", "--prefix", "/var/lib/gate/x"], "not under /var/lib/gate"),
    (["install", "--prefix", "/opt/../etc/x"], "must be an absolute path"),
    (["install", "--root", "/nonexistent/dir"], "not a directory"),
    (["install", "--pip-args", "'unclosed"], "--pip-args"),
])
def test_bad_values_give_one_line_and_exit_1(argv, needle, capsys):
    assert install.main(argv) == 1
    assert needle in one_line_error(capsys.readouterr().err)


def test_not_a_checkout_and_not_root_are_one_line_errors(tmp_path, capsys, monkeypatch):
    root = tmp_path / "root"
    root.mkdir()
    assert install.main(["install", "--root", str(root), "--source", str(tmp_path)]) == 1
    assert "is not a source checkout" in one_line_error(capsys.readouterr().err)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    for command in ("install", "uninstall"):
        assert install.main([command, "-y"]) == 1  # ROOT is / by default
        assert "needs root: run it with sudo" in one_line_error(capsys.readouterr().err)


def test_foreign_prefix_is_neither_overwritten_nor_deleted(tmp_path, capsys):
    root = tmp_path / "root"
    foreign = root / "opt/gate/data"
    foreign.mkdir(parents=True)
    assert install.main(["install", "--root", str(root), "-y", "--no-models"]) == 1
    assert "was not made by this installer" in one_line_error(capsys.readouterr().err)
    assert install.main(["uninstall", "--root", str(root), "-y"]) == 0
    assert foreign.is_dir()
    assert "not made by this installer" in capsys.readouterr().out


def test_gatectl_uninstall_asks_and_without_a_terminal_cancels(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    root = tmp_path / "root"
    (root / "var/lib/gate").mkdir(parents=True)
    (root / "var/lib/gate" / KEY_FILE).write_bytes(b"k" * 65)
    assert gatectl.main(["uninstall", "--root", str(root)]) == EXIT_CANCELLED
    assert (root / "var/lib/gate" / KEY_FILE).exists()  # nothing erased
    assert "pass -y" in capsys.readouterr().err
    assert gatectl.main(["uninstall", "--root", str(root), "-y"]) == 0
    assert not (root / "var/lib/gate").exists()
