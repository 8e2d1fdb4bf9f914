#!/usr/bin/env bash
# Builds the images the node tier runs, with nothing pulled from a registry,
# into docker-archive tarballs that `ctr -n k8s.io images import` loads:
#
#   - a Debian bookworm base (mmdebstrap, minbase + python3, venv, curl), tagged
#     as the Dockerfiles' base image and as the example app's curl image;
#   - the pod sandbox image, from the static `pause` binary of build.sh;
#   - Dockerfile.operator and Dockerfile.sidecar, built by buildah (chroot
#     isolation, vfs storage, --pull=never) on that base.
#
# Each tarball is named after a hash of what produces it (the recipe, the
# Dockerfile, the sources), so a warm run rebuilds nothing and a change to the
# sources rebuilds only the two project images (buildah's layer cache keeps
# their unchanged steps).  The last line of output is a JSON object:
# {"archives": [...], "operator": IMAGE, "sidecar": IMAGE, "pause": IMAGE, ...}.
#
#   bash e2e/node/images.sh PAUSE_BINARY
#
# Environment: NEBULA_CACHE_DIR (cache root, default ~/.cache/nebula-id).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PAUSE_BIN=${1:?usage: images.sh PAUSE_BINARY}
CACHE_ROOT="${NEBULA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nebula-id}"
DIR="$CACHE_ROOT/node-images"
OUT="$DIR/archives"
mkdir -p "$OUT" "$DIR/buildah-root" "$DIR/buildah-run" "$DIR/tmp"

# The base image: bump BASE_RECIPE when the package list or the way it is made changes.
SUITE=bookworm
BASE_PACKAGES=python3,python3-venv,python-is-python3,ca-certificates,curl
BASE_RECIPE="mmdebstrap-minbase-$SUITE-$BASE_PACKAGES-1"
# The example app's image (examples/app-deployment.yaml), stood in for by the base.
APP_IMAGE=docker.io/curlimages/curl:8.11.1

log() { echo "[images.sh] $*" >&2; }
key() { sha256sum | cut -c1-16; }

exec 8>"$DIR/.lock"
flock 8

# buildah keeps its storage in the cache (the layer cache of warm runs) and its
# configuration private: default ulimits within this process's hard limits,
# which containers.conf's defaults may exceed.
nofile=$(ulimit -Hn)
[ "$nofile" = unlimited ] && nofile=1048576
cat >"$DIR/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile"]
EOF
export CONTAINERS_CONF="$DIR/containers.conf"
export TMPDIR="$DIR/tmp"
BUILDAH=(buildah --root "$DIR/buildah-root" --runroot "$DIR/buildah-run" --storage-driver vfs)

bud() {  # bud TAG DOCKERFILE CONTEXT ARGS...
  local tag=$1 file=$2 context=$3; shift 3
  "${BUILDAH[@]}" bud --isolation chroot --pull=never --layers \
    -f "$file" -t "$tag" "$@" "$context" >&2
}

archive() {  # archive IMAGE FILE: a docker-archive the node's containerd imports
  local image=$1 file=$2
  "${BUILDAH[@]}" push --quiet "$image" "docker-archive:$file.partial:$image" >&2
  mv -f "$file.partial" "$file"
}

# -- the base ---------------------------------------------------------------------
base_key=$(echo "$BASE_RECIPE" | key)
BASE_IMAGE="localhost/nebula-id-python:$base_key"
base_tar="$OUT/base-$base_key.tar"
app_tar="$OUT/app-$base_key.tar"
if [ ! -f "$base_tar" ] || [ ! -f "$app_tar" ]; then
  t0=$SECONDS
  work=$(mktemp -d "$DIR/tmp/base.XXXXXX")
  mmdebstrap --quiet --variant=minbase --include="$BASE_PACKAGES" \
    --dpkgopt='path-exclude=/usr/share/{doc,man,locale,info}/*' \
    --aptopt='APT::Install-Recommends "false"' \
    "$SUITE" "$work/rootfs.tar" >&2
  printf 'FROM scratch\nADD rootfs.tar /\nCMD ["python3"]\n' >"$work/Dockerfile"
  bud "$BASE_IMAGE" "$work/Dockerfile" "$work"
  "${BUILDAH[@]}" tag "$BASE_IMAGE" "$APP_IMAGE"
  archive "$BASE_IMAGE" "$base_tar"
  archive "$APP_IMAGE" "$app_tar"
  rm -rf "$work"
  log "base image built in $((SECONDS - t0)) s ($(du -h "$base_tar" | cut -f1))"
fi

shrink_cache() {  # vfs keeps every layer as a full copy: past a size, start over
  if [ "$(du -sm "$DIR/buildah-root" | cut -f1)" -gt "${NEBULA_BUILDAH_MAX_MB:-30000}" ]; then
    log "layer cache over ${NEBULA_BUILDAH_MAX_MB:-30000} MB: emptying it"
    # Ours alone (the lock above is held): faster than rmi, and fine after a crash.
    rm -rf "$DIR/buildah-root" "$DIR/buildah-run"
    mkdir -p "$DIR/buildah-root" "$DIR/buildah-run"
  fi
}

ensure_base() {  # the base in buildah's storage (gone when the layer cache was emptied)
  "${BUILDAH[@]}" inspect --type image "$BASE_IMAGE" >/dev/null 2>&1 \
    || "${BUILDAH[@]}" pull --quiet "docker-archive:$base_tar" >&2
}

# -- the pod sandbox --------------------------------------------------------------
pause_key=$(sha256sum "$PAUSE_BIN" | key)
PAUSE_IMAGE="localhost/nebula-id-pause:$pause_key"
pause_tar="$OUT/pause-$pause_key.tar"
if [ ! -f "$pause_tar" ]; then
  work=$(mktemp -d "$DIR/tmp/pause.XXXXXX")
  cp "$PAUSE_BIN" "$work/pause"
  printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"$work/Dockerfile"
  bud "$PAUSE_IMAGE" "$work/Dockerfile" "$work"
  archive "$PAUSE_IMAGE" "$pause_tar"
  rm -rf "$work"
fi

# -- the project's images -----------------------------------------------------------
sources_key() {  # what goes into the image (see .dockerignore) plus its Dockerfile
  (
    cd "$ROOT"
    find pyproject.toml README.md sidecar operator "$1" -type f \
      -not -path '*/__pycache__/*' -not -name '*.pyc' -not -path '*.egg-info/*' -print0 \
      | sort -z | xargs -0 sha256sum
    echo "$BASE_IMAGE"
  ) | key
}

# pip inside the build trusts what this host trusts (a TLS-inspecting proxy's CA
# is in the host's bundle, not in pip's own): both are mounted for the build only
# and are not part of any layer.
printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$DIR/pip.conf"
TRUST=(--volume "$DIR/pip.conf:/etc/pip.conf:ro")
[ -f /etc/ssl/certs/ca-certificates.crt ] \
  && TRUST+=(--volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)

declare -A IMAGES
for component in operator sidecar; do
  dockerfile="Dockerfile.$component"
  src_key=$(sources_key "$dockerfile")
  image="localhost/nebula-id-$component:$src_key"
  tar="$OUT/$component-$src_key.tar"
  if [ ! -f "$tar" ]; then
    t0=$SECONDS
    shrink_cache
    ensure_base
    bud "$image" "$ROOT/$dockerfile" "$ROOT" --build-arg "PYTHON_IMAGE=$BASE_IMAGE" "${TRUST[@]}"
    archive "$image" "$tar"
    # Other checkouts share this cache: drop only archives nobody used for 3 days.
    find "$OUT" -name "$component-*.tar" -mtime +3 -delete
    log "$component image built in $((SECONDS - t0)) s ($(du -h "$tar" | cut -f1))"
  fi
  touch "$tar"
  IMAGES[$component]=$image
  IMAGES[${component}_tar]=$tar
done

printf '{"archives": ["%s", "%s", "%s", "%s", "%s"], "operator": "%s", "sidecar": "%s", "pause": "%s", "base": "%s", "app": "%s"}\n' \
  "$base_tar" "$app_tar" "$pause_tar" "${IMAGES[operator_tar]}" "${IMAGES[sidecar_tar]}" \
  "${IMAGES[operator]}" "${IMAGES[sidecar]}" "$PAUSE_IMAGE" "$BASE_IMAGE" "$APP_IMAGE"
