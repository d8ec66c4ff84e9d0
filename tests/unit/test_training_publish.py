"""Publishing: atomic versions, names that sort by time, retention, clean-up of leftovers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from service.artifact import (
    CALIBRATION_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    TEXT_STAGE_FILE,
    Manifest,
    list_versions,
    verify_version,
)
from service.features import FEATURE_VERSION, lexicon_digest, model_feature_names
from testbed.process import wait_until
from training.publish import (
    STALE_AFTER_SECONDS,
    VERSION_PATTERN,
    PublishError,
    VersionExistsError,
    apply_retention,
    build_files_digest,
    clean_stale,
    new_version_name,
    publish_version,
    select_for_removal,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def _files(seed: str = "x") -> dict[str, bytes]:
    return {
        MODEL_FILE: f"tree {seed}\n".encode() * 100,
        CALIBRATION_FILE: b'{"a":[1],"b":[0]}',
        TEXT_STAGE_FILE: f"weights {seed}".encode(),
    }


def _manifest(version: str, files: dict[str, bytes]) -> Manifest:
    return Manifest(
        version=version,
        created=datetime(2026, 11, 22, tzinfo=UTC),
        files=build_files_digest(files),
        features=list(model_feature_names(["a", "b"])),
        feature_version=FEATURE_VERSION,
        lexicon_sha256=lexicon_digest(),
        classes=["a", "b"],
        metrics={"macro_f1": 0.9},
        data_fingerprint="0" * 64,
    )


def _publish(root: Path, version: str) -> Path:
    files = _files(version)
    return publish_version(root, files, _manifest(version, files))


def _entries(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


def test_a_published_version_is_complete_and_verifies(tmp_path: Path) -> None:
    path = _publish(tmp_path, "v1")
    assert path == tmp_path / "v1"
    assert _entries(tmp_path) == ["v1"]
    assert sorted(p.name for p in path.iterdir()) == sorted(
        [CALIBRATION_FILE, MANIFEST_FILE, MODEL_FILE, TEXT_STAGE_FILE]
    )
    assert verify_version(tmp_path, "v1").files == build_files_digest(_files("v1"))


def test_an_existing_version_is_never_replaced(tmp_path: Path) -> None:
    _publish(tmp_path, "v1")
    before = (tmp_path / "v1" / MODEL_FILE).read_bytes()
    with pytest.raises(VersionExistsError, match="'v1' already exists"):
        _publish(tmp_path, "v1")
    assert (tmp_path / "v1" / MODEL_FILE).read_bytes() == before
    assert _entries(tmp_path) == ["v1"]


def test_a_version_appearing_during_the_publish_is_not_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_rename = os.rename

    def racing_rename(src: str | Path, dst: str | Path) -> None:
        monkeypatch.setattr(os, "rename", real_rename)
        _publish(tmp_path, "v1")  # another publisher wins the name first
        real_rename(src, dst)

    files = _files("mine")
    monkeypatch.setattr(os, "rename", racing_rename)
    with pytest.raises(VersionExistsError, match="appeared"):
        publish_version(tmp_path, files, _manifest("v1", files))
    monkeypatch.undo()
    assert _entries(tmp_path) == ["v1"]
    assert verify_version(tmp_path, "v1").files == build_files_digest(_files("v1"))


def test_a_crash_before_the_rename_leaves_no_version_and_older_ones_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _publish(tmp_path, "v1")

    def crash(src: str | Path, dst: str | Path) -> None:
        raise OSError("disk went away")

    monkeypatch.setattr(os, "rename", crash)
    with pytest.raises(OSError, match="disk went away"):
        _publish(tmp_path, "v2")
    monkeypatch.undo()
    assert _entries(tmp_path) == ["v1"]  # the temporary directory is gone too
    assert list_versions(tmp_path) == ["v1"]
    verify_version(tmp_path, "v1")


def test_a_crash_while_writing_files_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(fd: int) -> None:
        raise OSError("no space left on device")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="no space"):
        _publish(tmp_path, "v1")
    monkeypatch.undo()
    assert _entries(tmp_path) == []


def test_a_manifest_that_does_not_match_the_files_is_refused(tmp_path: Path) -> None:
    files = _files()
    manifest = _manifest("v1", files)
    with pytest.raises(PublishError, match=r"sha256 of model\.txt"):
        publish_version(tmp_path, {**files, MODEL_FILE: b"other"}, manifest)
    with pytest.raises(PublishError, match="manifest lists"):
        publish_version(tmp_path, {MODEL_FILE: files[MODEL_FILE]}, manifest)
    assert _entries(tmp_path) == []


_KILLED_PUBLISHER = """
import os, signal
from datetime import UTC, datetime
from pathlib import Path
from service.artifact import Manifest
from service.features import FEATURE_NAMES, FEATURE_VERSION, lexicon_digest
from training.publish import build_files_digest, publish_version

real_rename = os.rename
def stall(src, dst):
    Path({marker!r}).write_text(str(src))
    signal.pause()  # killed here: files written and fsynced, not yet renamed
    real_rename(src, dst)
os.rename = stall
files = {{"model.txt": b"tree" * 1000, "calibration.json": b"{{}}"}}
manifest = Manifest(
    version="v2", created=datetime.now(UTC), files=build_files_digest(files),
    features=list(FEATURE_NAMES), feature_version=FEATURE_VERSION, classes=["a", "b"],
    lexicon_sha256=lexicon_digest(),
    data_fingerprint="0" * 64,
)
publish_version(Path({models!r}), files, manifest)
"""


def test_a_publisher_killed_mid_publish_leaves_no_version(tmp_path: Path) -> None:
    models = tmp_path / "models"
    _publish(models, "v1")
    marker = tmp_path / "renaming"
    script = _KILLED_PUBLISHER.format(marker=str(marker), models=str(models))
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    try:

        def renaming() -> bool:
            assert proc.poll() is None, "the publisher exited before renaming"
            return marker.exists()

        wait_until(renaming, timeout=60, interval=0.05, what="the publisher at the rename")
        leftover = Path(marker.read_text())
        assert leftover.name.startswith(".tmp-v2-")
        assert (leftover / MANIFEST_FILE).is_file()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert list_versions(models) == ["v1"]  # readers see no trace of v2
    verify_version(models, "v1")
    # The leftover goes once it is stale, never earlier.
    assert clean_stale(models) == []
    assert clean_stale(models, now=time.time() + STALE_AFTER_SECONDS + 1) == [leftover.name]
    assert _entries(models) == ["v1"]


def test_version_names_sort_by_time_and_do_not_collide() -> None:
    t0 = datetime(2026, 11, 22, 19, 30, 12, tzinfo=UTC)
    names = [new_version_name(t0 + timedelta(seconds=s)) for s in (0, 1, 60, 3600, 86400)]
    assert names == sorted(names)
    assert all(VERSION_PATTERN.match(n) for n in names)
    assert names[0].startswith("20261122T193012Z-")
    same_second = {new_version_name(t0) for _ in range(200)}
    assert len(same_second) == 200
    # A non-UTC clock still names in UTC.
    local = datetime(2026, 11, 22, 20, 30, 12, tzinfo=UTC).astimezone()
    assert new_version_name(local).startswith("20261122T203012Z-")


@pytest.mark.parametrize(
    ("versions", "keep", "protected", "removed"),
    [
        (["v1", "v2", "v3"], 5, set(), []),
        (["v1", "v2", "v3", "v4"], 2, set(), ["v1", "v2"]),
        (["v1", "v2", "v3", "v4"], 2, {"v1"}, ["v2"]),
        (["v1", "v2", "v3", "v4"], 1, {"v1", "v2", "v3"}, []),
        (["v4", "v2", "v3", "v1"], 3, set(), ["v1"]),  # by name, not listing order
        ([], 1, {"v9"}, []),
    ],
)
def test_which_versions_retention_removes(
    versions: list[str], keep: int, protected: set[str], removed: list[str]
) -> None:
    assert select_for_removal(versions, keep, protected) == removed


def test_retention_needs_to_keep_one() -> None:
    with pytest.raises(ValueError, match="keep must be >= 1"):
        select_for_removal(["v1"], 0, set())


def test_retention_removes_whole_versions_and_leaves_other_things_alone(tmp_path: Path) -> None:
    for v in ("v1", "v2", "v3", "v4"):
        _publish(tmp_path, v)
    (tmp_path / "datasets").mkdir()  # not a version: no manifest
    (tmp_path / "train.csv").write_text("id\n")
    result = apply_retention(tmp_path, keep=1, protected={"v2"})
    assert result.removed == ("v1", "v3")
    assert result.kept == ("v2", "v4")
    assert _entries(tmp_path) == ["datasets", "train.csv", "v2", "v4"]
    verify_version(tmp_path, "v2")


def test_clean_stale_removes_only_old_leftovers(tmp_path: Path) -> None:
    _publish(tmp_path, "v1")
    for name in (".tmp-v2-aaaa", ".trash-v0-bbbb", ".tmp-v3-cccc", ".hidden"):
        (tmp_path / name).mkdir()
    old = time.time() - STALE_AFTER_SECONDS - 10
    os.utime(tmp_path / ".tmp-v2-aaaa", (old, old))
    os.utime(tmp_path / ".trash-v0-bbbb", (old, old))
    os.utime(tmp_path / ".hidden", (old, old))
    assert clean_stale(tmp_path) == [".tmp-v2-aaaa", ".trash-v0-bbbb"]
    assert _entries(tmp_path) == [".hidden", ".tmp-v3-cccc", "v1"]
    assert clean_stale(tmp_path / "absent") == []
