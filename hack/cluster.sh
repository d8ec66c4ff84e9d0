#!/usr/bin/env bash
# A real Kubernetes cluster on this machine: kind, with a node image built here from
# the Go module proxy and Debian (no image registry needed), idempotent and cached by
# version outside the repository.
#
#   hack/cluster.sh up [NAME]        node image (if missing), cluster (if missing), ready
#   hack/cluster.sh down [NAME]      delete the cluster
#   hack/cluster.sh node-image       build the node image if missing; print its reference
#   hack/cluster.sh load NAME REF..  load local images into the cluster's nodes
#
# The cluster (default name modelrollout-e2e): one control-plane node, untainted, and
# one worker, so two schedulable nodes. Its network: a static routed CNI (ptp +
# host-local on each node's podCIDR, routes between the nodes), written once the
# nodes have their podCIDRs. Its storage: StorageClass modelrollout-shared, a
# ReadWriteMany PersistentVolume on a host directory mounted into every node at the
# same path, so pods on both nodes read and write the same models (docs/decisions/
# 0012-e2e-cluster.md). The node image holds systemd, containerd, runc, the CNI
# plugins, kubelet, kubeadm, kubectl and, preloaded, the control-plane, etcd,
# CoreDNS and pause images (kubeadm's versions), so nothing is pulled.
set -euo pipefail
shopt -s inherit_errexit
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=versions.env
source "$root/hack/versions.env"
cache=${MODELROLLOUT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modelrollout}
log() { echo "[cluster] $*" >&2; }
die() { echo "[cluster] error: $*" >&2; exit 1; }
export DOCKER_BUILDKIT=0
t0=$SECONDS
# The classic builder's deprecation notice, once per build, says nothing here.
quiet_build() { nice -n 19 docker build --quiet "$@" 2> >(grep -v -e DEPRECATED -e 'BuildKit is currently' -e 'environment-variable' -e '^$' >&2); }

"$root/hack/images.sh" --engine-only
bin=$("$root/hack/node-tools.sh")
kind="$bin/kind-$KIND_VERSION"
kubectl="$bin/kubectl-$KUBERNETES_VERSION"
v=$KUBERNETES_VERSION

# --- the node image ------------------------------------------------------------------
node_packages="systemd,systemd-sysv,conntrack,iptables,nftables,iproute2,ethtool,util-linux,mount,kmod,libseccomp2,bash,ca-certificates,procps,jq,e2fsprogs"
node_key() {
  {
    grep -E '^(KUBERNETES|ETCD|KIND|CONTAINERD|RUNC|CNI_PLUGINS|COREDNS|PAUSE)_VERSION=' "$root/hack/versions.env"
    echo "$node_packages"
    sed -n '/^# --- the node image/,/^# --- the cluster/p' "${BASH_SOURCE[0]}"
  } | sha256sum | cut -c1-12
}

node_rootfs() { # a Debian rootfs with systemd and the node's tools, as an image
  local key; key=$(printf '%s\n' bookworm "$node_packages" | sha256sum | cut -c1-12)
  local ref="modelrollout-kind-rootfs:$key"
  if docker image inspect "$ref" >/dev/null 2>&1; then echo "$ref"; return; fi
  local tar="$cache/kind-node/rootfs-$key.tar"
  if [[ ! -s "$tar" ]]; then
    mkdir -p "$cache/kind-node"
    command -v mmdebstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq mmdebstrap >/dev/null; }
    log "mmdebstrap bookworm ($node_packages) -> $tar"
    # The unit clean-up kind's base image does: no units that make no sense in a
    # container; journald does not read kmsg.
    nice -n 19 mmdebstrap --quiet --format=tar --variant=minbase --include="$node_packages" \
      --customize-hook='find "$1"/lib/systemd/system/sysinit.target.wants/ -name systemd-tmpfiles-setup.service -delete' \
      --customize-hook='rm -f "$1"/lib/systemd/system/multi-user.target.wants/* "$1"/etc/systemd/system/*.wants/* "$1"/lib/systemd/system/local-fs.target.wants/* "$1"/lib/systemd/system/sockets.target.wants/*udev* "$1"/lib/systemd/system/sockets.target.wants/*initctl* "$1"/lib/systemd/system/basic.target.wants/*' \
      --customize-hook='echo ReadKMsg=no >>"$1"/etc/systemd/journald.conf' \
      --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
      bookworm "$tar.tmp"
    mv "$tar.tmp" "$tar"
  fi
  docker import "$tar" "$ref" >/dev/null
  echo "$ref"
}

build_node_image() {
  local ref="modelrollout-kind-node:$v-$(node_key)"
  if docker image inspect "$ref" >/dev/null 2>&1; then echo "$ref"; return; fi
  local rootfs; rootfs=$(node_rootfs)
  local kinddir
  kinddir=$(cd "$cache/src/kind-$KIND_VERSION" && go mod download -json "sigs.k8s.io/kind@$KIND_VERSION" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [[ -d "$kinddir/images/base/files" ]] || die "kind's node files not found in the module cache ($kinddir)"
  local ctx="$cache/kind-node/build-$v"
  rm -rf "$ctx"; mkdir -p "$ctx/bin" "$ctx/cni"
  # kind's node contract (entrypoint, systemd units, containerd config), read from
  # the sigs.k8s.io/kind module of $KIND_VERSION, not copied into this repository.
  cp -r "$kinddir/images/base/files" "$ctx/files"; chmod -R u+w "$ctx/files"
  local b
  for b in kubelet kubeadm kubectl kube-apiserver kube-controller-manager kube-scheduler kube-proxy; do
    cp "$bin/$b-$v" "$ctx/bin/$b"
  done
  cp "$bin/etcd-$ETCD_VERSION" "$ctx/bin/etcd"
  cp "$bin/containerd-$CONTAINERD_VERSION" "$ctx/bin/containerd"
  cp "$bin/containerd-shim-runc-v2-$CONTAINERD_VERSION" "$ctx/bin/containerd-shim-runc-v2"
  cp "$bin/ctr-$CONTAINERD_VERSION" "$ctx/bin/ctr"
  cp "$bin/runc-$RUNC_VERSION" "$ctx/bin/runc"
  cp "$bin/coredns-$COREDNS_VERSION" "$ctx/bin/coredns"
  cp "$bin/pause" "$ctx/bin/pause"
  cp "$bin/cni-$CNI_PLUGINS_VERSION"/* "$ctx/cni/"
  local pause="registry.k8s.io/pause:$PAUSE_VERSION"
  sed -i "s|sandbox_image = .*|sandbox_image = \"$pause\"|" "$ctx/files/etc/containerd/config.toml"
  # Without CAP_SYS_RESOURCE (a Firecracker VM's node containers lack it) no process may
  # lower its oom_score_adj: kubelet asks -998 for sandboxes and runc fails. Restricted,
  # containerd never asks below its own value (what kind does for rootless nodes).
  if ! grep -q '^CapBnd:.*' /proc/self/status || (( (0x$(awk '/^CapBnd:/ {print $2}' /proc/self/status) >> 24 & 1) == 0 )); then
    sed -i 's|restrict_oom_score_adj = false|restrict_oom_score_adj = true|' "$ctx/files/etc/containerd/config.toml"
  fi
  # The default storage: the cluster's own shared class (hack/cluster.sh up makes its
  # volume); no dynamic provisioner image to preload.
  cat >"$ctx/default-storage.yaml" <<'YAML'
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: modelrollout-shared
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: Immediate
YAML
  cat >"$ctx/Dockerfile" <<DOCKERFILE
FROM $rootfs
COPY files/usr/local/bin/ /usr/local/bin/
COPY files/kind/ /kind/
COPY files/etc/ /etc/
COPY bin/kubelet bin/kubeadm bin/kubectl /usr/bin/
COPY bin/containerd bin/containerd-shim-runc-v2 bin/ctr /usr/local/bin/
COPY bin/runc /usr/local/sbin/runc
COPY cni/ /opt/cni/bin/
COPY default-storage.yaml /kind/manifests/default-storage.yaml
RUN chmod 0755 /kind /kind/bin /kind/bin/* /usr/local/bin/* \\
 && ln -sf /usr/lib/systemd/systemd /sbin/init \\
 && systemctl enable kubelet.service containerd.service undo-mount-hacks.service \\
 && systemctl mask systemd-binfmt.service \\
 && mkdir -p /etc/kubernetes/manifests /kind/manifests \\
 && echo "$v" >/kind/version \\
 && ctr oci spec \\
    | jq '.hooks.createContainer[.hooks.createContainer| length] |= . + {"path": "/kind/bin/mount-product-files.sh"}' \\
    | jq 'del(.process.rlimits)' >/etc/containerd/cri-base.json \\
 && containerd --version && runc --version && kubelet --version
ENV container=docker
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]
DOCKERFILE
  log "building the node's file system"
  quiet_build -t "$ref-stage" "$ctx" >/dev/null

  # The images kubeadm deploys, made here (the binaries on the node's Debian).
  local images=() name
  for name in kube-apiserver kube-controller-manager kube-scheduler kube-proxy; do
    printf 'FROM %s\nCOPY bin/%s /usr/local/bin/%s\n' "$rootfs" "$name" "$name" >"$ctx/Dockerfile.$name"
    images+=("registry.k8s.io/$name:$v")
    quiet_build -f "$ctx/Dockerfile.$name" -t "${images[-1]}" "$ctx" >/dev/null
  done
  printf 'FROM %s\nCOPY bin/etcd /usr/local/bin/etcd\n' "$rootfs" >"$ctx/Dockerfile.etcd"
  local etcd_tag; etcd_tag=$(grep 'DefaultEtcdVersion = ' \
    "$(cd "$cache/src/kubernetes-node-$v" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)/cmd/kubeadm/app/constants/constants.go" \
    | grep -o '3\.[0-9.]*-[0-9]*' | head -1)
  images+=("registry.k8s.io/etcd:$etcd_tag")
  quiet_build -f "$ctx/Dockerfile.etcd" -t "${images[-1]}" "$ctx" >/dev/null
  printf 'FROM scratch\nCOPY bin/coredns /coredns\nUSER 65532:65532\nEXPOSE 53 53/udp\nENTRYPOINT ["/coredns"]\n' >"$ctx/Dockerfile.coredns"
  images+=("registry.k8s.io/coredns/coredns:$COREDNS_VERSION")
  quiet_build -f "$ctx/Dockerfile.coredns" -t "${images[-1]}" "$ctx" >/dev/null
  printf 'FROM scratch\nCOPY bin/pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"$ctx/Dockerfile.pause"
  images+=("$pause")
  quiet_build -f "$ctx/Dockerfile.pause" -t "${images[-1]}" "$ctx" >/dev/null
  log "preloading ${images[*]}"
  docker save "${images[@]}" -o "$ctx/images.tar"

  # Preload as kind does: containerd in a build container imports the archives into
  # its content store (no unpacking, so no overlay on overlay), then docker commit.
  local id="modelrollout-kind-build-$$"
  docker rm -f "$id" >/dev/null 2>&1 || true
  docker run -d --name "$id" --privileged --security-opt seccomp=unconfined \
    --entrypoint sleep "$ref-stage" infinity >/dev/null
  trap 'docker rm -f "$id" >/dev/null 2>&1 || true' RETURN
  docker cp "$ctx/images.tar" "$id:/images.tar"
  docker exec "$id" bash -c '
    set -e
    nohup containerd >/tmp/containerd.log 2>&1 &
    for i in $(seq 1 60); do [ -S /run/containerd/containerd.sock ] && ctr version >/dev/null 2>&1 && break; sleep 1; done
    ctr --namespace=k8s.io images import --label=io.cri-containerd.pinned=pinned --all-platforms --no-unpack --digests /images.tar >/dev/null
    ctr --namespace=k8s.io images list -q
    pkill containerd; for i in $(seq 1 30); do pgrep containerd >/dev/null || break; sleep 1; done
    rm -f /images.tar' >&2
  docker commit \
    --change 'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]' --change 'CMD []' \
    --change 'ENV container=docker' "$id" "$ref" >/dev/null
  docker rm -f "$id" >/dev/null
  docker rmi "$ref-stage" >/dev/null
  rm -f "$ctx/images.tar"
  echo "$ref"
}

# --- the cluster ---------------------------------------------------------------------
cluster_config() { # name shared-dir
  cat <<YAML
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  disableDefaultCNI: true
  podSubnet: 10.244.0.0/16
  serviceSubnet: 10.96.0.0/16
  apiServerAddress: 127.0.0.1
kubeadmConfigPatches:
  - |
    kind: KubeletConfiguration
    failCgroupV1: false
nodes:
  - role: control-plane
    extraMounts: [{hostPath: "$2", containerPath: /mnt/modelrollout-shared}]
  - role: worker
    extraMounts: [{hostPath: "$2", containerPath: /mnt/modelrollout-shared}]
YAML
}

# The routed network: each node's pods on its podCIDR (ptp + host-local), and a route
# to every other node's podCIDR through that node's address.
install_network() { # name
  local name=$1 nodes n cidr ip other ocidr oip
  nodes=$("$kind" get nodes --name "$name")
  for n in $nodes; do
    cidr=$(k get node "$n" -o jsonpath='{.spec.podCIDR}')
    [[ -n "$cidr" ]] || die "node $n has no podCIDR"
    docker exec -i "$n" sh -c 'mkdir -p /etc/cni/net.d && cat >/etc/cni/net.d/10-modelrollout.conflist' <<JSON
{
  "cniVersion": "1.0.0",
  "name": "modelrollout",
  "plugins": [
    {"type": "ptp", "ipMasq": false, "mtu": 1500,
     "ipam": {"type": "host-local", "dataDir": "/run/cni-ipam-state",
              "routes": [{"dst": "0.0.0.0/0"}], "ranges": [[{"subnet": "$cidr"}]]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
    for other in $nodes; do
      [[ "$other" == "$n" ]] && continue
      ocidr=$(k get node "$other" -o jsonpath='{.spec.podCIDR}')
      oip=$(k get node "$other" -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')
      docker exec "$n" ip route replace "$ocidr" via "$oip"
    done
  done
}

install_shared_volume() { # the RWX volume on the directory every node mounts
  k apply -f - >/dev/null <<'YAML'
apiVersion: v1
kind: PersistentVolume
metadata:
  name: modelrollout-shared-models
  labels: {modelrollout.io/shared: models}
spec:
  capacity: {storage: 10Gi}
  accessModes: [ReadWriteMany, ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: modelrollout-shared
  hostPath: {path: /mnt/modelrollout-shared/models, type: DirectoryOrCreate}
YAML
  # A release uninstalled from a kept cluster leaves the volume Released (Retain): made
  # Available again for the next claim, models kept, as a retained NFS export would be.
  if [[ "$(k get pv modelrollout-shared-models -o jsonpath='{.status.phase}')" == Released ]]; then
    k patch pv modelrollout-shared-models --type json \
      -p '[{"op": "remove", "path": "/spec/claimRef"}]' >/dev/null
  fi
}

k() { "$kubectl" --context "kind-$name" "$@"; }

cluster_up() {
  local ref; ref=$(build_node_image)
  log "node image $ref ($((SECONDS - t0)) s)"
  local shared="$cache/kind/$name/shared"
  # The models directory is written by uid 10001 (the chart's pods) on every node.
  mkdir -p "$shared/models" /lib/modules
  chown 10001:10001 "$shared/models"
  export KIND_EXPERIMENTAL_PROVIDER=docker
  # A cluster whose nodes stopped (dockerd was ended with the session that started it)
  # does not come back whole: kubeadm's certificates and the static routes are gone
  # with the containers' state. Made anew, like a missing one.
  if "$kind" get clusters 2>/dev/null | grep -qx "$name"; then
    local node stale=0
    for node in $("$kind" get nodes --name "$name" 2>/dev/null); do
      [[ "$(docker inspect -f '{{.State.Running}}' "$node" 2>/dev/null)" == true ]] || stale=1
    done
    if ((stale)); then
      log "cluster $name has stopped nodes: deleting it to make it anew"
      "$kind" delete cluster --name "$name" >&2
    fi
  fi
  if ! "$kind" get clusters 2>/dev/null | grep -qx "$name"; then
    log "kind create cluster --name $name"
    # A new cluster starts with an empty models volume, as a new claim would.
    find "$shared/models" -mindepth 1 -delete
    cluster_config "$name" "$shared" >"$cache/kind/$name/config.yaml"
    nice -n 10 "$kind" create cluster --name "$name" --image "$ref" \
      --config "$cache/kind/$name/config.yaml" --retain >&2 \
      || die "kind create cluster failed; logs: $kind export logs --name $name"
  fi
  "$kind" export kubeconfig --name "$name" >/dev/null 2>&1
  # Nodes that dockerd has just restarted take a while to serve the API again.
  local deadline=$((SECONDS + 300))
  until k get --raw /readyz >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "the API server of $name did not answer within 300 s"
    sleep 2
  done
  install_network "$name"
  k taint nodes --all node-role.kubernetes.io/control-plane- >/dev/null 2>&1 || true
  install_shared_volume
  k wait --for=condition=Ready nodes --all --timeout=300s >/dev/null
  k -n kube-system rollout status deploy/coredns --timeout=300s >/dev/null
  log "cluster $name ready in $((SECONDS - t0)) s: $(k get nodes --no-headers | awk '{print $1 "=" $2}' | tr '\n' ' ')"
}

cmd=${1:-up}; shift || true
case $cmd in
  up) name=${1:-modelrollout-e2e}; cluster_up ;;
  down) name=${1:-modelrollout-e2e}; "$kind" delete cluster --name "$name" ;;
  node-image) build_node_image ;;
  load)
    name=${1:?usage: hack/cluster.sh load NAME REF...}; shift
    "$kind" load docker-image --name "$name" "$@" >&2 ;;
  *) die "unknown command $cmd (up, down, node-image, load)" ;;
esac
