#!/usr/bin/env bash
# `make test-fresh-debian`: the README's two commands, exactly, on a fresh Debian 12.
#
# A minbase root with what a new user's machine has (Python 3 with venv, npm, make, git;
# no Mosquitto, no OpenCV libraries, nothing of this project), a fresh `git clone` of
# this checkout's HEAD in it, and the README's quick start read out of README.md and run
# there as root: `make demo`, then `make test`, which must install every system package
# they need themselves (tools/sysdeps.sh). The host's pip and npm download caches are
# lent to the root when present (downloads only; what gets installed is decided inside).
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=${FRESH_ROOT:-build/roots/debian12-amd64}  # built once, never run in
ROOT=$BASE-run                                   # a fresh copy of it for each run
PY=${PYTHON:-python3}

bash tools/sysdeps.sh rootfs
$PY tools/rootfs.py build --arch amd64 --root "$BASE" \
    --include python3,python3-venv,make,git,ca-certificates --apt npm

# The README's quick start, as .ci/run reads it.
quick_start=$(awk '/^```sh$/ {inside=1; next} /^```$/ {if (inside) exit} inside' README.md)
[ "$(printf '%s\n' "$quick_start" | tr '\n' ' ')" = "make demo make test " ] || {
    echo "test-fresh-debian: README.md's quick start is not 'make demo' then 'make test'" >&2
    exit 1
}

# Each run starts from the pristine root: the last run's make installed packages in its copy.
if mount | grep -q " $PWD/$ROOT/"; then
    echo "test-fresh-debian: $ROOT still has mounts; unmount them first" >&2
    exit 1
fi
rm -rf "$ROOT"
cp -a "$BASE" "$ROOT"
mkdir -p "$ROOT/work"
git clone -q --no-hardlinks "$PWD" "$ROOT/work/gate"
binds=()
for cache in "$HOME/.cache/pip:/root/.cache/pip" "$HOME/.npm:/root/.npm"; do
    host=${cache%%:*}
    if [ -d "$host" ]; then
        mkdir -p "$ROOT${cache#*:}"
        binds+=(--bind "$cache")
    fi
done
start=$(date +%s)
$PY tools/rootfs.py run --root "$ROOT" "${binds[@]}" -- /bin/bash -euo pipefail -c '
cd /work/gate
echo "test-fresh-debian: $(. /etc/os-release; echo "$PRETTY_NAME"), $(python3 --version)"
for tool in mosquitto; do ! command -v $tool >/dev/null || { echo "$tool is already here" >&2; exit 1; }; done
echo "test-fresh-debian: make demo"
make demo
echo "test-fresh-debian: make test"
make test
'
echo "test-fresh-debian: passed in $(( $(date +%s) - start )) s (make demo, then make test)"
