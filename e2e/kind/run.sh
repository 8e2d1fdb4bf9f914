#!/usr/bin/env bash
# The whole path on a real cluster: kind + both images + helm install + a pool
# + an app whose pod gets the sidecar, then curl the sidecar from inside the
# app pod. Needs docker (or podman), kind, kubectl and helm on a laptop; it
# cannot run on the CI machine, which has no container engine.
#
#   bash e2e/kind/run.sh            # KEEP=1 keeps the cluster afterwards
set -euo pipefail

CLUSTER="${CLUSTER:-nebula-id-e2e}"
NODE_IMAGE="${NODE_IMAGE:-kindest/node:v1.34.0}"
TAG="${TAG:-e2e}"
APP_NS="${APP_NS:-shop}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/e2e/kind"

log() { echo "[kind-e2e] $*" >&2; }
cleanup() { [ "${KEEP:-0}" = 1 ] || kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true; }
trap cleanup EXIT

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { log "missing $tool"; exit 1; }
done

log "cluster $CLUSTER ($NODE_IMAGE)"
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --image "$NODE_IMAGE" --wait 120s
kubectl config use-context "kind-$CLUSTER" >/dev/null

log "images"
docker build -q -f "$ROOT/Dockerfile.operator" -t "nebula-id-operator:$TAG" "$ROOT"
docker build -q -f "$ROOT/Dockerfile.sidecar" -t "nebula-id-sidecar:$TAG" "$ROOT"
kind load docker-image --name "$CLUSTER" "nebula-id-operator:$TAG" "nebula-id-sidecar:$TAG"

log "etcd"
kubectl apply -f "$HERE/etcd.yaml"
kubectl -n etcd rollout status statefulset/etcd --timeout=180s

log "helm install"
helm upgrade --install nebula-id "$ROOT/helm/nebula-id" -n nebula-id --create-namespace --wait --timeout 180s \
  --set image.operator.repository=nebula-id-operator --set image.operator.tag="$TAG" \
  --set image.sidecar.repository=nebula-id-sidecar --set image.sidecar.tag="$TAG" \
  --set 'etcd.endpoints={http://etcd.etcd.svc:2379}' --set etcd.allowInsecure=true --set datacenter=dc-a

log "pool and app in namespace $APP_NS"
kubectl create namespace "$APP_NS" --dry-run=client -o yaml | kubectl apply -f -
kubectl label namespace "$APP_NS" pod-security.kubernetes.io/enforce=restricted --overwrite
kubectl -n "$APP_NS" apply -f "$ROOT/examples/pool-snowflake.yaml"
kubectl -n "$APP_NS" wait nip/orders --for=condition=Ready --timeout=120s
kubectl -n "$APP_NS" apply -f "$ROOT/examples/app-deployment.yaml"
kubectl -n "$APP_NS" rollout status deployment/web --timeout=180s

pod="$(kubectl -n "$APP_NS" get pod -l app=web -o jsonpath='{.items[0].metadata.name}')"
log "pod $pod: $(kubectl -n "$APP_NS" get pod "$pod" -o jsonpath='{.spec.initContainers[*].name}') + app"
ids="$(kubectl -n "$APP_NS" exec "$pod" -c web -- curl -fsS 'http://127.0.0.1:8080/v1/ids?count=3')"
uuid="$(kubectl -n "$APP_NS" exec "$pod" -c web -- curl -fsS http://127.0.0.1:8080/v1/ids/uuid7)"
worker="$(kubectl -n "$APP_NS" get pod "$pod" -o jsonpath='{.metadata.annotations.nebula-id\.io/worker-id}')"
log "ids: $ids"
log "uuid7: $uuid"
log "worker-id annotation: $worker"
echo "$ids" | grep -q '"ids"' || { log "no IDs from the sidecar"; exit 1; }
[ -n "$worker" ] || { log "the pod has no worker-id annotation"; exit 1; }
kubectl -n "$APP_NS" get nip orders
log "OK"
