#!/usr/bin/env bash
# One idempotent set-up for the demo, the tests and CI:
#   1. Debian packages (prometheus, prometheus-alertmanager, wrk for the benchmarks, binutils:
#      GNU ld links the compiled trees training publishes)
#   2. uv, then the project's virtual environment (.venv) from uv.lock
#   3. etcd, kube-apiserver, kube-controller-manager, kubectl, helm (hack/tools.sh)
#   4. the brand lexicon of the training data: the name-suggestion-index npm package
#      (BSD-3-Clause; LICENSES/name-suggestion-index.md), pinned version and sha256
# Everything downloaded or built is cached outside the repository, so a second
# run on a warm machine takes seconds.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=versions.env
source "$root/hack/versions.env"
cache=${MODELROLLOUT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modelrollout}
mkdir -p "$cache"
log() { echo "[setup] $*" >&2; }
t0=$SECONDS

# 1. Debian packages.
missing=()
for pkg in $DEBIAN_PACKAGES; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  sudo=""; [[ $(id -u) == 0 ]] || sudo="sudo"
  log "apt-get install ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. uv and the virtual environment.
uv="$cache/uv/bin/uv"
if [[ ! -x "$uv" ]]; then
  log "installing uv into $cache/uv"
  python3 -m venv "$cache/uv"
  "$cache/uv/bin/pip" install -q "uv==$UV_VERSION"
fi
( cd "$root" && "$uv" sync --frozen --extra test --extra dev --quiet )

# 3. Go-built binaries.
bin=$("$root/hack/tools.sh")

# 4. The brand lexicon (npm pack: the registry's tarball as published, no install scripts).
lexicon="$cache/lexicon/name-suggestion-index-$NSI_VERSION.tgz"
if [[ ! -f "$lexicon" ]] || ! echo "$NSI_SHA256  $lexicon" | sha256sum -c --quiet - 2>/dev/null; then
  if command -v npm >/dev/null; then
    log "fetching name-suggestion-index $NSI_VERSION (npm pack)"
    mkdir -p "$cache/lexicon"
    ( cd "$cache/lexicon" && npm pack --silent "name-suggestion-index@$NSI_VERSION" >/dev/null )
    echo "$NSI_SHA256  $lexicon" | sha256sum -c --quiet - \
      || { log "name-suggestion-index $NSI_VERSION: sha256 differs from the pin"; rm -f "$lexicon"; exit 1; }
  else
    log "npm not found: training uses the committed US sample of the lexicon (service/brands.json)"
  fi
fi
log "ready in $((SECONDS - t0)) s; tools in $bin"
