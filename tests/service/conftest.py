"""Fixtures of the service suite: real model versions and the app through TestClient.

Model versions come from the training pipeline itself (``train_and_publish``), small and
quick, published once per session: ``v1`` and ``v2`` are two honest models trained on
different samples (they mostly agree). Tests that damage a version work on a copy
(:func:`models_copy`).

Everything under tests/service is marked ``unit``: no servers, seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from service.app import create_app
from service.artifact import MANIFEST_FILE, MODEL_FILE
from service.runtime import SuggestionService
from service.serving_config import ServingConfig
from service.settings import Settings
from service.state import ServingState
from training.gate import GateConfig
from training.pipeline import train_and_publish
from training.train import TrainParams
from training.trees import CompileTrees

with warnings.catch_warnings():
    # Starlette deprecates its TestClient over httpx in favour of httpx2, which is not a
    # dependency of this project; the client works the same.
    warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

HERE = Path(__file__).resolve().parent
STABLE_VERSION = "v1"
CANDIDATE_VERSION = "v2"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.unit)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read the environment: start every test from none of ours."""
    for name in list(os.environ):
        if name.startswith(("MODELROLLOUT_", "SUGGEST_")) or name in ("KUBECONFIG", "POD_NAME"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models root holding two published versions, ``v1`` and ``v2`` (read-only: copy it)."""
    return publish_pair(tmp_path_factory.mktemp("models"))


def publish_pair(root: Path, compile_trees: CompileTrees = "off") -> Path:
    """Publish small ``v1`` and ``v2`` under ``root`` (seeds 1 and 2), and return it."""
    for version, seed in ((STABLE_VERSION, 1), (CANDIDATE_VERSION, 2)):
        train_and_publish(
            root,
            rows=3000,
            seed=seed,
            version=version,
            params=TrainParams.quick(n_jobs=1),
            gate=GateConfig(enforce=False),
            rules=None,
            compile_trees=compile_trees,
        )
    return root


@pytest.fixture
def models_copy(models_root: Path, tmp_path: Path) -> Path:
    """A private copy of the models root, for tests that add or damage versions."""
    root = tmp_path / "models"
    shutil.copytree(models_root, root)
    return root


def corrupt_version(root: Path, source: str, name: str) -> None:
    """Publish ``name`` as a copy of ``source`` whose model file no longer matches its sha256."""
    shutil.copytree(root / source, root / name)
    manifest = json.loads((root / name / MANIFEST_FILE).read_text())
    manifest["version"] = name
    (root / name / MANIFEST_FILE).write_text(json.dumps(manifest))
    with (root / name / MODEL_FILE).open("a") as f:
        f.write("\n# tampered\n")


def transaction(
    tid: str = "t1",
    merchant: str = "WHOLEFDS MKT #10233",
    memo: str = "weekly grocery run",
    amount: float = -54.2,
    user_id: str = "u1",
    mcc: str | None = None,
) -> dict[str, Any]:
    txn = {"id": tid, "merchant": merchant, "memo": memo, "amount": amount, "user_id": user_id}
    return txn if mcc is None else txn | {"mcc": mcc}


@dataclass
class Served:
    """A running app (lifespan started) with its file-based configuration."""

    client: TestClient
    service: SuggestionService
    config_file: Path

    @property
    def state(self) -> ServingState:
        return self.service.state

    def configure(self, config: ServingConfig, timeout: float = 10.0) -> ServingState:
        """Write ``config`` to the watched file and wait until it is applied."""
        tmp = self.config_file.with_suffix(".tmp")
        tmp.write_text(config.to_json())
        tmp.replace(self.config_file)
        ok = self.service.store.wait_for(lambda s: s.applied and s.config == config, timeout)
        assert ok, f"generation {config.generation} not applied within {timeout}s"
        return self.state

    def suggest(self, *txns: dict[str, Any]) -> dict[str, Any]:
        response = self.client.post("/v1/suggestions", json={"transactions": list(txns)})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def settle(self) -> None:
        """Wait until the shadow's worker has compared every row queued so far."""
        assert self.service.suggester.shadow.drain(30), "the shadow queue did not drain"

    def metric(self, name: str, *, settle: bool = True, **labels: str) -> float:
        """A sample's value (0 when absent); first, unless ``settle`` is false, once the
        shadow's worker has compared everything queued so far (it runs off the request
        path, so a comparison is counted shortly after its answer)."""
        if settle:
            self.settle()
        value = self.service.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


ServeFactory = Callable[..., Served]


@pytest.fixture
def serve(models_root: Path, tmp_path: Path) -> Iterator[ServeFactory]:
    """Start an app configured by a file; ``serve(config, models=..., **settings)``."""
    stack: list[Any] = []

    def start(
        config: ServingConfig | None = None, *, models: Path | None = None, **settings: Any
    ) -> Served:
        config_file = tmp_path / f"serving-{len(stack)}.json"
        if config is not None:
            config_file.write_text(config.to_json())
        s = Settings(
            models_root=models or models_root,
            config_file=config_file,
            file_poll_seconds=0.05,
            pod_name="test-pod",
            **settings,
        )
        service = SuggestionService(s)
        cm = _running(create_app(service=service))
        client = cm.__enter__()
        stack.append(cm)
        served = Served(client, service, config_file)
        expected = config
        assert service.store.wait_for(
            lambda st: st.applied and (expected is None or st.config == expected), 10.0
        ), "the first configuration was not applied within 10 s"
        return served

    yield start
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


@contextmanager
def _running(app: Any) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client
