#!/usr/bin/env bash
# Builds the real test dependencies (etcd, kube-apiserver, kubectl, helm) from Go
# modules into a cache outside the repo, laid out like controller-runtime's envtest
# assets.  Binaries already built are skipped, so later runs take seconds.
#
#   e2e/controlplane/build.sh            # build what is missing, print the bin dir
#   e2e/controlplane/build.sh helm-docs  # only the names given; these are built
#                                        # only when asked for: helm-docs, promlint
#   NEBULA_CACHE_DIR=/tmp/x build.sh     # another cache root
#
# Pinned versions live here and nowhere else.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-1.34.4}"
ETCD_VERSION="${ETCD_VERSION:-3.6.16}"
HELM_VERSION="${HELM_VERSION:-3.19.0}"
HELM_DOCS_VERSION="${HELM_DOCS_VERSION:-1.14.2}"
CLIENT_GOLANG_VERSION="${CLIENT_GOLANG_VERSION:-1.23.2}"

CACHE_ROOT="${NEBULA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nebula-id}"
BIN_DIR="$CACHE_ROOT/bin/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION"
WORK="$CACHE_ROOT/build"
mkdir -p "$BIN_DIR" "$WORK"

export GOFLAGS="${GOFLAGS:--mod=mod}"
export CGO_ENABLED=0
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

# Bump a recipe when its build flags change, so cached binaries get rebuilt.
HELM_RECIPE="helm-$HELM_VERSION-k8s-ldflags-1"
HELM_DOCS_RECIPE="helm-docs-$HELM_DOCS_VERSION"
# The promlint wrapper's source is in the repo: its hash is part of the recipe.
PROMLINT_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/tools/promlint/main.go"
PROMLINT_RECIPE="promlint-$CLIENT_GOLANG_VERSION-$(sha256sum "$PROMLINT_SRC" | cut -c1-12)"

log() { echo "[build.sh] $*" >&2; }

timed() {  # timed NAME CMD...: run and record the wall time
  local name=$1; shift
  local t0=$SECONDS
  "$@"
  log "$name built in $((SECONDS - t0)) s ($(du -h "$BIN_DIR/$name" | cut -f1))"
}

gobuild() {  # gobuild NAME ARGS...: go build into BIN_DIR; never leave a half-written binary
  local name=$1; shift
  # A partial name per build: two runs building the same binary must not
  # move each other's file.
  go build -trimpath -o "$BIN_DIR/.$name.partial.$$" "$@"
  mv -f "$BIN_DIR/.$name.partial.$$" "$BIN_DIR/$name"
}

build_etcd() {
  local dir="$WORK/etcd-$ETCD_VERSION"
  mkdir -p "$dir"
  cat >"$dir/main.go" <<'GO'
// Command etcd is a thin wrapper around etcdmain, built for nebula-id's tests.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (
    cd "$dir"
    [ -f go.mod ] || go mod init nebula-id.local/etcd >/dev/null 2>&1
    go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >&2
    go mod tidy >&2
    gobuild etcd -ldflags "-s -w" .
  )
}

staging_replaces() {
  # Every k8s.io staging module k8s.io/kubernetes replaces with ./staging/... gets
  # pinned to the matching published v0.X.Y instead.
  local gomod
  gomod=$(cd / && GOFLAGS= go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
  [ -f "$gomod" ] || { log "cannot download k8s.io/kubernetes@v$K8S_VERSION"; return 1; }
  grep -E '^\s*k8s.io/[a-z0-9-]+ => \./staging' "$gomod" | awk '{print $1}' | sort -u
}

build_k8s() {
  # A wrapper module counts as set up only once its dependencies resolved, so a
  # run cut off half-way (network) starts it over instead of failing forever.
  local dir="$WORK/k8s-$K8S_VERSION"
  local minor=${K8S_VERSION#1.}; minor=${minor%%.*}
  local staging="0.${K8S_VERSION#1.}"
  mkdir -p "$dir"
  (
    cd "$dir"
    if [ ! -f .deps-ready ]; then
      rm -f go.mod go.sum
      local mods
      mods=$(staging_replaces)
      go mod init nebula-id.local/k8s >/dev/null 2>&1
      {
        echo ""
        echo "require k8s.io/kubernetes v$K8S_VERSION"
        echo ""
        echo "replace ("
        for m in $mods; do echo "	$m => $m v$staging"; done
        echo ")"
      } >>go.mod
      mkdir -p kubectl
      cat >kubectl/main.go <<'GO'
// Command kubectl is the upstream kubectl command, built for nebula-id's tests.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
)

func main() { os.Exit(cli.Run(cmd.NewDefaultKubectlCommand())) }
GO
      cat >tools.go <<'GO'
//go:build tools

package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
GO
      go get "k8s.io/kubernetes@v$K8S_VERSION" "k8s.io/kubectl@v$staging" >&2
      go mod tidy >&2
      touch .deps-ready
    fi
    local pkgs=(k8s.io/component-base/version k8s.io/client-go/pkg/version)
    local ld="-s -w"
    for p in "${pkgs[@]}"; do
      ld="$ld -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
    done
    if [ ! -x "$BIN_DIR/kube-apiserver" ]; then
      timed kube-apiserver gobuild kube-apiserver -ldflags "$ld" k8s.io/kubernetes/cmd/kube-apiserver
    fi
    if [ ! -x "$BIN_DIR/kubectl" ]; then
      timed kubectl gobuild kubectl -ldflags "$ld" ./kubectl
    fi
  )
}

build_helm() {
  local dir="$WORK/helm-$HELM_VERSION"
  mkdir -p "$dir"
  (
    cd "$dir"
    if [ ! -f .deps-ready ]; then
      rm -f go.mod go.sum
      go mod init nebula-id.local/helm >/dev/null 2>&1
      cat >tools.go <<'GO'
//go:build tools

package tools

import _ "helm.sh/helm/v3/cmd/helm"
GO
      go get "helm.sh/helm/v3@v$HELM_VERSION" >&2
      go mod tidy >&2
      touch .deps-ready
    fi
    # Like helm's Makefile: without the k8s version ldflags helm assumes
    # Kubernetes v1.20 and refuses charts with a newer kubeVersion.
    # client-go v0.X.Y goes with Kubernetes 1.X.
    local client_go minor ld
    client_go=$(go list -f '{{.Version}}' -m k8s.io/client-go)
    minor=${client_go#v0.}; minor=${minor%%.*}
    ld="-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION"
    ld="$ld -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
    for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
      ld="$ld -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$minor"
    done
    timed helm gobuild helm -ldflags "$ld" helm.sh/helm/v3/cmd/helm
    echo "$HELM_RECIPE" >"$BIN_DIR/.helm.recipe"
  )
}

build_helm_docs() {
  local dir="$WORK/helm-docs-$HELM_DOCS_VERSION"
  mkdir -p "$dir"
  (
    cd "$dir"
    if [ ! -f .deps-ready ]; then
      rm -f go.mod go.sum
      go mod init nebula-id.local/helm-docs >/dev/null 2>&1
      cat >tools.go <<'GO'
//go:build tools

package tools

import _ "github.com/norwoodj/helm-docs/cmd/helm-docs"
GO
      go get "github.com/norwoodj/helm-docs@v$HELM_DOCS_VERSION" >&2
      go mod tidy >&2
      touch .deps-ready
    fi
    timed helm-docs gobuild helm-docs -ldflags "-s -w" github.com/norwoodj/helm-docs/cmd/helm-docs
    echo "$HELM_DOCS_RECIPE" >"$BIN_DIR/.helm-docs.recipe"
  )
}

build_promlint() {  # tools/promlint/main.go around client_golang's promlint package
  local dir="$WORK/promlint-$CLIENT_GOLANG_VERSION"
  mkdir -p "$dir"
  cp "$PROMLINT_SRC" "$dir/main.go"
  (
    cd "$dir"
    if [ ! -f .deps-ready ]; then
      rm -f go.mod go.sum
      go mod init nebula-id.local/promlint >/dev/null 2>&1
      go get "github.com/prometheus/client_golang@v$CLIENT_GOLANG_VERSION" >&2
      go mod tidy >&2
      touch .deps-ready
    fi
    timed promlint gobuild promlint -ldflags "-s -w" .
    echo "$PROMLINT_RECIPE" >"$BIN_DIR/.promlint.recipe"
  )
}

fresh() {  # fresh NAME RECIPE: NAME is built and its recipe matches
  [ -x "$BIN_DIR/$1" ] && [ "$(cat "$BIN_DIR/.$1.recipe" 2>/dev/null)" = "$2" ]
}

want="${*:-etcd kube-apiserver kubectl helm}"
for w in $want; do
  case $w in
    etcd) [ -x "$BIN_DIR/etcd" ] || timed etcd build_etcd ;;
    kube-apiserver|kubectl) { [ -x "$BIN_DIR/kube-apiserver" ] && [ -x "$BIN_DIR/kubectl" ]; } || build_k8s ;;
    helm) fresh helm "$HELM_RECIPE" || build_helm ;;
    helm-docs) fresh helm-docs "$HELM_DOCS_RECIPE" || build_helm_docs ;;
    promlint) fresh promlint "$PROMLINT_RECIPE" || build_promlint ;;
    *) echo "unknown binary: $w" >&2; exit 2 ;;
  esac
done
echo "$BIN_DIR"
