"""What a serving process keeps out of its memory (decision 0011)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.service.conftest import CANDIDATE_VERSION, STABLE_VERSION

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
