"""Fuzz the API from its own OpenAPI schema, through the ASGI app (no network): never a 5xx.

Schemathesis generates valid requests (positive) and requests that break the schema
(negative) for every operation; each must get an answer below 500.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from service.app import create_app
from service.runtime import SuggestionService
from service.serving_config import ServingConfig
from service.settings import Settings
from tests.service.conftest import CANDIDATE_VERSION, STABLE_VERSION

# The schema is loaded when the module is collected; the service behind the app is put in
# place (with real models) by the fixture below, before any request is made.
APP = create_app(service=SuggestionService(Settings(config_source="env", pod_name="fuzz")))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module", autouse=True)
def _real_service(models_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    config_file = tmp_path_factory.mktemp("fuzz") / "serving.json"
    config = ServingConfig(
        generation=1,
        stable=STABLE_VERSION,
        candidate=CANDIDATE_VERSION,
        canary_percent=50,
        shadow_percent=100,
        min_confidence=0.3,
    )
    config_file.write_text(config.to_json())
    service = SuggestionService(
        Settings(models_root=models_root, config_file=config_file, pod_name="fuzz")
    )
    service.start()
    placeholder = APP.state.service
    APP.state.service = service
    try:
        assert service.store.wait_for(lambda s: s.config == config, 10)
        yield
    finally:
        APP.state.service = placeholder
        service.stop()


@schema.parametrize()
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_no_request_gets_a_server_error(case: Any) -> None:
    response = case.call()
    assert response.status_code < 500, (case.method, case.path, response.text[:500])
