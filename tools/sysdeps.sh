#!/usr/bin/env bash
# The system packages this project needs, in one place: `make demo`, `make test`, `.ci/run`
# and the platform checks all call this script, so there is no second list.
#
#   tools/sysdeps.sh [PROFILE...]    install what is missing (profiles below; default: base)
#   tools/sysdeps.sh --missing [P]   print what is missing, install nothing
#   tools/sysdeps.sh --venv-options  print the options `python3 -m venv` needs here
#
# Profiles: runtime (a gate), base (the runtime's plus what the demo and the tests need),
# pi-pypi (picamera2 from PyPI where apt's is missing), rootfs (a clean Debian root:
# test-fresh-debian), arm64 (an emulated aarch64 root).
#
# As root with apt-get it installs what is missing. Otherwise it prints the one
# `sudo apt-get install …` line (when sudo exists) or says that it cannot, and fails:
# nothing that needs a package is skipped silently. On Raspberry Pi OS the camera stack
# and GPIO library (python3-picamera2, python3-libcamera, python3-lgpio) are part of
# runtime, and venvs see them through --system-site-packages.
set -euo pipefail

OS_RELEASE=${SYSDEPS_OS_RELEASE:-/etc/os-release}
DT_MODEL=${SYSDEPS_DT_MODEL:-/proc/device-tree/model}

is_pi() {
    # Raspberry Pi OS says so in os-release (ID=raspbian on 32-bit, a debian ID with a
    # Raspberry Pi name on 64-bit); the board itself in the device tree.
    grep -qsi 'raspbian\|raspberry pi' "$OS_RELEASE" && return 0
    grep -qsai 'raspberry pi' "$DT_MODEL" && return 0
    return 1
}

wanted() {
    local profile=$1
    case $profile in
        runtime)
            # What a gate needs to run: OpenCV's libraries; on a Pi the camera stack and
            # lgpio, gpiozero's pin library on the Pi 5.
            echo libgl1 libglib2.0-0
            if is_pi; then echo python3-picamera2 python3-libcamera python3-lgpio; fi
            ;;
        base)
            # The runtime's, and for the demo and the tests: mosquitto (the sync tests and
            # the demo's broker), systemd (the unit checks), npm (the embedder's package).
            wanted runtime
            echo mosquitto systemd
            command -v npm >/dev/null 2>&1 || echo npm
            python3 -c 'import ensurepip, venv' 2>/dev/null || echo python3-venv
            ;;
        pi-pypi)
            # Where Raspberry Pi OS's python3-picamera2 is not to be had (plain Debian on
            # arm64, the emulated check): pip builds two of picamera2's dependencies from
            # source, python-prctl (libcap) and PiDNG, and libarchive-c loads libarchive.
            echo gcc libc6-dev python3-dev libcap-dev libarchive13
            ;;
        rootfs) echo debootstrap ;;
        arm64) echo debootstrap qemu-user-static binfmt-support ;;
        *) echo "sysdeps: unknown profile '$profile' (runtime, base, pi-pypi, rootfs, arm64)" >&2
           return 2 ;;
    esac
}

installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

missing() {
    local p
    for profile in "$@"; do
        for p in $(wanted "$profile"); do
            installed "$p" || echo "$p"
        done
    done | sort -u | tr '\n' ' ' | sed 's/ $//'
}

main() {
    if [ "${1:-}" = "--venv-options" ]; then
        if is_pi; then echo --system-site-packages; fi
        return 0
    fi
    local only_print=0
    if [ "${1:-}" = "--missing" ]; then only_print=1; shift; fi
    [ $# -gt 0 ] || set -- base
    for profile in "$@"; do wanted "$profile" >/dev/null || return 2; done
    if ! command -v dpkg-query >/dev/null 2>&1; then
        echo "sysdeps: this is not a Debian-based system (no dpkg-query): install the" \
             "equivalents of: $(for p in "$@"; do wanted "$p"; done | tr '\n' ' ')" >&2
        return 1
    fi
    local need
    need=$(missing "$@")
    if [ $only_print -eq 1 ]; then
        [ -z "$need" ] || echo "$need"
        return 0
    fi
    [ -n "$need" ] || return 0
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "sysdeps: installing $need"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        # shellcheck disable=SC2086  # the package list is split on purpose
        apt-get install -y -qq --no-install-recommends $need
        return 0
    fi
    if command -v sudo >/dev/null 2>&1; then
        echo "sysdeps: missing system packages; run this, then the same make command again:" >&2
        echo "    sudo apt-get install -y --no-install-recommends $need" >&2
    else
        echo "sysdeps: missing system packages ($need) and this user can neither install" \
             "them (not root) nor use sudo: ask the machine's administrator to install them" >&2
    fi
    return 1
}

main "$@"
