"""Atomic publication of model versions, retention, and clean-up (DESIGN.md contract 2).

A version is written under ``<root>/.tmp-<version>-<hex>/`` (a hidden name, so
:func:`service.artifact.list_versions` never lists it), every file and the directory are
fsynced, then one ``os.rename`` makes it ``<root>/<version>`` and the root is fsynced. A
reader sees either no version or the whole of it; a crash leaves only a hidden directory,
which :func:`clean_stale` removes once it is older than an hour.

Retention removes old versions the same way round: rename to ``.trash-<version>-<hex>``
(atomic: the version disappears whole), then delete. It keeps the newest ``keep`` versions
and never removes one in the caller's protected set (versions that ModelRollouts name).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from service.artifact import MANIFEST_FILE, Manifest, is_version_dir, list_versions, sha256_file

TMP_PREFIX: Final = ".tmp-"
TRASH_PREFIX: Final = ".trash-"
STALE_AFTER_SECONDS: Final = 3600.0
VERSION_PATTERN: Final = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")
"""Names :func:`new_version_name` makes; they sort by time."""


class PublishError(Exception):
    """A version could not be published; nothing under its name was left behind."""


class VersionExistsError(PublishError):
    """The version name is taken; published versions never change."""


def new_version_name(now: datetime | None = None) -> str:
    """A fresh version name that sorts by creation time: ``<UTC time>Z-<6 random hex>``.

    >>> new_version_name(datetime(2026, 11, 22, 19, 30, 12, tzinfo=UTC))[:17]
    '20261122T193012Z-'
    """
    now = now or datetime.now(UTC)
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(path: Path, data: bytes) -> None:
    with path.open("xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def publish_version(
    models_root: Path,
    files: Mapping[str, bytes],
    manifest: Manifest,
) -> Path:
    """Publish ``files`` and ``manifest`` as ``<models_root>/<manifest.version>``, atomically.

    ``manifest.files`` must list exactly ``files`` with their sha256 (see
    :func:`build_files_digest`). Raises :class:`VersionExistsError` when the version
    exists, :class:`PublishError` (or the ``OSError``) when writing fails; either way
    nothing is left under the version's name and the temporary directory is removed.
    """
    version = manifest.version
    if set(manifest.files) != set(files):
        raise PublishError(
            f"manifest lists {sorted(manifest.files)} but the files are {sorted(files)}"
        )
    if MANIFEST_FILE in files:
        raise PublishError(f"{MANIFEST_FILE} is written from the manifest, not given as a file")
    models_root.mkdir(parents=True, exist_ok=True)
    final = models_root / version
    if final.exists():
        raise VersionExistsError(f"version {version!r} already exists under {models_root}")

    tmp = models_root / f"{TMP_PREFIX}{version}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        for name, data in sorted(files.items()):
            _write_synced(tmp / name, data)
            if sha256_file(tmp / name) != manifest.files[name]:
                raise PublishError(f"sha256 of {name} differs from the manifest's")
        _write_synced(tmp / MANIFEST_FILE, manifest.model_dump_json(indent=2).encode())
        _fsync_dir(tmp)
        try:
            # Renaming a directory onto an existing non-empty one fails (ENOTEMPTY/EEXIST),
            # and every published version holds files: a version is never replaced.
            os.rename(tmp, final)
        except OSError as exc:
            if final.exists():
                raise VersionExistsError(
                    f"version {version!r} appeared under {models_root} while publishing"
                ) from exc
            raise
        _fsync_dir(models_root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def build_files_digest(files: Mapping[str, bytes]) -> dict[str, str]:
    """``{name: sha256 hex}`` of in-memory files, for ``Manifest.files``."""
    return {name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())}


@dataclass(frozen=True)
class RetentionResult:
    kept: tuple[str, ...]
    removed: tuple[str, ...]


def select_for_removal(
    versions: Collection[str], keep: int, protected: Collection[str]
) -> list[str]:
    """Which versions retention removes: all but the newest ``keep``, never a protected one.

    Pure. Names sort by time (oldest first).

    >>> select_for_removal(["v1", "v2", "v3", "v4"], keep=2, protected={"v1"})
    ['v2']
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    ordered = sorted(versions)
    newest = set(ordered[-keep:])
    return [v for v in ordered if v not in newest and v not in protected]


def apply_retention(
    models_root: Path, keep: int, protected: Collection[str] = ()
) -> RetentionResult:
    """Remove old versions per :func:`select_for_removal`, each atomically (rename, delete).

    Only directories holding a ``manifest.json`` count as versions: anything else under
    the root (a dataset, a directory a person made) is never touched.
    """
    versions = [
        v for v in list_versions(models_root) if (models_root / v / MANIFEST_FILE).is_file()
    ]
    doomed = select_for_removal(versions, keep, protected)
    removed: list[str] = []
    for version in doomed:
        trash = models_root / f"{TRASH_PREFIX}{version}-{secrets.token_hex(4)}"
        try:
            os.rename(models_root / version, trash)
        except FileNotFoundError:
            continue  # another run removed it
        removed.append(version)
        shutil.rmtree(trash, ignore_errors=True)
    if removed:
        _fsync_dir(models_root)
    kept = tuple(v for v in versions if v not in removed)
    return RetentionResult(kept=kept, removed=tuple(removed))


def clean_stale(
    models_root: Path, older_than_seconds: float = STALE_AFTER_SECONDS, now: float | None = None
) -> list[str]:
    """Remove unfinished publishes (``.tmp-*``) and leftover ``.trash-*`` older than the limit.

    The age is the directory's modification time, so a publish in progress (younger than
    an hour) is left alone.
    """
    if not models_root.is_dir():
        return []
    now = time.time() if now is None else now
    removed = []
    for entry in sorted(models_root.iterdir()):
        if not entry.name.startswith((TMP_PREFIX, TRASH_PREFIX)) or is_version_dir(entry):
            continue
        with contextlib.suppress(FileNotFoundError):
            if now - entry.stat().st_mtime >= older_than_seconds:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry.name)
    return removed
