"""Clean Debian 12 roots for the platform checks: a fresh amd64 machine and an emulated
arm64 (Raspberry Pi) userland, built with debootstrap and entered with chroot.

    python3 tools/rootfs.py build --arch arm64 --root build/roots/arm64 --include python3,…
    python3 tools/rootfs.py run --root build/roots/arm64 [--bind HOST:GUEST] -- CMD…

Standard library only (the host's python3 runs it, as root). A root is built once and
reused (``ROOT/.complete``); delete the folder to rebuild it. ``run`` mounts proc, sys and
dev, copies the host's resolver, CA bundle, pip and npm configuration into the root (pip in
the root must trust what the host trusts), runs CMD with a clean environment and unmounts
whatever happens.

arm64 runs under qemu-user through binfmt_misc. Where the kernel refuses binfmt_misc,
``build`` says so in one line and exits 77 (the caller skips). Under qemu-user
``/proc/cpuinfo`` shows the x86 host, and TFLite's CPU feature probe then crashes in
``allocate_tensors()``; ``run`` bind-mounts the emulated core's cpuinfo over it
(``QEMU_CPU``, a Pi 5's Cortex-A76 by default).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

SKIP = 77
SUITE = "bookworm"
MIRROR_DEFAULT = "http://deb.debian.org/debian"
#: What a Raspberry Pi 5 (Cortex-A76) reports: enough for the runtimes' feature probe.
#: The cores an emulated root can be, as their kernels describe them in /proc/cpuinfo
#: (implementer ARM; variant, part, revision; the Features line). TFLite's CPU probe
#: (the cpuinfo library) trusts the part number as much as the Features line: XNNPACK
#: picks its dot-product kernels for a part that has them, so the cpuinfo must name the
#: core qemu emulates (an A76 cpuinfo over an emulated A72 made every int8 model SIGILL).
AARCH64_CORES = {
    # Raspberry Pi 5 (BCM2712)
    "cortex-a76": ("0x4", "0xd0b", "1", "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics "
                   "fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"),
    # Raspberry Pi 4 (BCM2711)
    "cortex-a72": ("0x0", "0xd08", "3", "fp asimd evtstrm crc32 cpuid"),
    # Raspberry Pi 3 and Zero 2 W
    "cortex-a53": ("0x0", "0xd03", "4", "fp asimd evtstrm crc32 cpuid"),
}
DEFAULT_CORE = "cortex-a76"


def aarch64_cpuinfo(core: str) -> str:
    """A four-core /proc/cpuinfo for ``core`` (a key of AARCH64_CORES)."""
    if core not in AARCH64_CORES:
        raise RootfsError(f"QEMU_CPU={core}: no /proc/cpuinfo known for it; one of "
                          f"{', '.join(AARCH64_CORES)}")
    variant, part, revision, features = AARCH64_CORES[core]
    return "".join(
        f"processor\t: {n}\nBogoMIPS\t: 108.00\nFeatures\t: {features}\n"
        f"CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: {variant}\n"
        f"CPU part\t: {part}\nCPU revision\t: {revision}\n\n" for n in range(4))


#: Host files a root needs to reach the registries exactly as the host does.
HOST_FILES = ("/etc/resolv.conf", "/etc/ssl/certs/ca-certificates.crt", "/etc/pip.conf",
              "/root/.npmrc", "/etc/npmrc", "/usr/etc/npmrc")
#: What Debian's installer writes and debootstrap does not: without it "localhost" does
#: not resolve in the root (the broker tests connect to it).
HOSTS = "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n"
#: Environment passed into the root (everything else is dropped).
PASS_ENV = ("PIP_CERT", "PIP_DEFAULT_TIMEOUT", "PIP_DISABLE_PIP_VERSION_CHECK",
            "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
            "http_proxy", "https_proxy", "no_proxy", "NODE_EXTRA_CA_CERTS", "QEMU_CPU")


class RootfsError(Exception):
    """A root cannot be built or entered (one line)."""


def host_mirror(sources: tuple[Path, ...] = (Path("/etc/apt/sources.list.d"),
                                            Path("/etc/apt/sources.list"))) -> str:
    """The Debian mirror the host's apt already uses (the registry CI can reach)."""
    texts = []
    for src in sources:
        if src.is_dir():
            texts += [p.read_text(errors="replace") for p in sorted(src.glob("*"))
                      if p.suffix in (".sources", ".list")]
        elif src.is_file():
            texts.append(src.read_text(errors="replace"))
    for text in texts:
        for raw in text.splitlines():
            line = raw.strip()
            m = re.match(r"URIs:\s*(\S+)", line) or re.match(r"deb\s+(?:\[[^]]*\]\s+)?(\S+)",
                                                            line)
            if m and "security" not in m.group(1) and m.group(1).startswith("http"):
                return m.group(1).rstrip("/")
    return MIRROR_DEFAULT


def binfmt_ready(arch: str) -> str | None:
    """None when ``arch`` binaries run here; otherwise why not, in one line."""
    if arch in ("amd64", "x86_64") or os.uname().machine in ("aarch64", "arm64"):
        return None
    entry = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    if not Path("/proc/sys/fs/binfmt_misc/status").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc",
                        "/proc/sys/fs/binfmt_misc"], capture_output=True, check=False)
    if not Path("/proc/sys/fs/binfmt_misc/status").exists():
        return "the kernel refuses binfmt_misc (cannot mount /proc/sys/fs/binfmt_misc)"
    if not entry.exists() or "enabled" not in entry.read_text():
        subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], capture_output=True,
                       check=False)
    if not entry.exists() or "enabled" not in entry.read_text():
        return "binfmt_misc has no enabled qemu-aarch64 handler (is qemu-user-static installed?)"
    return None


def mounted_under(root: Path, mounts: Path = Path("/proc/self/mounts")) -> list[str]:
    """Mount points inside ``root`` (a run that was killed may have left its binds)."""
    inside = str(root.resolve()) + "/"
    points = [line.split()[1] for line in mounts.read_text().splitlines() if line.strip()]
    return [p for p in points if (p + "/").startswith(inside)]


def build(arch: str, root: Path, include: str, mirror: str, apt: str = "") -> int:
    """debootstrap a minbase root once, then ``apt`` packages with apt-get inside it
    (debootstrap's own resolver cannot install packages that depend on virtual ones,
    npm's for instance); 0 when ready, SKIP when the arch cannot run here. A root built
    with other packages is built again: a cached root must not hide a missing one."""
    spec = f"{arch} {SUITE} {include} {apt}\n"
    marker = root / ".complete"
    if marker.exists():
        if marker.read_text() == spec:
            print(f"rootfs: {root} is ready (delete it to rebuild)")
            return 0
        print(f"rootfs: {root} was built with other packages ({marker.read_text().strip()});"
              " building it again")
    why = binfmt_ready(arch)
    if why is not None:
        print(f"rootfs: skipped, {arch} cannot run on this machine: {why}")
        return SKIP
    if shutil.which("debootstrap") is None:
        raise RootfsError("debootstrap is not installed: bash tools/sysdeps.sh rootfs")
    if root.exists():
        busy = mounted_under(root)
        if busy:  # never delete through a bind mount into the host
            raise RootfsError(f"{busy[0]} is still mounted: umount -R -l it, then run again")
        shutil.rmtree(root)  # a half-built or outdated root
    root.parent.mkdir(parents=True, exist_ok=True)
    print(f"rootfs: debootstrap {arch} {SUITE} into {root} from {mirror} (a few minutes)")
    cmd = ["debootstrap", f"--arch={arch}", "--variant=minbase", f"--include={include}",
           SUITE, str(root), mirror]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
        raise RootfsError(f"debootstrap failed ({done.returncode}): {' | '.join(tail)}")
    if apt:
        copy_host_files(root)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive",
               "LANG": "C.UTF-8"}
        with Mounted(root, [], cpuinfo=None):
            for cmd in (["apt-get", "update", "-qq"],
                        ["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                         *apt.split(",")]):
                done = subprocess.run(["chroot", str(root), *cmd], env=env,
                                      capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
                    raise RootfsError(f"{' '.join(cmd[:2])} in the root failed: "
                                      f"{' | '.join(tail)}")
    marker.write_text(spec)
    return 0


class Mounted:
    """proc, sys, dev (and an aarch64 cpuinfo) mounted in a root; unmounted on exit."""

    def __init__(self, root: Path, binds: list[tuple[Path, str]], cpuinfo: str | None) -> None:
        self.root, self.binds, self.cpuinfo = root, binds, cpuinfo
        self.mounted: list[Path] = []

    def _mount(self, args: list[str], target: Path, *, file: bool = False) -> None:
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            if file:
                target.touch()
            else:
                target.mkdir()
        subprocess.run(["mount", *args, str(target)], check=True, capture_output=True)
        self.mounted.append(target)

    def __enter__(self) -> Mounted:
        r = self.root
        try:
            self._mount(["-t", "proc", "proc"], r / "proc")
            self._mount(["--rbind", "/sys"], r / "sys")
            self._mount(["--rbind", "/dev"], r / "dev")
            if self.cpuinfo:
                info = r / "run" / "aarch64-cpuinfo"
                info.parent.mkdir(parents=True, exist_ok=True)
                info.write_text(self.cpuinfo)
                self._mount(["--bind", str(info)], r / "proc" / "cpuinfo", file=True)
            for host, guest in self.binds:
                self._mount(["--bind", str(host)], r / guest.lstrip("/"), file=host.is_file())
        except (subprocess.CalledProcessError, OSError) as exc:
            self.__exit__()
            raise RootfsError(f"cannot mount in {r}: {exc}") from None
        return self

    def __exit__(self, *_: object) -> None:
        for target in reversed(self.mounted):
            subprocess.run(["umount", "-R", "-l", str(target)], capture_output=True,
                           check=False)
        self.mounted.clear()


def copy_host_files(root: Path) -> None:
    """The host's resolver, CA bundle and registry configuration, into the root."""
    for name in HOST_FILES:
        src = Path(name)
        if src.is_file():
            dst = root / name.lstrip("/")
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
    hosts = root / "etc" / "hosts"
    if not hosts.is_file() or "localhost" not in hosts.read_text(errors="replace"):
        hosts.write_text(HOSTS)
    xdg = Path("/etc/xdg/pip")
    if xdg.is_dir():
        shutil.copytree(xdg, root / "etc/xdg/pip", dirs_exist_ok=True)


def run(root: Path, command: list[str], binds: list[tuple[Path, str]]) -> int:
    """Run ``command`` in the root (as root, clean environment); its exit status."""
    if not (root / ".complete").exists():
        raise RootfsError(f"{root}: not built (python3 tools/rootfs.py build …)")
    copy_host_files(root)
    arch = (root / ".complete").read_text().split()[0]
    env = {"HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb",
           "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    env.update({k: os.environ[k] for k in PASS_ENV if k in os.environ})
    cpuinfo = None
    if arch == "arm64" and os.uname().machine not in ("aarch64", "arm64"):
        # qemu's own default core ("max") is no Pi: emulate a Pi 5's unless told otherwise,
        # and show the same core in /proc/cpuinfo.
        env["QEMU_CPU"] = env.get("QEMU_CPU") or DEFAULT_CORE
        cpuinfo = aarch64_cpuinfo(env["QEMU_CPU"])
    with Mounted(root, binds, cpuinfo=cpuinfo):
        return subprocess.run(["chroot", str(root), *command], env=env,
                              check=False).returncode


def _bind(spec: str) -> tuple[Path, str]:
    host, sep, guest = spec.partition(":")
    if not sep or not guest.startswith("/") or not Path(host).exists():
        raise argparse.ArgumentTypeError(f"{spec!r}: expected EXISTING_HOST_PATH:/GUEST_PATH")
    return Path(host), guest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--arch", choices=("amd64", "arm64"), required=True)
    b.add_argument("--root", type=Path, required=True)
    b.add_argument("--include", default="python3,python3-venv,ca-certificates")
    b.add_argument("--apt", default="", help="packages apt-get installs after debootstrap")
    b.add_argument("--mirror", default=None)
    r = sub.add_parser("run")
    r.add_argument("--root", type=Path, required=True)
    r.add_argument("--bind", type=_bind, action="append", default=[])
    r.add_argument("command", nargs="+")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("rootfs: needs root (debootstrap, mount, chroot)", file=sys.stderr)
        return 1
    try:
        if args.cmd == "build":
            for opt, value in (("--include", args.include), ("--apt", args.apt)):
                if value and not re.fullmatch(r"[a-z0-9.+-]+(,[a-z0-9.+-]+)*", value):
                    raise RootfsError(f"{opt} {value!r}: comma-separated package names")
            return build(args.arch, args.root, args.include, args.mirror or host_mirror(),
                         args.apt)
        return run(args.root, args.command, args.bind)
    except RootfsError as exc:
        print(f"rootfs: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
