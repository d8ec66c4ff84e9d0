"""What a serving process keeps out of its memory (decision 0011)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from service.artifact import TextStage, read_text_stage
from service.features import extract
from service.models import _TRIM
from tests.service.conftest import CANDIDATE_VERSION, STABLE_VERSION
from training.data import generate_transactions

ROOT = Path(__file__).resolve().parents[2]


def test_serving_two_models_imports_neither_the_lightgbm_package_nor_its_friends(
    models_root: Path,
) -> None:
    """LightGBM's Python package imports scikit-learn, pandas and scipy (~150 MiB); the
    service scores through LightGBM's C API and never imports them."""
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "import service.app\n"
        "from service.features import extract\n"
        "from service.models import load_model\n"
        f"models = [load_model(Path({str(models_root)!r}), v) for v in "
        f"({STABLE_VERSION!r}, {CANDIDATE_VERSION!r})]\n"
        "batch = extract(['UBER *TRIP', 'NETFLIX.COM'], ['', ''], [-21.5, -15.49])\n"
        "print(json.dumps({'shape': [list(m.predict_proba(batch).shape) for m in models], "
        "'modules': sorted({n.split('.')[0] for n in sys.modules})}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    found = json.loads(out)
    assert found["shape"] == [[2, 10], [2, 10]]
    assert not {"lightgbm", "sklearn", "pandas", "scipy", "pyarrow"} & set(found["modules"])


def test_the_text_stage_holds_its_weight_rows_only_and_scores_the_dense_bits(
    models_root: Path,
) -> None:
    stage = read_text_stage(models_root / STABLE_VERSION)
    dense = stage.coef  # rebuilt on demand, never kept
    held = sum(getattr(stage, name).nbytes for name in ("_rows", "_weights", "_row_of"))
    assert held < dense.nbytes / 2
    frame = generate_transactions(300, seed=3)
    batch = extract(frame["merchant"].tolist(), frame["memo"].tolist(), frame["amount"].tolist())
    # The dense computation, as the stage did before it was made compact.
    contrib = dense[batch.indices] * batch.data[:, None]
    nnz = int(batch.indptr[-1])
    summed = np.add.reduceat(contrib, np.minimum(batch.indptr[:-1], nnz - 1), axis=0)
    expected = np.zeros((len(batch), stage.n_classes))
    nonempty = batch.indptr[1:] > batch.indptr[:-1]
    expected[nonempty] = summed[nonempty]
    expected += stage.intercept
    np.testing.assert_array_equal(stage.scores(batch), expected)
    assert TextStage(dense, stage.intercept).to_bytes() == stage.to_bytes()


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (np.array([3, 2]), "unique and ascending"),
        (np.array([2, 2]), "unique and ascending"),
        (np.array([-1, 2]), "outside the hashed text space"),
        (np.array([1, 2**32 + 5]), "outside the hashed text space"),  # not wrapped to 5
        (np.array([1.0, 2.0]), "vector of integers"),
    ],
)
def test_a_text_stage_file_with_bad_rows_is_refused(
    tmp_path: Path, rows: np.ndarray, message: str
) -> None:
    path = tmp_path / "text_stage.npz"
    np.savez_compressed(path, rows=rows, weights=np.ones((2, 3), np.float32), intercept=np.zeros(3))
    with pytest.raises(ValueError, match=message):
        TextStage.from_file(path)


@pytest.mark.skipif(_TRIM is None, reason="not glibc: nothing to give back")
def test_freed_heap_pages_are_given_back_after_a_load() -> None:
    script = (
        "import ctypes\n"
        "from service.models import release_freed_memory\n"
        "def rss():\n"
        "    status = open('/proc/self/status').read().split('VmRSS:')[1]\n"
        "    return int(status.split()[0])\n"
        "libc = ctypes.CDLL(None)\n"
        "libc.malloc.restype = ctypes.c_void_p\n"
        "libc.free.argtypes = [ctypes.c_void_p]\n"
        "blocks = [libc.malloc(200) for _ in range(150_000)]\n"  # ~30 MB of small blocks
        "for b in blocks: ctypes.memset(b, 1, 200)\n"
        "for b in blocks[1:]: libc.free(b)\n"  # the first keeps the heap's bottom in use
        "before = rss()\n"
        "release_freed_memory()\n"
        "print(before - rss())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    assert int(out) > 8_000  # KiB; nothing without the call
