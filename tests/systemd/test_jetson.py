"""The Jetson CSI drop-in (systemd/gate.service.d/jetson-csi.conf): it adds only what
NVIDIA's Argus camera path needs and is checked by systemd's own tools together with the
unit, as systemd would load them on a Jetson."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support import ROOT
from tests.systemd.test_unit import (
    MAX_EXPOSURE,
    analyze,
    exposure,
    needs_analyze,
    settings,
    staged_root,
    verified_clean,
    verify,
)

DROPIN = ROOT / "systemd" / "gate.service.d" / "jetson-csi.conf"
D = settings(DROPIN)


def with_dropin(tmp_path: Path, text: str | None = None) -> Path:
    root = staged_root(tmp_path)
    d = root / "etc/systemd/system/gate.service.d"
    d.mkdir()
    (d / DROPIN.name).write_text(DROPIN.read_text() if text is None else text)
    return root


def test_it_adds_the_argus_socket_daemon_and_nvidia_nodes_only():
    assert D[("Unit", "Wants")] == ["nvargus-daemon.service"]
    assert D[("Unit", "After")] == ["nvargus-daemon.service"]
    assert D[("Service", "BindPaths")] == ["-/tmp/argus_socket"]
    devices = [v.split() for v in D[("Service", "DeviceAllow")]]
    assert all(mode == "rw" for _, mode in devices)
    for node, _ in devices:
        assert re.fullmatch(r"/dev/(nvmap|nvhost-[a-z-]+|host1x-fence)|char-drm", node), node
    # Nothing of the unit's hardening is loosened.
    loosened = {k for (_, k) in D} & {
        "PrivateTmp", "DevicePolicy", "MemoryDenyWriteExecute", "ProtectSystem", "User",
        "NoNewPrivileges", "CapabilityBoundingSet", "SystemCallFilter", "PrivateUsers",
        "RestrictAddressFamilies", "IPAddressAllow", "ExecStart"}
    assert not loosened, loosened
    assert set(D) == {("Unit", "Wants"), ("Unit", "After"), ("Service", "BindPaths"),
                      ("Service", "DeviceAllow")}


@needs_analyze
def test_verify_passes_with_the_dropin(tmp_path):
    done = verify(with_dropin(tmp_path))
    assert verified_clean(done), done.stderr


@needs_analyze
def test_verify_reads_the_dropin(tmp_path):
    """A mistake in the drop-in is reported: the check above really loads it."""
    done = verify(with_dropin(tmp_path, DROPIN.read_text().replace("BindPaths=", "BindPath=")))
    assert "Unknown key" in done.stderr and "BindPath" in done.stderr


@needs_analyze
def test_exposure_with_the_dropin_is_at_most_2_5(tmp_path):
    root = with_dropin(tmp_path)
    done = analyze("security", "--offline=true", f"--root={root}", "gate.service")
    assert exposure(done) <= MAX_EXPOSURE, done.stdout[-400:]
    assert "/dev/nvmap:rw" in done.stdout  # the drop-in was loaded
