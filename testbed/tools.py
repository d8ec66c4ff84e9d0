"""Where the test bed finds its pinned binaries.

hack/tools.sh builds etcd, kube-apiserver, kube-controller-manager, kubectl and helm into
``${MODELROLLOUT_CACHE:-${XDG_CACHE_HOME:-~/.cache}/modelrollout}/bin``; this module
resolves the same directory without running the script (the wheel has no hack/).
``MODELROLLOUT_TOOLS_BIN`` overrides it. Prometheus and Alertmanager come from Debian
packages and are looked up on PATH.

Never fall back to whatever ``kubectl`` is on PATH: a different version (or a cloud SDK
wrapper) would make the tests prove something else.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from testbed.process import TestbedError

#: Debian's binary names; upstream's are ``prometheus`` and ``alertmanager``.
PROMETHEUS_NAMES = ("prometheus",)
ALERTMANAGER_NAMES = ("prometheus-alertmanager", "alertmanager")


def tools_bin() -> Path:
    """The directory of the pinned Go binaries (it may not exist yet)."""
    override = os.environ.get("MODELROLLOUT_TOOLS_BIN")
    if override:
        return Path(override)
    cache = os.environ.get("MODELROLLOUT_CACHE")
    if cache:
        return Path(cache) / "bin"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "modelrollout" / "bin"


def pinned_tool(name: str) -> Path:
    """The pinned binary ``name`` (etcd, kube-apiserver, kubectl, ...); raises if missing."""
    path = tools_bin() / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise TestbedError(
            f"{name} is not installed at {path}; run `make setup` (hack/tools.sh builds it)"
        )
    return path


def has_pinned_tool(name: str) -> bool:
    path = tools_bin() / name
    return path.is_file() and os.access(path, os.X_OK)


def system_tool(*names: str) -> Path:
    """The first of ``names`` found on PATH; raises naming the Debian package otherwise."""
    for name in names:
        found = shutil.which(name)
        if found:
            return Path(found)
    raise TestbedError(
        f"none of {', '.join(names)} is on PATH; run `make setup` "
        "(it installs the Debian packages prometheus and prometheus-alertmanager)"
    )
