#!/usr/bin/env bash
# Set up and run the sidecar on its embedded default (standalone mode).
#
# Needs only Python 3.11+ (and network access to PyPI the first time).  Creates a
# venv under ~/.cache/nebula-id/venv-serve, installs this checkout into it
# (again only when pyproject.toml changed), then runs `nebula-id serve` with
# any extra arguments:
#
#   bash scripts/serve.sh                              # http://127.0.0.1:8080/v1/ids
#   bash scripts/serve.sh --port 9000 --tags orders:1000
#   NEBULA_WORKER_ID=3 bash scripts/serve.sh
#
# Environment: PYTHON (interpreter, default python3.11 or python3),
# NEBULA_CACHE_DIR (default ~/.cache/nebula-id).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE_ROOT="${NEBULA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nebula-id}"
VENV="$CACHE_ROOT/venv-serve"

die() { printf 'scripts/serve.sh: %s\n' "$*" >&2; exit 1; }

new_enough() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; }
PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
  for candidate in python3 python3.11 python3.12 python3.13; do
    if new_enough "$candidate"; then PYTHON=$candidate; break; fi
  done
  [ -n "$PYTHON" ] || die "no Python 3.11 or newer found (set PYTHON=/path/to/python3.11)"
fi
new_enough "$PYTHON" || die "$PYTHON is not a working Python 3.11 or newer"

mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.serve-setup.lock"
flock 9

if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating $VENV" >&2
  if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
    # Debian without python3-venv: a venv without pip, filled by the host's pip.
    rm -rf "$VENV"
    "$PYTHON" -m venv --without-pip "$VENV" \
      || die "cannot create a venv; on Debian/Ubuntu: apt-get install python3-venv"
    "$PYTHON" -m pip --version >/dev/null 2>&1 \
      || die "neither ensurepip nor pip is available; on Debian/Ubuntu: apt-get install python3-venv"
  fi
fi

pip_install() {
  if [ -x "$VENV/bin/pip" ]; then
    "$VENV/bin/pip" install -q --disable-pip-version-check "$@"
  else
    "$PYTHON" -m pip --python "$VENV/bin/python" install -q --disable-pip-version-check "$@"
  fi
}

STAMP="$VENV/.nebula-id-installed"
WANT=$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)-$ROOT
if [ ! -x "$VENV/bin/nebula-id" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  echo "==> installing nebula-id from $ROOT" >&2
  pip_install -e "$ROOT" || die "pip install failed"
  echo "$WANT" >"$STAMP"
fi
flock -u 9

exec "$VENV/bin/nebula-id" serve "$@"
