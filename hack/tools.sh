#!/usr/bin/env bash
# Builds the Go binaries of the test bed from the Go module proxy, cached by
# version outside the repository: etcd, kube-apiserver, kube-controller-manager,
# kubectl and helm. Idempotent: a warm run only checks that the files exist.
#
#   hack/tools.sh            build whatever is missing, print the bin directory
#   hack/tools.sh --print    print the bin directory only
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

cache=${MODELROLLOUT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modelrollout}
bin="$cache/bin"
mkdir -p "$bin"
if [[ "${1:-}" == "--print" ]]; then echo "$bin"; exit 0; fi

log() { echo "[tools] $*" >&2; }
have() { [[ -x "$bin/$1" ]]; }

# Throwaway module that requires $1@$2 with the given replaces, then builds
# the listed packages into $bin with ldflags.
build_in_module() {
  local dir=$1 ldflags=$2; shift 2
  (
    cd "$dir"
    GOFLAGS=-mod=mod go mod tidy >/dev/null
    for spec in "$@"; do
      local out=${spec%%=*} pkg=${spec#*=}
      log "go build $pkg -> $out"
      CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$bin/$out.tmp" "$pkg"
      mv "$bin/$out.tmp" "$bin/$out"
    done
  )
}

build_etcd() {
  local name="etcd-$ETCD_VERSION"
  have "$name" && return 0
  local dir="$cache/src/$name"; mkdir -p "$dir"
  cat >"$dir/go.mod" <<MOD
module modelrollout.local/etcdbuild

go 1.24.0

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
MOD
  printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' >"$dir/tools.go"
  build_in_module "$dir" "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=modelrollout" \
    "$name=go.etcd.io/etcd/server/v3"
}

build_kubernetes() {
  local v=$KUBERNETES_VERSION
  if have "kube-apiserver-$v" && have "kube-controller-manager-$v" && have "kubectl-$v"; then return 0; fi
  local dir="$cache/src/kubernetes-$v"; mkdir -p "$dir"
  # The go.mod of k8s.io/kubernetes lists its staging modules (replaced by local paths).
  local gomod
  gomod=$(cd "$dir" && go mod download -json "k8s.io/kubernetes@$v" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
  [[ -f "$gomod" ]] || { echo "[tools] cannot download k8s.io/kubernetes@$v" >&2; exit 1; }
  gomod=$(cat "$gomod")
  local staging_version="v0.${v#v1.}"
  {
    echo "module modelrollout.local/kubebuild"
    echo
    echo "go 1.26.0"
    echo
    echo "require k8s.io/kubernetes $v"
    echo
    echo "replace ("
    # Each staging module that k8s.io/kubernetes replaces with a local path is
    # published as k8s.io/<name> v0.X.Y.
    echo "$gomod" | awk '$2=="=>" && $3 ~ /^\.\/staging\// {print "\t" $1 " => " $1 " '"$staging_version"'"}'
    echo ")"
  } >"$dir/go.mod"
  cat >"$dir/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  local minor=${v#v1.}; minor=${minor%%.*}
  local date; date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  local ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ld+=" -X $p.gitTreeState=clean -X $p.buildDate=$date -X $p.gitCommit=0000000000000000000000000000000000000000"
  done
  build_in_module "$dir" "$ld" \
    "kube-apiserver-$v=k8s.io/kubernetes/cmd/kube-apiserver" \
    "kubectl-$v=k8s.io/kubernetes/cmd/kubectl" \
    "kube-controller-manager-$v=k8s.io/kubernetes/cmd/kube-controller-manager"
}

build_helm() {
  local name="helm-$HELM_VERSION"
  have "$name" && return 0
  local dir="$cache/src/$name"; mkdir -p "$dir"
  cat >"$dir/go.mod" <<MOD
module modelrollout.local/helmbuild

go 1.26.0

require helm.sh/helm/v4 $HELM_VERSION
MOD
  printf '//go:build tools\n\npackage tools\n\nimport _ "helm.sh/helm/v4/cmd/helm"\n' >"$dir/tools.go"
  local minor=${KUBERNETES_VERSION#v1.}; minor=${minor%%.*}
  build_in_module "$dir" \
    "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION -X helm.sh/helm/v4/internal/version.gitTreeState=clean" \
    "$name=helm.sh/helm/v4/cmd/helm"
}

command -v go >/dev/null || { echo "[tools] Go is required (https://go.dev/dl); none on PATH" >&2; exit 1; }
build_etcd
build_helm
build_kubernetes
# Unversioned links, so PATH=$bin:$PATH finds the pinned tools.
ln -sf "etcd-$ETCD_VERSION" "$bin/etcd"
ln -sf "kube-apiserver-$KUBERNETES_VERSION" "$bin/kube-apiserver"
ln -sf "kube-controller-manager-$KUBERNETES_VERSION" "$bin/kube-controller-manager"
ln -sf "kubectl-$KUBERNETES_VERSION" "$bin/kubectl"
ln -sf "helm-$HELM_VERSION" "$bin/helm"
echo "$bin"
