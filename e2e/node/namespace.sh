#!/usr/bin/env bash
# The inside of the node tier's private network and mount namespace.
#
# Started by e2e/node/cluster.py as
#   unshare --net --mount --fork --propagation private bash namespace.sh STATE
# with STATE holding the configuration cluster.py wrote (env, PKI, configs).
# It makes this namespace look like a node without touching the host:
#
#   - overlays on /var/lib, /var/log, /usr/libexec and /run (upper layers in
#     STATE), so the fixed paths the kubelet and containerd write to
#     (/var/lib/kubelet/device-plugins, /var/log/containers, /run/containerd/s,
#     /var/lib/cni, ...) land in STATE;
#   - plain files bind-mounted over the global sysctls the kubelet sets
#     (vm.overcommit_memory, kernel.panic, ...);
#   - loopback up and a veth pair whose one end carries the node IP and the
#     default route (the kubelet will not take a loopback address);
#   - one iptables rule (in this namespace) that sends the `kubernetes` Service
#     IP to the API server, in place of kube-proxy, and dnsmasq answering for
#     its names, in place of a cluster DNS;
#
# then starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# containerd (images imported) and the kubelet, each logging to STATE/logs,
# writes STATE/ready and waits until its stdin closes (cluster.py closes it, or
# it dies) or it is signalled.  Then it tears down, whatever happened before:
# the kubelet, every process of the pods (their cgroups), every other process
# of this network namespace, and the pods' cgroups, deepest first.  Leaving the
# namespace takes its mounts, veth pair, bridge and iptables rules with it.
# cluster.py checks afterwards and finishes what is left.
set -euo pipefail

STATE=${1:?usage: namespace.sh STATE}
# shellcheck disable=SC1091
source "$STATE/env.sh"
LOGS="$STATE/logs"
mkdir -p "$LOGS"
echo $$ >"$STATE/namespace.pid"
readlink /proc/self/ns/net >"$STATE/netns"

fail() { echo "namespace.sh: $*" >&2; echo "$*" >"$STATE/failed"; exit 1; }

cgroup_pids() { cat /sys/fs/cgroup/*/"$CGROUP_NAME"/cgroup.procs 2>/dev/null; find /sys/fs/cgroup/*/"$CGROUP_NAME" -mindepth 1 -name cgroup.procs -exec cat {} + 2>/dev/null; }
netns_pids() {  # every process in this network namespace but this shell
  local me pid ns
  me=$(readlink /proc/self/ns/net)
  for pid in /proc/[0-9]*; do
    pid=${pid#/proc/}
    [ "$pid" = $$ ] && continue
    ns=$(readlink "/proc/$pid/ns/net" 2>/dev/null) || continue
    [ "$ns" = "$me" ] && echo "$pid"
  done
}
teardown() {
  set +e
  trap - EXIT INT TERM
  [ -f "$STATE/pids/kubelet" ] && kill -TERM "$(cat "$STATE/pids/kubelet")" 2>/dev/null
  local round
  for round in $(seq 1 50); do
    local pods others
    pods=$(cgroup_pids | sort -u)
    others=$(netns_pids)
    [ -z "$pods$others" ] && break
    # shellcheck disable=SC2086
    [ -n "$pods" ] && kill -KILL $pods 2>/dev/null
    # shellcheck disable=SC2086
    if [ "$round" -lt 25 ]; then kill -TERM $others 2>/dev/null; else kill -KILL $others 2>/dev/null; fi
    sleep 0.2
  done
  find /sys/fs/cgroup/*/"$CGROUP_NAME" -depth -type d -exec rmdir {} \; 2>/dev/null
  echo "namespace.sh: torn down" >&2
}
trap teardown EXIT
trap 'exit 1' INT TERM

# -- the filesystem -----------------------------------------------------------------
for dir in /var/lib /var/log /usr/libexec /run; do
  layer="$STATE/overlay${dir//\//_}"
  mkdir -p "$layer/upper" "$layer/work"
  mount -t overlay overlay -o "lowerdir=$dir,upperdir=$layer/upper,workdir=$layer/work" "$dir" \
    || fail "overlay on $dir"
done
mkdir -p "$STATE/sysctl"
for key in vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops \
  kernel/keys/root_maxkeys kernel/keys/root_maxbytes; do
  copy="$STATE/sysctl/${key//\//.}"
  cat "/proc/sys/$key" >"$copy"
  mount --bind "$copy" "/proc/sys/$key" || fail "bind over /proc/sys/$key"
done

# -- the network ----------------------------------------------------------------------
ip link set lo up
ip link add nebula-node type veth peer name nebula-gw
ip addr add "$NODE_IP/24" dev nebula-node
ip link set nebula-node up
ip link set nebula-gw up
ip route add default via "$GATEWAY_IP" dev nebula-node onlink
iptables -t nat -A PREROUTING -d "$SERVICE_IP" -p tcp --dport 443 -j DNAT --to-destination "$NODE_IP:6443"
iptables -t nat -A OUTPUT -d "$SERVICE_IP" -p tcp --dport 443 -j DNAT --to-destination "$NODE_IP:6443"

# -- the processes ------------------------------------------------------------------------
start() {  # start NAME ARGV...: in the background, logging, PID in STATE/pids/NAME
  local name=$1; shift
  mkdir -p "$STATE/pids"
  "$@" >"$LOGS/$name.log" 2>&1 &
  echo $! >"$STATE/pids/$name"
}

wait_for() {  # wait_for NAME SECONDS CMD...: poll until CMD succeeds while NAME runs
  local name=$1 seconds=$2; shift 2
  local deadline=$((SECONDS + seconds)) pid
  pid=$(cat "$STATE/pids/$name" 2>/dev/null || echo $$)
  until "$@" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || fail "$name exited during start-up"
    [ $SECONDS -lt $deadline ] || fail "timed out after $seconds s waiting for $name"
    sleep 0.2
  done
}

KUBECTL=("$BIN_DIR/kubectl" --kubeconfig "$STATE/admin.kubeconfig")

# Cluster DNS for the pods: only the API server's names (kopf and the Kubernetes
# client dial kubernetes.default.svc); everything else is not found.
start dns dnsmasq --keep-in-foreground --log-facility=- --conf-file=/dev/null --pid-file= \
  --no-resolv --no-hosts --listen-address="$NODE_IP" --bind-interfaces --local=/cluster.local/ \
  --host-record="kubernetes.default.svc.cluster.local,kubernetes.default.svc,kubernetes.default,$SERVICE_IP"

start etcd "$BIN_DIR/etcd" --name node --data-dir "$STATE/etcd" \
  --listen-client-urls "http://0.0.0.0:2379" --advertise-client-urls "http://$NODE_IP:2379" \
  --listen-peer-urls "http://127.0.0.1:2380" --initial-advertise-peer-urls "http://127.0.0.1:2380" \
  --initial-cluster "node=http://127.0.0.1:2380" --unsafe-no-fsync --log-level warn
wait_for etcd 60 curl -fsS "http://127.0.0.1:2379/health"

start kube-apiserver "$BIN_DIR/kube-apiserver" \
  --etcd-servers=http://127.0.0.1:2379 --etcd-prefix=/registry \
  --bind-address=0.0.0.0 --advertise-address="$NODE_IP" --secure-port=6443 \
  --cert-dir="$STATE/pki/apiserver-certs" \
  --tls-cert-file="$STATE/pki/apiserver.crt" --tls-private-key-file="$STATE/pki/apiserver.key" \
  --client-ca-file="$STATE/pki/ca.crt" \
  --kubelet-client-certificate="$STATE/pki/apiserver-kubelet.crt" \
  --kubelet-client-key="$STATE/pki/apiserver-kubelet.key" \
  --kubelet-preferred-address-types=InternalIP \
  --service-account-key-file="$STATE/pki/sa.crt" \
  --service-account-signing-key-file="$STATE/pki/sa.key" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-cluster-ip-range="$SERVICE_CIDR" \
  --enable-aggregator-routing=true \
  --allow-privileged=true --authorization-mode=Node,RBAC \
  --enable-admission-plugins=NodeRestriction \
  --profiling=false --v=1
wait_for kube-apiserver 90 "${KUBECTL[@]}" get --raw /readyz

start kube-controller-manager "$BIN_DIR/kube-controller-manager" \
  --kubeconfig="$STATE/controller-manager.kubeconfig" \
  --authentication-kubeconfig="$STATE/controller-manager.kubeconfig" \
  --authorization-kubeconfig="$STATE/controller-manager.kubeconfig" \
  --service-account-private-key-file="$STATE/pki/sa.key" \
  --root-ca-file="$STATE/pki/ca.crt" --use-service-account-credentials=true \
  --cluster-signing-cert-file="$STATE/pki/ca.crt" --cluster-signing-key-file="$STATE/pki/ca.key" \
  --service-cluster-ip-range="$SERVICE_CIDR" \
  --controllers='*,-bootstrapsigner,-tokencleaner,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller' \
  --bind-address=127.0.0.1 --secure-port=10257 --leader-elect=false --profiling=false --v=1
start kube-scheduler "$BIN_DIR/kube-scheduler" \
  --kubeconfig="$STATE/scheduler.kubeconfig" \
  --authentication-kubeconfig="$STATE/scheduler.kubeconfig" \
  --authorization-kubeconfig="$STATE/scheduler.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port=10259 --leader-elect=false --profiling=false --v=1

start containerd containerd --config "$STATE/containerd.toml"
wait_for containerd 60 ctr --address "$STATE/containerd.sock" version
for archive in $IMAGE_ARCHIVES; do
  ctr --address "$STATE/containerd.sock" -n k8s.io images import --no-unpack=false "$archive" \
    >>"$LOGS/images.log" 2>&1 || fail "ctr images import $archive"
done

start kubelet "$BIN_DIR/kubelet" \
  --config="$STATE/kubelet.yaml" --kubeconfig="$STATE/kubelet.kubeconfig" \
  --root-dir="$STATE/kubelet" --cert-dir="$STATE/kubelet-pki" \
  --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --v=1
wait_for kubelet 90 "${KUBECTL[@]}" wait --for=condition=Ready "node/$NODE_NAME" --timeout=2s

touch "$STATE/ready"
# Hold the namespace until cluster.py closes our stdin (or the run ends).
cat >/dev/null || true
