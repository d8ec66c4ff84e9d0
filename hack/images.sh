#!/usr/bin/env bash
# Builds the three images (modelrollout-controller, -suggest, -training) from the
# Dockerfile on this machine, idempotently:
#   1. a Docker engine: Debian's docker.io installed if missing, dockerd started if
#      not answering (no systemd needed);
#   2. on hosts whose capability bounding set lacks what `docker run --privileged`
#      asks for (Firecracker VMs: no CAP_SYS_RESOURCE), a runc wrapper registered as
#      the default runtime (hack/runc-caps-wrapper), which kind's nodes need;
#   3. a base image: the public python image when the registry answers
#      (MODELROLLOUT_BASE_IMAGE=python:3.11-slim), otherwise one made here with
#      mmdebstrap, cached by a key of its inputs (suite, packages, CA bundle);
#   4. docker build --target X for the three images (layers shared, classic builder).
#
#   hack/images.sh [--tag TAG]      default tag: dev
#   hack/images.sh --engine-only    steps 1-2 only
#   hack/images.sh --monitoring     also modelrollout-e2e-monitoring:TAG, Prometheus and
#                                   Alertmanager from Debian's packages (for tests/e2e
#                                   where no registry serves prom/prometheus)
# Prints the built references, one a line. Builds run under nice -n 19.
set -euo pipefail
shopt -s inherit_errexit
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=versions.env
source "$root/hack/versions.env"
cache=${MODELROLLOUT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modelrollout}
log() { echo "[images] $*" >&2; }
die() { echo "[images] error: $*" >&2; exit 1; }
sudo=""; [[ $(id -u) == 0 ]] || sudo="sudo"
tag=dev engine_only=0 monitoring=0
while (($#)); do
  case $1 in
    --tag) tag=$2; shift 2 ;;
    --engine-only) engine_only=1; shift ;;
    --monitoring) monitoring=1; shift ;;
    *) die "unknown argument $1 (usage: hack/images.sh [--tag TAG] [--engine-only])" ;;
  esac
done
export DOCKER_BUILDKIT=0 # the classic builder: no buildx plugin needed
# Its deprecation notice, once per build, says nothing here.
quiet_build() { nice -n 19 docker build --quiet "$@" 2> >(grep -v -e DEPRECATED -e 'BuildKit is currently' -e 'environment-variable' -e '^$' >&2); }
t0=$SECONDS

apt_install() {
  log "apt-get install $*"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- 1. the engine -------------------------------------------------------------
start_dockerd() {
  docker info >/dev/null 2>&1 && return 0
  if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
    $sudo systemctl start docker
  else
    mkdir -p "$cache/docker"
    log "starting dockerd (log: $cache/docker/dockerd.log)"
    $sudo setsid nohup dockerd >>"$cache/docker/dockerd.log" 2>&1 </dev/null &
  fi
  local deadline=$((SECONDS + 60))
  until docker info >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "dockerd did not answer within 60 s (see $cache/docker/dockerd.log)"
    sleep 1
  done
}

stop_dockerd() {
  if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
    $sudo systemctl stop docker; return
  fi
  local pid; pid=$(cat /var/run/docker.pid 2>/dev/null || true)
  [[ -n "$pid" ]] || return 0
  $sudo kill "$pid"
  local deadline=$((SECONDS + 60))
  while $sudo kill -0 "$pid" 2>/dev/null; do
    ((SECONDS < deadline)) || die "dockerd ($pid) did not stop within 60 s"
    sleep 1
  done
}

# --- 2. the runc wrapper, only where the host needs it ---------------------------
# Docker gives a privileged container every capability up to CAP_CHECKPOINT_RESTORE
# (40); runc fails ("unable to apply caps") when the bounding set lacks one.
host_lacks_caps() {
  local bnd; bnd=$(awk '/^CapBnd:/ {print $2}' /proc/self/status)
  local want=$(((1 << 41) - 1))
  (((0x$bnd & want) != want))
}

wrapper=/usr/local/libexec/modelrollout/runc-caps-wrapper
ensure_runc_wrapper() {
  host_lacks_caps || return 0
  local changed=0
  if ! cmp -s "$root/hack/runc-caps-wrapper" "$wrapper" 2>/dev/null; then
    $sudo install -D -m 0755 "$root/hack/runc-caps-wrapper" "$wrapper"
    changed=1
  fi
  local conf=/etc/docker/daemon.json merged
  merged=$(python3 - "$conf" "$wrapper" <<'PY'
import json, sys
from pathlib import Path
path, wrapper = Path(sys.argv[1]), sys.argv[2]
conf = json.loads(path.read_text()) if path.exists() and path.read_text().strip() else {}
conf.setdefault("runtimes", {})["modelrollout-runc"] = {"path": wrapper}
conf["default-runtime"] = "modelrollout-runc"
print(json.dumps(conf, indent=2, sort_keys=True))
PY
)
  if [[ "$(cat "$conf" 2>/dev/null)" != "$merged" ]]; then
    log "registering $wrapper as dockerd's default runtime in $conf"
    $sudo mkdir -p /etc/docker
    echo "$merged" | $sudo tee "$conf" >/dev/null
    changed=1
  fi
  if ((changed)) && docker info >/dev/null 2>&1; then
    log "restarting dockerd for the new runtime"
    stop_dockerd
  fi
}

command -v dockerd >/dev/null || apt_install docker.io
command -v docker >/dev/null || die "no docker client after installing docker.io"
ensure_runc_wrapper
start_dockerd
if ((engine_only)); then log "engine ready in $((SECONDS - t0)) s"; exit 0; fi

# --- 3. the base image -----------------------------------------------------------
base_packages="python3,python3-venv,ca-certificates,libgomp1,passwd"
make_base() {
  local ca=/etc/ssl/certs/ca-certificates.crt
  local key
  key=$(printf '%s\n' "bookworm" "$base_packages" "$(sha256sum "$ca" 2>/dev/null | cut -c1-64)" \
    | sha256sum | cut -c1-16)
  local ref="modelrollout-base:$key"
  if docker image inspect "$ref" >/dev/null 2>&1; then echo "$ref"; return; fi
  local tar="$cache/base/rootfs-$key.tar"
  if [[ ! -s "$tar" ]]; then
    command -v mmdebstrap >/dev/null || apt_install mmdebstrap
    mkdir -p "$cache/base"
    log "mmdebstrap bookworm ($base_packages) -> $tar"
    # The host's CA bundle goes in, so that pip and uv inside the build trust the
    # same roots as the host (a TLS-inspecting proxy's CA, where there is one).
    nice -n 19 $sudo mmdebstrap --quiet --format=tar --variant=minbase --include="$base_packages" \
      --customize-hook="copy-in $ca /etc/ssl/certs" \
      --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
      bookworm "$tar.tmp"
    mv "$tar.tmp" "$tar"
  fi
  log "docker import $tar as $ref"
  docker import --change 'CMD ["python3"]' "$tar" "$ref" >/dev/null
  echo "$ref"
}

base=${MODELROLLOUT_BASE_IMAGE:-}
[[ -n "$base" ]] || base=$(make_base)
log "base image $base"

# --- 4. the three images -----------------------------------------------------------
# --network host: on this machine kind only the host's network reaches PyPI.
for target in controller suggest training; do
  ref="modelrollout-$target:$tag"
  log "docker build --target $target -t $ref"
  quiet_build --network host --build-arg "BASE_IMAGE=$base" \
    --build-arg "UV_VERSION=$UV_VERSION" --build-arg "NSI_VERSION=$NSI_VERSION" \
    --build-arg "NSI_SHA256=$NSI_SHA256" --target "$target" -t "$ref" "$root" >/dev/null
  echo "$ref"
done
if ((monitoring)); then
  ref="modelrollout-e2e-monitoring:$tag"
  ctx=$(mktemp -d); trap 'rm -rf "$ctx"' EXIT
  for b in prometheus prometheus-alertmanager; do
    command -v "$b" >/dev/null || apt_install prometheus prometheus-alertmanager
    cp "$(command -v "$b")" "$ctx/${b#prometheus-}"
  done
  # Alertmanager reads its notification templates from the package's share dir.
  cp /usr/share/prometheus/alertmanager/*.tmpl "$ctx/"
  printf 'FROM %s\nCOPY prometheus alertmanager /usr/local/bin/\nCOPY *.tmpl /usr/share/prometheus/alertmanager/\nUSER 65534:65534\n' "$base" >"$ctx/Dockerfile"
  log "docker build -t $ref (Debian's prometheus and alertmanager)"
  quiet_build -t "$ref" "$ctx" >/dev/null
  echo "$ref"
fi
log "images ready in $((SECONDS - t0)) s"
