#!/usr/bin/env bash
# The one test command, for developers and CI (`.ci/run` execs it).
#
# On a fresh Debian 12 machine with Python 3.11 and Go it installs what is
# missing (Debian's postgresql, faketime and spin), makes a venv keyed by the hash of
# pyproject.toml, builds etcd, kube-apiserver, kubectl and helm from Go modules
# (cached), then runs ruff, ruff format, mypy, lint-imports and pytest over every tier.
# A dependency that cannot start fails the run; nothing is skipped.
#
#   bash scripts/test.sh                                # everything
#   NEBULA_TEST_TIERS=unit,api bash scripts/test.sh     # opt out of the other tiers
#   bash scripts/test.sh -k lease                       # extra args go to pytest
#
# The node tier also needs Debian's containerd, runc, containernetworking-plugins,
# iptables, buildah, mmdebstrap and dnsmasq-base, and root (it runs a real kubelet in a private
# namespace); the Go build adds kubelet, kube-controller-manager, kube-scheduler
# and pause.
#
# Environment: NEBULA_TEST_TIERS (default models,unit,api,integration,k8s,e2e,chaos,node),
# NEBULA_TEST_TIMEOUT (seconds per test, default 300), KUBEBUILDER_ASSETS,
# USE_EXISTING_CLUSTER=true + KUBECONFIG, NEBULA_CACHE_DIR, PYTHON.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

CACHE_ROOT="${NEBULA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nebula-id}"
TIERS="${NEBULA_TEST_TIERS:-models,unit,api,integration,k8s,e2e,chaos,node}"
TIMEOUT="${NEBULA_TEST_TIMEOUT:-300}"
PYTHON="${PYTHON:-python3}"
STARTED=$SECONDS
FAILED=()

say() { printf '\n==> %s\n' "$*"; }
die() { printf '\nscripts/test.sh: FAILED: %s\n' "$*" >&2; exit 1; }

mkdir -p "$CACHE_ROOT"
# One setup at a time per machine: parallel runs share the venv and the Go cache.
exec 9>"$CACHE_ROOT/.setup.lock"

# -- 1. Debian packages -------------------------------------------------------------
need_pkgs=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need_pkgs+=(postgresql)
command -v faketime >/dev/null || need_pkgs+=(faketime)
command -v spin >/dev/null || need_pkgs+=(spin)  # the models tier: Promela model checker
command -v gcc >/dev/null || need_pkgs+=(gcc)    # spin compiles its verifiers with gcc
NODE_TIER=
[[ ",$TIERS," == *",node,"* ]] && NODE_TIER=1
if [ -n "$NODE_TIER" ]; then
  [ "$(id -u)" -eq 0 ] || die "the node tier runs a kubelet and needs root (NEBULA_TEST_TIERS without node otherwise)"
  command -v containerd >/dev/null || need_pkgs+=(containerd)
  command -v runc >/dev/null || need_pkgs+=(runc)
  [ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] || need_pkgs+=(containernetworking-plugins)
  command -v iptables >/dev/null || need_pkgs+=(iptables)
  command -v buildah >/dev/null || need_pkgs+=(buildah)
  command -v mmdebstrap >/dev/null || need_pkgs+=(mmdebstrap)
  [ -x /usr/sbin/dnsmasq ] || need_pkgs+=(dnsmasq-base)
fi
[ -x /usr/sbin/mariadbd ] || need_pkgs+=(mariadb-server)
APT_UPDATED=
apt_install() {  # apt_install PKG...: apt-get update once, then install
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  if [ -z "$APT_UPDATED" ]; then
    "${sudo[@]}" apt-get update -q || die "apt-get update"
    APT_UPDATED=1
  fi
  "${sudo[@]}" apt-get install -y -q --no-install-recommends "$@" || die "apt-get install $*"
}
stop_system_mariadb() {  # the package's service runs as user mysql, on port 3306
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  if command -v systemctl >/dev/null; then
    "${sudo[@]}" systemctl disable mariadb >/dev/null 2>&1 || true
  fi
  if pgrep -u mysql -x 'mariadbd|mysqld' >/dev/null; then
    "${sudo[@]}" service mariadb stop >/dev/null 2>&1 || true
  fi
  if pgrep -u mysql -x 'mariadbd|mysqld' >/dev/null; then
    die "Debian's MariaDB service still runs after the install; stop it: service mariadb stop"
  fi
}
if [ ${#need_pkgs[@]} -gt 0 ]; then
  say "installing Debian packages: ${need_pkgs[*]}"
  flock 9
  # The tests make their own throwaway clusters; Debian's default cluster
  # (and its server on port 5432) would only be in the way.
  if [[ " ${need_pkgs[*]} " == *" postgresql "* ]]; then
    apt_install postgresql-common
    $([ "$(id -u)" -eq 0 ] || echo sudo) sed -i \
      's/^#\?\s*create_main_cluster\s*=.*/create_main_cluster = false/' \
      /etc/postgresql-common/createcluster.conf
  fi
  apt_install "${need_pkgs[@]}"
  # The tests start their own MariaDB servers; a system service left running by
  # the package (port 3306) would only be in the way.
  if [[ " ${need_pkgs[*]} " == *" mariadb-server "* ]]; then
    stop_system_mariadb
  fi
  flock -u 9
fi
command -v spin >/dev/null && command -v gcc >/dev/null || die "spin or gcc is missing (models tier)"

# -- 2. Python venv, keyed by pyproject.toml ---------------------------------------------
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "$PYTHON is older than 3.11"
HASH=$(sha256sum pyproject.toml | cut -c1-12)
VENV="$CACHE_ROOT/venv-test-$HASH"
PIP_LOG="$CACHE_ROOT/pip.log"
pip_quiet() {  # pip install ARGS..., output to the log (its tail on failure)
  "$VENV/bin/python" -m pip install --disable-pip-version-check "$@" >"$PIP_LOG" 2>&1 \
    || { tail -n 30 "$PIP_LOG" >&2; return 1; }
}
flock 9
if [ ! -f "$VENV/.complete" ]; then
  say "creating $VENV"
  rm -rf "$VENV"
  if ! "$PYTHON" -m venv "$VENV"; then
    # Debian splits venv/ensurepip into python3-venv.
    rm -rf "$VENV"
    apt_install python3-venv
    "$PYTHON" -m venv "$VENV" || die "python -m venv"
  fi
  pip_quiet --upgrade pip setuptools wheel || die "pip bootstrap (log: $PIP_LOG)"
  pip_quiet -e '.[dev]' || die "pip install -e .[dev] (log: $PIP_LOG)"
  touch "$VENV/.complete"
fi
# The venv is shared by every clone with this pyproject.toml: point its
# editable install at this checkout.
pip_quiet --no-deps --no-build-isolation -e . || die "pip install -e . (log: $PIP_LOG)"
flock -u 9
PY="$VENV/bin/python"
# Other checkouts on this machine may re-point the shared venv's editable install
# while this run is going: this checkout's sources come first for every process.
export PYTHONPATH="$ROOT/sidecar:$ROOT/operator:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# The editable install above generated the gRPC code from ids.proto (setup.py's
# build_py); this makes sure of it when the .proto changed since.
"$PY" sidecar/nebula_id/rpc/codegen.py >/dev/null || die "generating the gRPC code (sidecar/nebula_id/rpc/codegen.py)"

# -- 3. Go binaries (cached) ----------------------------------------------------------------
command -v go >/dev/null || die "Go is not installed (needed to build etcd, kube-apiserver, kubectl, helm)"
want=(etcd kube-apiserver kubectl helm)
[ -n "${KUBEBUILDER_ASSETS:-}" ] && want=(helm)
# The node tier's own binaries, built only when it runs.
[ -n "$NODE_TIER" ] && want+=(etcd kube-apiserver kubectl kubelet kube-controller-manager kube-scheduler pause)
say "building ${want[*]} (cached; the first run takes minutes)"
BUILD_LOG="$CACHE_ROOT/build.log"
flock 9
t0=$SECONDS
if ! BIN_DIR=$(bash e2e/controlplane/build.sh "${want[@]}" 2>"$BUILD_LOG" | tail -n1); then
  tail -n 40 "$BUILD_LOG" >&2
  die "e2e/controlplane/build.sh (log: $BUILD_LOG)"
fi
flock -u 9
exec 9>&-
grep '^\[build.sh\]' "$BUILD_LOG" || true
echo "binaries in $BIN_DIR ($((SECONDS - t0)) s)"

# The node tier's images (cached by what makes them), built here so that their
# first build does not count against a test's timeout.
if [ -n "$NODE_TIER" ]; then
  say "building the node tier's images (cached; the first run takes minutes)"
  IMAGES_LOG="$CACHE_ROOT/images.log"
  t0=$SECONDS
  if ! bash e2e/node/images.sh "$BIN_DIR/pause" >/dev/null 2>"$IMAGES_LOG"; then
    tail -n 40 "$IMAGES_LOG" >&2
    die "e2e/node/images.sh (log: $IMAGES_LOG)"
  fi
  grep '^\[images.sh\]' "$IMAGES_LOG" || true
  echo "images ready ($((SECONDS - t0)) s)"
fi

# -- 4. Static checks ------------------------------------------------------------------------
say "ruff check"
"$PY" -m ruff check . || FAILED+=("ruff check")
say "ruff format --check"
"$PY" -m ruff format --check . || FAILED+=("ruff format")
say "mypy (strict)"
"$PY" -m mypy || FAILED+=("mypy")
say "lint-imports (the layer contracts in pyproject.toml)"
"$VENV/bin/lint-imports" --no-cache || FAILED+=("lint-imports")
say "bandit (accepted findings carry a # nosec comment saying why)"
"$PY" -m bandit -q -c pyproject.toml -r sidecar/nebula_id operator/nebula_id_operator \
  || FAILED+=("bandit")

# -- 5. pytest over the selected tiers --------------------------------------------------------
paths=()
IFS=',' read -r -a tiers <<<"$TIERS"
for tier in "${tiers[@]}"; do
  case "$tier" in
    models | unit | api | integration | k8s) dir="tests/$tier" ;;
    # e2e/chaos and e2e/node are tiers of their own.
    e2e) paths+=(e2e/test_*.py); continue ;;
    chaos) dir="e2e/chaos" ;;
    node) dir="e2e/node" ;;
    *) die "unknown tier '$tier' in NEBULA_TEST_TIERS (known: models,unit,api,integration,k8s,e2e,chaos,node)" ;;
  esac
  if [ -d "$dir" ]; then paths+=("$dir"); else echo "note: tier $tier has no directory $dir"; fi
done
[ ${#paths[@]} -gt 0 ] || die "no test directories for NEBULA_TEST_TIERS=$TIERS"

say "pytest ${paths[*]} (timeout ${TIMEOUT} s per test)"
"$PY" -m pytest -p no:cacheprovider --timeout="$TIMEOUT" -ra --durations=15 \
  "${paths[@]}" "$@"
rc=$?
case $rc in
  0) ;;
  5) FAILED+=("pytest (no tests collected)") ;;
  *) FAILED+=("pytest (exit $rc)") ;;
esac

elapsed=$((SECONDS - STARTED))
if [ ${#FAILED[@]} -gt 0 ]; then
  printf '\nscripts/test.sh: FAILED (%s) after %d s [tiers: %s]\n' \
    "$(IFS=,; echo "${FAILED[*]}")" "$elapsed" "$TIERS"
  exit 1
fi
printf '\nscripts/test.sh: PASSED (ruff, format, mypy, lint-imports, pytest) in %d s [tiers: %s]\n' \
  "$elapsed" "$TIERS"
