"""The hardened unit (systemd/gate.service) and its sysusers file, checked with systemd's
own tools: `systemd-analyze verify`, `systemd-analyze security --offline`, the syscall
groups behind SystemCallFilter=, and `systemd-sysusers --root`.

The full installer run (tests/gate/tools/test_install.py) verifies the unit once more inside the
tree it built, with the real venv's gatectl as ExecStart.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gate.tools import install
from tests.support import ROOT

UNIT = ROOT / "systemd" / "gate.service"
SYSUSERS = ROOT / "systemd" / "gate.sysusers"
MAX_EXPOSURE = 2.5

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze not installed (CI installs systemd)")


def settings(path: Path = UNIT) -> dict[tuple[str, str], list[str]]:
    """(section, key) -> every value assigned, in order (no continuation lines used)."""
    out: dict[tuple[str, str], list[str]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault((section, key.strip()), []).append(value.strip())
    return out


S = settings()


def one(key: str, section: str = "Service") -> str:
    values = S.get((section, key))
    assert values, f"[{section}] {key}= is missing from {UNIT.name}"
    return values[-1]


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, check=False,
                          timeout=60)


def staged_root(tmp_path: Path, *, with_binary: bool = True) -> Path:
    """A root holding the distribution's units, our unit and (optionally) a stand-in for
    the venv's gatectl. `verify --root` needs the units the default dependencies name
    (sysinit.target, ...) and checks ExecStart's binary inside that root."""
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/gate.service").write_text(UNIT.read_text())
    if with_binary:
        exe = root / "opt/gate/venv/bin/gatectl"
        exe.parent.mkdir(parents=True)
        exe.write_text("#!/bin/sh\nexit 0\n")
        exe.chmod(0o755)
    return root


# --- the settings the promises depend on ------------------------------------------------

def test_service_type_watchdog_and_restart_policy():
    assert one("Type") == "notify"
    assert one("NotifyAccess") == "main"
    assert one("ExecStart") == "/opt/gate/venv/bin/gatectl --config /etc/gate/gate.toml run"
    assert "GATE_MODELS_DIR=/opt/gate/models" in S[("Service", "Environment")]
    assert one("WatchdogSec") == "30"
    assert int(one("TimeoutStartSec")) >= 60  # model load + decrypting 100k on a Pi
    assert 5 <= int(one("TimeoutStopSec")) <= 60
    assert one("Restart") == "on-failure"
    assert int(one("RestartSec")) >= 1
    assert int(one("StartLimitIntervalSec", "Unit")) > 0
    assert int(one("StartLimitBurst", "Unit")) > 0
    # Invalid config (3) and missing/unpinned models (4): restarting cannot help.
    assert set(one("RestartPreventExitStatus").split()) >= {"3", "4"}
    assert one("WantedBy", "Install") == "multi-user.target"
    # The camera's device groups must exist when DeviceAllow= is resolved at start.
    assert "modprobe@videodev.service" in S[("Unit", "Wants")]
    assert "modprobe@videodev.service" in S[("Unit", "After")]


def test_user_directories_and_umask():
    assert one("User") == "gate"
    assert one("Group") == "gate"
    assert one("StateDirectory") == "gate"
    assert one("StateDirectoryMode") == "0700"
    assert one("RuntimeDirectory") == "gate"
    assert one("RuntimeDirectoryMode") == "0750"
    assert one("ConfigurationDirectory") == "gate"
    assert one("UMask") == "0077"
    assert one("WorkingDirectory") == "/run/gate"  # lgpio's FIFOs go to the cwd


def test_no_core_dumps_and_memory_can_be_locked():
    assert one("LimitCORE") == "0"
    limit = one("LimitMEMLOCK")
    m = re.fullmatch(r"(\d+)([KMG]?)", limit)
    assert m, limit
    value = int(m.group(1)) * {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}[m.group(2)]
    # RLIMIT_MEMLOCK is checked against the locked address space; VmPeak measured 978 MB
    # with the pipeline and 100k templates loaded (see the unit's comment).
    assert value >= 2**31


def test_sandbox_settings():
    for key, value in {
        "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
        "NoNewPrivileges": "yes", "CapabilityBoundingSet": "", "AmbientCapabilities": "",
        "SystemCallArchitectures": "native", "LockPersonality": "yes",
        "RestrictRealtime": "yes", "RestrictNamespaces": "yes", "RestrictSUIDSGID": "yes",
        "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes", "ProtectClock": "yes",
        "ProtectHostname": "yes", "ProtectProc": "invisible", "RemoveIPC": "yes",
        "PrivateUsers": "yes", "MemoryDenyWriteExecute": "yes", "DevicePolicy": "closed",
    }.items():
        assert one(key) == value, key
    # Deliberately absent: it would hide /proc/device-tree and /proc/cpuinfo, which
    # gpiozero (board revision) and XNNPACK's CPU detection read on a Pi.
    assert ("Service", "ProcSubset") not in S
    # PrivateDevices would hide the GPIO and camera nodes; DevicePolicy=closed instead.
    assert S.get(("Service", "PrivateDevices"), ["no"])[-1] == "no"


def test_network_is_mqtt_and_local_sockets_on_private_ranges_only():
    assert set(one("RestrictAddressFamilies").split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert one("IPAddressDeny") == "any"
    allowed = one("IPAddressAllow").split()
    assert {"localhost", "link-local", "10.0.0.0/8", "172.16.0.0/12",
            "192.168.0.0/16"} <= set(allowed)
    assert "any" not in allowed and "0.0.0.0/0" not in allowed


def test_devices_are_gpio_and_camera_only():
    allowed = {v.split()[0]: v.split()[1] for v in S[("Service", "DeviceAllow")]}
    assert allowed == {"char-gpiochip": "rw", "char-video4linux": "rw",
                       "char-media": "rw", "char-dma_heap": "rw"}


def test_secrets_come_only_as_encrypted_credentials_the_code_reads():
    creds = S[("Service", "LoadCredentialEncrypted")]
    assert creds == list(install.CREDENTIALS)
    # No path: missing ones are skipped (a gate without sync has no MQTT/sign/seal keys).
    assert not any(":" in c for c in creds)
    assert ("Service", "LoadCredential") not in S
    assert ("Service", "SetCredential") not in S
    # The cache's and template keys are loaded by the template factory, the link's keys
    # by the link, each through gate.credentials (which looks in $CREDENTIALS_DIRECTORY).
    code = ((ROOT / "gate/templates.py").read_text()
            + (ROOT / "gate/link/link.py").read_text())
    for name in creds:
        assert re.search(rf'\b(?:load_key|locate)\(\s*"{re.escape(name)}"', code), \
            f"no code reads the credential {name}"
    reader = (ROOT / "gate/credentials.py").read_text()
    assert '"CREDENTIALS_DIRECTORY"' in reader


def _expand(group: str, seen: set[str] | None = None) -> set[str]:
    """System calls of a syscall group, nested groups included."""
    seen = set() if seen is None else seen
    out = analyze("syscall-filter", group)
    assert out.returncode == 0, out.stderr
    calls: set[str] = set()
    for line in out.stdout.splitlines()[1:]:
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        if name.startswith("@"):
            if name not in seen:
                seen.add(name)
                calls |= _expand(name, seen)
        else:
            calls.add(name)
    return calls


@needs_analyze
def test_syscall_filter_keeps_mlock_and_prctl_allowed():
    filters = S[("Service", "SystemCallFilter")]
    allow = [f for f in filters if not f.startswith("~")]
    deny = [f[1:] for f in filters if f.startswith("~")]
    assert allow == ["@system-service"]
    assert set(" ".join(deny).split()) >= {"@privileged", "@resources"}
    allowed = _expand("@system-service")
    denied: set[str] = set()
    for group in " ".join(deny).split():
        denied |= _expand(group)
    needed = {"mlockall", "mlock", "prctl", "prlimit64"}  # harden: mlock, no dumps
    assert needed <= allowed
    assert not needed & denied, needed & denied
    assert {"setuid", "capset", "sched_setscheduler"} <= denied
    assert one("SystemCallErrorNumber") == "EPERM"


# --- systemd's own checks -------------------------------------------------------------------

def verify(root: Path) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze verify`` of the unit staged in ``root`` (with its drop-ins)."""
    return analyze("verify", f"--root={root}", str(root / "etc/systemd/system/gate.service"))


def verified_clean(done: subprocess.CompletedProcess[str]) -> bool:
    # Warnings (unknown keys, bad values) leave the exit code 0: no output is the bar.
    return done.returncode == 0 and not (done.stdout + done.stderr).strip()


def exposure(done: subprocess.CompletedProcess[str]) -> float:
    """The overall exposure level ``systemd-analyze security`` printed."""
    assert done.returncode == 0, done.stderr
    m = re.search(r"Overall exposure level for gate\.service: (\d+(?:\.\d+)?)", done.stdout)
    assert m, done.stdout[-500:]
    return float(m.group(1))


@needs_analyze
def test_verify_passes_in_a_root_with_the_executable(tmp_path):
    done = verify(staged_root(tmp_path))
    assert verified_clean(done), done.stderr


@needs_analyze
def test_verify_really_checks_the_executable_and_unknown_keys(tmp_path):
    root = staged_root(tmp_path, with_binary=False)
    unit = root / "etc/systemd/system/gate.service"
    done = verify(root)
    assert done.returncode != 0 and "/opt/gate/venv/bin/gatectl" in done.stderr
    unit.write_text(UNIT.read_text().replace("LockPersonality=", "LockPersonalty="))
    done = analyze("verify", str(unit))
    assert "Unknown key" in done.stderr


@needs_analyze
def test_exposure_score_is_at_most_2_5():
    done = analyze("security", "--offline=true", str(UNIT))
    assert exposure(done) <= MAX_EXPOSURE, done.stdout


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None,
                    reason="systemd-sysusers not installed (CI installs systemd)")
def test_sysusers_creates_user_and_groups_like_plain_debian(tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir()
    # As on plain Debian: video exists (static gid 44), gpio does not.
    (etc / "group").write_text("root:x:0:\nvideo:x:44:\n")
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    done = subprocess.run(["systemd-sysusers", f"--root={tmp_path}", str(SYSUSERS)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    users = {line.split(":")[0]: line.split(":") for line in
             (etc / "passwd").read_text().splitlines()}
    groups = {line.split(":")[0]: line.split(":") for line in
              (etc / "group").read_text().splitlines()}
    gate = users["gate"]
    assert int(gate[2]) < 1000 and gate[6] == "/usr/sbin/nologin"  # system user, no login
    assert groups["gate"][2] == gate[3]
    assert groups["video"][2] == "44" and groups["video"][3] == "gate"  # joined, not recreated
    assert groups["gpio"][3] == "gate"  # created as a system group
    # Applying it again (systemd-sysusers.service at every boot) changes nothing.
    before = (etc / "passwd").read_text(), (etc / "group").read_text()
    subprocess.run(["systemd-sysusers", f"--root={tmp_path}", str(SYSUSERS)], check=True,
                   capture_output=True)
    assert ((etc / "passwd").read_text(), (etc / "group").read_text()) == before
