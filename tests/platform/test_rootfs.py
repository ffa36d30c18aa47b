"""tools/rootfs.py, the clean Debian roots of test-fresh-debian and test-arm64: what can be
checked without building one (that takes minutes and runs in CI's platform step)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "rootfs.py"
_spec = importlib.util.spec_from_file_location("rootfs", SCRIPT)
assert _spec and _spec.loader
rootfs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rootfs)


def test_the_mirror_is_the_one_apt_uses(tmp_path):
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n\n"
        "Types: deb\nURIs: http://security.example/debian-security\n")
    assert rootfs.host_mirror((d,)) == "http://mirror.example/debian"
    one = tmp_path / "sources.list"
    one.write_text("# comment\ndeb [arch=amd64] http://other.example/debian bookworm main\n")
    assert rootfs.host_mirror((tmp_path / "none", one)) == "http://other.example/debian"
    assert rootfs.host_mirror((tmp_path / "none",)) == rootfs.MIRROR_DEFAULT


def test_the_emulated_cpuinfo_names_the_emulated_core():
    """TFLite's probe picks XNNPACK's dot-product kernels by the part number: an A76
    cpuinfo over an emulated A72 made every int8 model die with SIGILL (sdot)."""
    a76 = rootfs.aarch64_cpuinfo("cortex-a76")
    assert "CPU part\t: 0xd0b" in a76 and " asimddp" in a76 and a76.count("processor") == 4
    a72 = rootfs.aarch64_cpuinfo("cortex-a72")
    assert "CPU part\t: 0xd08" in a72 and "asimddp" not in a72 and "atomics" not in a72
    assert "CPU part\t: 0xd03" in rootfs.aarch64_cpuinfo("cortex-a53")
    with pytest.raises(rootfs.RootfsError, match="QEMU_CPU=max: no /proc/cpuinfo"):
        rootfs.aarch64_cpuinfo("max")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True,
                          text=True, timeout=60, check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="the argument checks come after the root check")
@pytest.mark.parametrize("include", ["python3;rm -rf /", "a,,b", "Python3", " ", "a b"])
def test_package_lists_are_refused_in_one_line(tmp_path, include):
    out = run("build", "--arch", "amd64", "--root", str(tmp_path / "r"), "--include", include)
    assert out.returncode == 1 and out.stderr.startswith("rootfs: --include")
    assert len(out.stderr.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the argument checks come after the root check")
def test_an_unbuilt_root_or_a_bad_bind_is_one_line(tmp_path):
    out = run("run", "--root", str(tmp_path), "--", "true")
    assert out.returncode == 1 and "not built" in out.stderr
    out = run("run", "--root", str(tmp_path), "--bind", "/nonexistent:/x", "--", "true")
    assert out.returncode == 2 and "EXISTING_HOST_PATH" in out.stderr


def test_a_root_resolves_localhost_like_an_installed_debian(tmp_path):
    """debootstrap writes no /etc/hosts: without one the broker tests cannot reach
    "localhost" in the root (found by test-fresh-debian's first CI run)."""
    rootfs.copy_host_files(tmp_path)
    assert "127.0.0.1\tlocalhost" in (tmp_path / "etc" / "hosts").read_text()
    (tmp_path / "etc" / "hosts").write_text("10.0.0.1 gate\n")  # kept only with localhost
    rootfs.copy_host_files(tmp_path)
    assert "localhost" in (tmp_path / "etc" / "hosts").read_text()


def test_a_cached_root_with_other_packages_is_built_again(tmp_path, monkeypatch, capsys):
    root = tmp_path / "r"
    root.mkdir()
    (root / ".complete").write_text(f"arm64 {rootfs.SUITE} python3,make \n")
    monkeypatch.setattr(rootfs, "binfmt_ready", lambda _arch: "binfmt_misc refused (test)")
    assert rootfs.build("arm64", root, "python3,make", "http://m") == 0  # the same: reused
    assert "is ready" in capsys.readouterr().out
    assert rootfs.build("arm64", root, "python3,make,systemd", "http://m") == rootfs.SKIP
    assert "built with other packages" in capsys.readouterr().out


def test_a_root_with_something_mounted_in_it_is_never_deleted(tmp_path, monkeypatch):
    root = tmp_path / "r"
    (root / "proc").mkdir(parents=True)
    (root / "etc").mkdir()
    mounts = tmp_path / "mounts"
    mounts.write_text(f"proc {root}/proc proc rw 0 0\n/dev/sda1 /work ext4 rw 0 0\n")
    assert rootfs.mounted_under(root, mounts) == [f"{root}/proc"]
    assert rootfs.mounted_under(tmp_path / "other", mounts) == []
    monkeypatch.setattr(rootfs, "binfmt_ready", lambda _arch: None)
    monkeypatch.setattr(rootfs.shutil, "which", lambda name: "/usr/sbin/" + name)
    monkeypatch.setattr(rootfs, "mounted_under", lambda r: [f"{r}/proc"])
    with pytest.raises(rootfs.RootfsError, match="still mounted"):
        rootfs.build("arm64", root, "python3", "http://m")
    assert (root / "etc").is_dir()  # nothing deleted
