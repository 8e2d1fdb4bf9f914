#!/usr/bin/env bash
# The project's benchmark command: prints figures against DESIGN.md's targets.
#
#   bash scripts/bench.sh              # every part
#   bash scripts/bench.sh core         # only the named parts
#
# Each part is one `python -m bench.<part>` module; add a part by adding its
# name to PARTS (and its module to bench/).  `profile` (py-spy on the sidecar
# under wrk) is not in PARTS: run it by name.  Extra settings go through the
# environment: PYTHON (default: the test venv of scripts/test.sh if it exists,
# else the dev venv, else python3), BENCH_ARGS (passed to every part).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

PARTS=(core segment overhead http gap transport client scaling)

CACHE_ROOT="${NEBULA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nebula-id}"
if [ -z "${PYTHON:-}" ]; then
  TEST_VENV="$CACHE_ROOT/venv-test-$(sha256sum pyproject.toml | cut -c1-12)"
  if [ -x "$TEST_VENV/bin/python" ]; then
    PYTHON="$TEST_VENV/bin/python"
  elif [ -x "$CACHE_ROOT/venv-dev/bin/python" ]; then
    PYTHON="$CACHE_ROOT/venv-dev/bin/python"
  else
    PYTHON=python3
  fi
fi
# Benchmark this checkout, whichever checkout the venv was installed from.
export PYTHONPATH="$ROOT/sidecar:$ROOT/operator:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" -c 'import nebula_id, uuid_utils' 2>/dev/null \
  || { echo "scripts/bench.sh: $PYTHON cannot import nebula_id; run scripts/test.sh once (it makes the venv) or set PYTHON" >&2; exit 1; }

# The gRPC code is generated, never committed: make it if this checkout has not yet.
"$PYTHON" sidecar/nebula_id/rpc/codegen.py >/dev/null \
  || { echo "scripts/bench.sh: cannot generate the gRPC code (needs grpcio-tools)" >&2; exit 1; }

selected=("$@")
[ ${#selected[@]} -gt 0 ] || selected=("${PARTS[@]}")
read -r -a extra <<<"${BENCH_ARGS:-}"

# The HTTP parts drive the sidecar with wrk (Debian's package).
if [[ " ${selected[*]} " =~ \ (http|segment|scaling|profile)\  ]] && ! command -v wrk >/dev/null; then
  echo "==> installing wrk" >&2
  sudo=(); [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q wrk >/dev/null 2>&1 \
    || { "${sudo[@]}" apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q wrk >/dev/null; } \
    || echo "scripts/bench.sh: could not install wrk; the HTTP parts will say so" >&2
fi

for part in "${selected[@]}"; do
  printf '\n==> bench.%s\n' "$part"
  "$PYTHON" -m "bench.$part" "${extra[@]}"
done
