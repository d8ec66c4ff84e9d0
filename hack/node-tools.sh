#!/usr/bin/env bash
# Builds what a kind node needs from the Go module proxy, cached by version outside
# the repository (like hack/tools.sh): kind, kubelet, kubeadm, kube-scheduler,
# kube-proxy, containerd (+ shim, ctr), runc, the CNI plugins, CoreDNS (a build with
# the plugins a cluster's DNS uses) and a pause binary. Idempotent: a warm run only
# checks that the files exist. Builds run under nice -n 19.
#
#   hack/node-tools.sh          build whatever is missing, print the bin directory
set -euo pipefail
shopt -s inherit_errexit
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache=${MODELROLLOUT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modelrollout}
bin="$cache/bin"
mkdir -p "$bin"
log() { echo "[node-tools] $*" >&2; }
have() { [[ -x "$bin/$1" ]]; }
gobuild() { # out pkg ldflags [cgo tags]
  local out=$1 pkg=$2 ld=$3 cgo=${4:-0} tags=${5:-}
  log "go build $pkg -> $out"
  CGO_ENABLED=$cgo nice -n 19 go build -trimpath -tags "$tags" -ldflags "$ld" -o "$bin/$out.tmp" "$pkg"
  mv "$bin/$out.tmp" "$bin/$out"
}
module() { # dir name require...: a throwaway module that imports the given packages
  local dir=$1 name=$2; shift 2
  mkdir -p "$dir"
  { echo "module modelrollout.local/$name"; echo; echo "go 1.26.0"; } >"$dir/go.mod"
  for req in "$@"; do echo "require $req" >>"$dir/go.mod"; done
}
tidy() { (cd "$1" && GOFLAGS=-mod=mod nice -n 19 go mod tidy >/dev/null); }

build_kubernetes_node() {
  local v=$KUBERNETES_VERSION
  local names=(kubelet kubeadm kube-scheduler kube-proxy) n missing=0
  for n in "${names[@]}"; do have "$n-$v" || missing=1; done
  ((missing)) || return 0
  # hack/tools.sh already wrote a module for k8s.io/kubernetes with its staging
  # replaces; start from it so the module graph and the build cache are shared.
  local src="$cache/src/kubernetes-$v" dir="$cache/src/kubernetes-node-$v"
  [[ -f "$src/go.mod" ]] || "$here/tools.sh" >/dev/null
  mkdir -p "$dir"
  cp "$src/go.mod" "$src/go.sum" "$dir/"
  sed -i 's|^module .*|module modelrollout.local/kubenodebuild|' "$dir/go.mod"
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    for n in "${names[@]}"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$n"; done
    printf ')\n'
  } >"$dir/tools.go"
  tidy "$dir"
  local minor=${v#v1.} ld="-s -w" p
  minor=${minor%%.*}
  local date; date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ld+=" -X $p.gitTreeState=clean -X $p.buildDate=$date -X $p.gitCommit=0000000000000000000000000000000000000000"
  done
  for n in "${names[@]}"; do
    have "$n-$v" || (cd "$dir" && gobuild "$n-$v" "k8s.io/kubernetes/cmd/$n" "$ld")
  done
}

build_kind() {
  have "kind-$KIND_VERSION" && return 0
  local dir="$cache/src/kind-$KIND_VERSION"
  module "$dir" kindbuild "sigs.k8s.io/kind $KIND_VERSION"
  printf '//go:build tools\n\npackage tools\n\nimport _ "sigs.k8s.io/kind"\n' >"$dir/tools.go"
  tidy "$dir"
  (cd "$dir" && gobuild "kind-$KIND_VERSION" sigs.k8s.io/kind "-s -w")
}

build_containerd() {
  local v=$CONTAINERD_VERSION
  have "containerd-$v" && have "containerd-shim-runc-v2-$v" && have "ctr-$v" && return 0
  local dir="$cache/src/containerd-$v"
  module "$dir" containerdbuild "github.com/containerd/containerd/v2 $v"
  printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "github.com/containerd/containerd/v2/cmd/containerd"\n\t_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"\n\t_ "github.com/containerd/containerd/v2/cmd/ctr"\n)\n' >"$dir/tools.go"
  tidy "$dir"
  local ld="-s -w -X github.com/containerd/containerd/v2/version.Version=$v"
  # no_btrfs: no btrfs headers needed; the snapshotter here is overlayfs.
  local tags="no_btrfs no_devmapper no_zfs no_aufs"
  (cd "$dir" && gobuild "containerd-$v" github.com/containerd/containerd/v2/cmd/containerd "$ld" 0 "$tags" \
    && gobuild "containerd-shim-runc-v2-$v" github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 "$ld" 0 "$tags" \
    && gobuild "ctr-$v" github.com/containerd/containerd/v2/cmd/ctr "$ld" 0 "$tags")
}

build_runc() {
  local v=$RUNC_VERSION
  have "runc-$v" && return 0
  local dir="$cache/src/runc-$v"
  module "$dir" runcbuild "github.com/opencontainers/runc $v"
  printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/opencontainers/runc"\n' >"$dir/tools.go"
  tidy "$dir"
  # runc's nsenter is C (cgo); built static with libseccomp (pods that ask for the
  # RuntimeDefault seccomp profile fail on a runc without it).
  if [[ ! -f /usr/lib/x86_64-linux-gnu/libseccomp.a && ! -f /usr/lib/libseccomp.a ]]; then
    local sudo=""; [[ $(id -u) == 0 ]] || sudo="sudo"
    log "apt-get install libseccomp-dev pkg-config"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends libseccomp-dev pkg-config >/dev/null
  fi
  (cd "$dir" && gobuild "runc-$v" github.com/opencontainers/runc \
    "-s -w -X main.version=${v#v} -extldflags -static" 1 "seccomp netgo osusergo")
}

build_cni() {
  local v=$CNI_PLUGINS_VERSION p
  local plugins=(bridge host-local loopback portmap ptp)
  local missing=0
  for p in "${plugins[@]}"; do have "cni-$v/$p" || missing=1; done
  ((missing)) || return 0
  local dir="$cache/src/cni-plugins-$v"
  module "$dir" cnibuild "github.com/containernetworking/plugins $v"
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    printf '\t_ "github.com/containernetworking/plugins/plugins/main/bridge"\n'
    printf '\t_ "github.com/containernetworking/plugins/plugins/main/loopback"\n'
    printf '\t_ "github.com/containernetworking/plugins/plugins/main/ptp"\n'
    printf '\t_ "github.com/containernetworking/plugins/plugins/ipam/host-local"\n'
    printf '\t_ "github.com/containernetworking/plugins/plugins/meta/portmap"\n)\n'
  } >"$dir/tools.go"
  tidy "$dir"
  mkdir -p "$bin/cni-$v"
  local pkg
  for p in "${plugins[@]}"; do
    case $p in
      host-local) pkg=ipam/host-local ;; portmap) pkg=meta/portmap ;; *) pkg=main/$p ;;
    esac
    (cd "$dir" && gobuild "cni-$v/$p" "github.com/containernetworking/plugins/plugins/$pkg" "-s -w")
  done
}

build_coredns() {
  local v=$COREDNS_VERSION
  have "coredns-$v" && return 0
  local dir="$cache/src/coredns-$v"
  module "$dir" corednsbuild "github.com/coredns/coredns $v"
  # CoreDNS documents building with a chosen plugin set: set dnsserver.Directives and
  # import the plugins. These are the ones kubeadm's Corefile uses.
  cat >"$dir/main.go" <<'GO'
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

func init() {
	dnsserver.Directives = []string{
		"reload", "errors", "log", "health", "ready", "prometheus", "loadbalance",
		"cache", "hosts", "kubernetes", "loop", "forward",
	}
}

func main() { coremain.Run() }
GO
  tidy "$dir"
  (cd "$dir" && gobuild "coredns-$v" . "-s -w")
}

build_pause() {
  have pause && return 0
  local dir="$cache/src/pause"
  module "$dir" pause
  cat >"$dir/main.go" <<'GO'
// pause: the sandbox's PID 1. Sleeps until SIGINT/SIGTERM and reaps zombies.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sig := make(chan os.Signal, 8)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sig {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			if pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); pid <= 0 || err != nil {
				break
			}
		}
	}
}
GO
  (cd "$dir" && gobuild pause . "-s -w")
}

command -v go >/dev/null || { echo "[node-tools] Go is required; none on PATH" >&2; exit 1; }
build_pause
build_kind
build_kubernetes_node
build_runc
build_containerd
build_cni
build_coredns
ln -sf "kind-$KIND_VERSION" "$bin/kind"
echo "$bin"
