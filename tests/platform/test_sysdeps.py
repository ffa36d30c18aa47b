"""tools/sysdeps.sh: the one list of system packages that `make demo`, `make test` and
`.ci/run` install from. Run against stand-ins for dpkg-query, id, apt-get and sudo."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from central.broker import mosquitto_binary
from central.errors import BrokerError

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "sysdeps.sh"
TOOLS = ("bash", "grep", "sort", "tr", "sed", "cat", "npm")
BASE = {"libgl1", "libglib2.0-0", "mosquitto", "systemd"}


def machine(tmp_path: Path, *, installed: set[str], uid: int = 0, sudo: bool = False,
            apt: bool = True, dpkg: bool = True) -> tuple[dict[str, str], Path]:
    """A PATH holding only the tools the script may use, with stand-ins; the log file
    that records what apt-get was asked."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for tool in TOOLS:
        real = shutil.which(tool)
        if real:
            (bin_ / tool).symlink_to(real)
    # The interpreter itself, not a version manager's shim that needs its own PATH.
    (bin_ / "python3").symlink_to(Path(sys.executable).resolve())
    log = tmp_path / "apt.log"
    stubs = {"id": f'[ "$1" = -u ] && echo {uid}'}
    if dpkg:
        stubs["dpkg-query"] = ('for p in $INSTALLED; do [ "$p" = "${@: -1}" ] && '
                               '{ printf "install ok installed"; exit 0; }; done; exit 1')
    if apt:
        stubs["apt-get"] = f'echo "$@" >> {log}'
    if sudo:
        stubs["sudo"] = "exit 0"
    for name, body in stubs.items():
        (bin_ / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_ / name).chmod(0o755)
    env = {"PATH": str(bin_), "INSTALLED": " ".join(sorted(installed)),
           "SYSDEPS_OS_RELEASE": str(tmp_path / "os-release"),
           "SYSDEPS_DT_MODEL": str(tmp_path / "model")}
    (tmp_path / "os-release").write_text('ID=debian\nPRETTY_NAME="Debian GNU/Linux 12"\n')
    return env, log


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def test_nothing_to_do_when_everything_is_there(tmp_path):
    env, log = machine(tmp_path, installed=BASE)
    out = run(env)
    assert out.returncode == 0, out.stderr
    assert not log.exists() and out.stdout == out.stderr == ""


def test_root_installs_exactly_what_is_missing(tmp_path):
    env, log = machine(tmp_path, installed=BASE - {"mosquitto", "libgl1"})
    out = run(env)
    assert out.returncode == 0, out.stderr
    calls = log.read_text().splitlines()
    assert calls[0].startswith("update")
    assert calls[1].split()[-2:] == ["libgl1", "mosquitto"]
    assert "install" in calls[1] and "-y" in calls[1]


def test_without_root_it_prints_the_sudo_line_and_fails(tmp_path):
    env, log = machine(tmp_path, installed=BASE - {"mosquitto"}, uid=1000, sudo=True)
    out = run(env)
    assert out.returncode == 1 and not log.exists()
    assert "sudo apt-get install -y --no-install-recommends mosquitto" in out.stderr


def test_without_root_or_sudo_it_says_so_and_fails(tmp_path):
    env, log = machine(tmp_path, installed=BASE - {"systemd"}, uid=1000)
    out = run(env)
    assert out.returncode == 1 and not log.exists()
    assert "(systemd)" in out.stderr and "neither" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_not_debian_is_one_clear_line(tmp_path):
    env, _ = machine(tmp_path, installed=set(), dpkg=False)
    out = run(env)
    assert out.returncode == 1 and "not a Debian-based system" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("profile", ["", "Base", "base;rm", "../x", "-x"])
def test_an_unknown_profile_is_refused(tmp_path, profile):
    env, log = machine(tmp_path, installed=BASE)
    out = run(env, profile)
    assert out.returncode == 2 and "unknown profile" in out.stderr and not log.exists()


@pytest.mark.parametrize("how", ["os-release", "device-tree"])
def test_raspberry_pi_os_adds_the_camera_stack_and_venvs_see_it(tmp_path, how):
    env, log = machine(tmp_path, installed=BASE)
    assert run(env, "--venv-options").stdout == ""  # not a Pi
    if how == "os-release":
        (tmp_path / "os-release").write_text('ID=debian\nPRETTY_NAME="Raspberry Pi OS"\n'
                                             "ID_LIKE=debian\n")
    else:
        (tmp_path / "model").write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\0")
    assert run(env, "--venv-options").stdout.strip() == "--system-site-packages"
    pi = ["python3-lgpio", "python3-libcamera", "python3-picamera2"]
    assert run(env, "--missing").stdout.split() == pi
    assert run(env, "--missing", "runtime").stdout.split() == pi
    assert run(env).returncode == 0
    assert log.read_text().splitlines()[1].split()[-3:] == pi


def test_platform_profiles_list_their_tools(tmp_path):
    env, _ = machine(tmp_path, installed=BASE - {"libgl1", "mosquitto"})
    # A gate needs OpenCV's libraries; the broker is for the demo and the tests.
    assert run(env, "--missing", "runtime").stdout.split() == ["libgl1"]
    env, _ = machine(tmp_path / "all", installed=BASE)
    assert run(env, "--missing", "rootfs").stdout.split() == ["debootstrap"]
    assert run(env, "--missing", "arm64").stdout.split() == [
        "binfmt-support", "debootstrap", "qemu-user-static"]
    # picamera2 from PyPI (no Raspberry Pi OS): what pip needs to build its dependencies.
    assert run(env, "--missing", "runtime", "pi-pypi").stdout.split() == [
        "gcc", "libarchive13", "libc6-dev", "libcap-dev", "python3-dev"]


def test_make_demo_test_and_ci_use_the_one_list():
    make = (ROOT / "Makefile").read_text()
    for target in ("demo", "test", "models"):
        line = re.search(rf"^{target}:(.*)$", make, re.M)
        assert line and "sysdeps" in line.group(1), target
    assert re.search(r"^sysdeps:\n\t@bash tools/sysdeps.sh base$", make, re.M)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash tools/sysdeps.sh base" in ci
    # No second package list: nothing else in CI or the Makefile calls apt-get.
    for text in (ci, make):
        code = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
        assert not any("apt-get" in ln for ln in code)


def test_a_test_that_needs_the_broker_fails_without_one(monkeypatch):
    """Never a silent skip: without mosquitto the broker cannot start, loudly."""
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr("central.broker._FALLBACK", "/nonexistent/mosquitto")
    with pytest.raises(BrokerError, match="mosquitto is not installed"):
        mosquitto_binary()
    assert os.environ["PATH"] == "/nonexistent"
