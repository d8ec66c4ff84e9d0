"""Live reconfiguration, canary and shadow through the API, and every fallback to rules."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from service import metric_names as names
from service.metric_names import FallbackReason, Source
from service.models import LoadedModel
from service.routing import canary_bucket
from service.serving_config import ServingConfig, SuggestMode
from testbed.process import wait_until
from tests.service.conftest import (
    CANDIDATE_VERSION,
    STABLE_VERSION,
    ServeFactory,
    corrupt_version,
    transaction,
)


def test_a_new_file_is_applied_without_restart(serve: ServeFactory) -> None:
    served = serve(ServingConfig(generation=1))
    assert served.suggest(transaction())["suggestions"][0]["served_by"] == "rules"

    started = time.monotonic()
    served.configure(ServingConfig(generation=2, stable=STABLE_VERSION))
    elapsed = time.monotonic() - started
    body = served.suggest(transaction())
    assert body["generation"] == 2
    assert body["suggestions"][0]["served_by"] == "stable"
    assert elapsed < 2.0, f"applied after {elapsed:.2f}s"
    assert served.metric(names.SERVING_GENERATION, rollout="") == 2


def test_an_invalid_file_is_not_applied_and_the_error_is_shown(serve: ServeFactory) -> None:
    served = serve(ServingConfig(generation=5, stable=STABLE_VERSION))
    served.config_file.write_text('{"generation": 6, "stable": "v1", "canary_percent": 500}')
    wait_until(lambda: served.service.source.status()["last_error"] is not None, timeout=5,
               interval=0.02, what="the invalid document noticed")  # fmt: skip
    body = served.client.get("/v1/models").json()
    assert body["generation"] == 5
    assert "canary_percent" in body["config_source"]["last_error"]
    # A valid document clears the error.
    served.configure(ServingConfig(generation=7, stable=STABLE_VERSION))
    assert served.service.source.status()["last_error"] is None


def test_a_yaml_file_works_too(serve: ServeFactory) -> None:
    served = serve(ServingConfig(generation=1))
    served.config_file.write_text("generation: 2\nstable: v1\ntop_k: 1\n")
    assert served.service.store.wait_for(lambda s: s.config.generation == 2, 5)
    [answer] = served.suggest(transaction())["suggestions"]
    assert len(answer["candidates"]) == 1


def test_without_a_file_the_legacy_environment_configures_the_pod(
    serve: ServeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUGGEST_MODEL_VERSION", STABLE_VERSION)
    monkeypatch.setenv("SUGGEST_TOPK", "2")
    served = serve(None)
    assert served.state.config.stable == STABLE_VERSION
    [answer] = served.suggest(transaction())["suggestions"]
    assert answer["served_by"] == "stable"
    assert len(answer["candidates"]) == 2


def test_canary_users_get_the_candidate_and_stay_on_it(serve: ServeFactory) -> None:
    config = ServingConfig(
        generation=1,
        stable=STABLE_VERSION,
        candidate=CANDIDATE_VERSION,
        canary_percent=30,
        salt="canary-test",
    )
    served = serve(config)
    users = [f"user-{i}" for i in range(300)]
    txns = [transaction(f"t{i}", user_id=u) for i, u in enumerate(users)]
    first = served.suggest(*txns)["suggestions"]
    again = served.suggest(*txns)["suggestions"]
    for user, a, b in zip(users, first, again, strict=True):
        in_canary = canary_bucket("canary-test", user) < 3000
        assert a["served_by"] == ("candidate" if in_canary else "stable")
        assert a["model_version"] == (CANDIDATE_VERSION if in_canary else STABLE_VERSION)
        assert a["served_by"] == b["served_by"]

    # Raising the canary keeps every canary user on the candidate.
    served.configure(config.model_copy(update={"generation": 2, "canary_percent": 60}))
    raised = served.suggest(*txns)["suggestions"]
    for a, b in zip(first, raised, strict=True):
        if a["served_by"] == "candidate":
            assert b["served_by"] == "candidate"


def test_the_shadow_is_compared_but_never_returned(serve: ServeFactory) -> None:
    served = serve(
        ServingConfig(
            generation=1, stable=STABLE_VERSION, candidate=CANDIDATE_VERSION, shadow_percent=100
        )
    )
    txns = [transaction(f"t{i}", merchant=m, memo="", amount=a) for i, (m, a) in enumerate(
        [("NETFLIX.COM", -15.5), ("UBER *TRIP", -21.0), ("ACME PAYROLL", 3200.0)] * 10
    )]  # fmt: skip
    answers = served.suggest(*txns)["suggestions"]
    served.settle()
    assert {a["served_by"] for a in answers} == {"stable"}
    assert {a["model_version"] for a in answers} == {STABLE_VERSION}
    registry = served.service.metrics.registry
    samples = [
        s for m in registry.collect() for s in m.samples if s.name == names.SHADOW_COMPARISONS_TOTAL
    ]
    assert sum(s.value for s in samples) == 30
    assert {s.labels["baseline"] for s in samples} == {"stable"}
    assert {s.labels["shadow_version"] for s in samples} == {CANDIDATE_VERSION}
    served_top1 = {a["candidates"][0]["label"] for a in answers}
    assert {s.labels["category"] for s in samples} <= served_top1


def test_heuristic_mode_with_shadow_is_the_original_shadow_mode(serve: ServeFactory) -> None:
    served = serve(
        ServingConfig(
            generation=1, mode=SuggestMode.HEURISTIC, stable=STABLE_VERSION, shadow_percent=100
        )
    )
    netflix = transaction(merchant="NETFLIX.COM", memo="", mcc="5815")
    [answer] = served.suggest(netflix)["suggestions"]
    served.settle()
    assert answer["served_by"] == "rules"
    assert answer["rule"] == "entertainment-streaming"
    compared = served.metric(
        names.SHADOW_COMPARISONS_TOTAL,
        baseline="rules",
        baseline_version="none",
        shadow_version=STABLE_VERSION,
        category="Entertainment",
        agree="true",
    )
    assert compared == 1


def test_below_min_confidence_rules_answer(serve: ServeFactory) -> None:
    served = serve(ServingConfig(generation=1, stable=STABLE_VERSION, min_confidence=0.999))
    [answer] = served.suggest(transaction(merchant="???", memo="", amount=-3.0))["suggestions"]
    assert answer["served_by"] == "rules"
    assert answer["rule"] == "fallback-other"
    assert served.metric(names.FALLBACKS_TOTAL, reason=FallbackReason.LOW_CONFIDENCE) == 1


def test_candidates_below_min_confidence_are_dropped(serve: ServeFactory) -> None:
    served = serve(
        ServingConfig(generation=1, stable=STABLE_VERSION, min_confidence=0.05, top_k=10)
    )
    [answer] = served.suggest(transaction(merchant="NETFLIX.COM", memo=""))["suggestions"]
    served.settle()
    assert answer["served_by"] == "stable"
    assert all(c["confidence"] >= 0.05 for c in answer["candidates"])
    assert len(answer["candidates"]) < 10


def test_a_model_error_falls_back_to_rules_and_is_counted(
    serve: ServeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = serve(
        ServingConfig(
            generation=1, stable=STABLE_VERSION, candidate=CANDIDATE_VERSION, shadow_percent=100
        ),
        shadow_process=False,  # the patched method is this process's
    )

    def broken(self: LoadedModel, features: np.ndarray) -> np.ndarray:
        raise RuntimeError("boom")

    monkeypatch.setattr(LoadedModel, "predict_proba", broken)
    body = served.suggest(transaction("a"), transaction("b"))
    assert {a["served_by"] for a in body["suggestions"]} == {"rules"}
    served.settle()  # the candidate raised in shadow, on the shadow's worker
    assert served.metric(names.MODEL_ERRORS_TOTAL, role="stable", model_version="v1") == 1
    assert served.metric(names.MODEL_ERRORS_TOTAL, role="candidate", model_version="v2") == 1
    assert served.metric(names.FALLBACKS_TOTAL, reason="model_error") == 2
    assert served.metric(names.PREDICTIONS_TOTAL, served_by="rules", model_version="none") == 2


def test_a_model_answering_nonsense_is_a_model_error(
    serve: ServeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = serve(ServingConfig(generation=1, stable=STABLE_VERSION))

    def nan(self: LoadedModel, features: np.ndarray) -> np.ndarray:
        return np.full((features.shape[0], len(self.classes)), np.nan)

    monkeypatch.setattr(LoadedModel, "predict_proba", nan)
    [answer] = served.suggest(transaction())["suggestions"]
    assert answer["served_by"] == "rules"


def test_a_corrupt_version_never_serves(serve: ServeFactory, models_copy: Path) -> None:
    corrupt_version(models_copy, CANDIDATE_VERSION, "v-corrupt")
    config = ServingConfig(
        generation=1,
        stable=STABLE_VERSION,
        candidate="v-corrupt",
        canary_percent=100,
        shadow_percent=100,
    )
    served = serve(config, models=models_copy)
    assert "sha256" in served.state.load_errors["v-corrupt"]
    answers = served.suggest(*(transaction(f"t{i}", user_id=f"u{i}") for i in range(50)))
    assert {a["served_by"] for a in answers["suggestions"]} == {"stable"}
    assert served.metric(names.MODEL_LOAD_ERRORS_TOTAL, model_version="v-corrupt") >= 1
    assert served.metric(names.MODEL_LOADED, role="candidate", model_version="v-corrupt") == 0
    report = served.state.report("test-pod")
    assert report.generation == 1
    assert report.loaded == {"stable": STABLE_VERSION}
    assert "v-corrupt" in report.load_errors


def test_a_corrupt_stable_leaves_rules_serving(serve: ServeFactory, models_copy: Path) -> None:
    corrupt_version(models_copy, STABLE_VERSION, "v-corrupt")
    served = serve(ServingConfig(generation=1, stable="v-corrupt"), models=models_copy)
    [answer] = served.suggest(transaction())["suggestions"]
    assert answer["served_by"] == "rules"
    assert served.metric(names.FALLBACKS_TOTAL, reason="no_model") == 1


def test_a_failed_version_is_retried_and_serves_once_published(
    serve: ServeFactory, models_copy: Path
) -> None:
    served = serve(
        ServingConfig(generation=1, stable=STABLE_VERSION, candidate="v3", canary_percent=100),
        models=models_copy,
        load_retry_seconds=0.2,
    )
    assert "not found" in served.state.load_errors["v3"]
    # Published the way training does: under a hidden name, then renamed.
    staging = models_copy / ".v3-tmp"
    shutil.copytree(models_copy / CANDIDATE_VERSION, staging)
    manifest = json.loads((staging / "manifest.json").read_text())
    (staging / "manifest.json").write_text(json.dumps({**manifest, "version": "v3"}))
    staging.rename(models_copy / "v3")
    assert served.service.store.wait_for(lambda s: "v3" in s.loaded_versions.values(), 10)
    [answer] = served.suggest(transaction())["suggestions"]
    assert answer["model_version"] == "v3"


def test_a_version_already_loaded_is_reused_across_generations(serve: ServeFactory) -> None:
    served = serve(ServingConfig(generation=1, stable=STABLE_VERSION, candidate=CANDIDATE_VERSION))
    candidate = served.state.models[Source.CANDIDATE]
    state = served.configure(ServingConfig(generation=2, stable=CANDIDATE_VERSION))
    # The promoted candidate is the very same object: nothing was loaded again.
    assert state.models[Source.STABLE] is candidate
    assert Source.CANDIDATE not in state.models


def test_disabled_serves_rules_without_computing_models(serve: ServeFactory) -> None:
    served = serve(
        ServingConfig(
            generation=1, enabled=False, stable=STABLE_VERSION, candidate=CANDIDATE_VERSION,
            shadow_percent=100,
        )
    )  # fmt: skip
    [answer] = served.suggest(transaction())["suggestions"]
    assert answer["served_by"] == "rules"
    assert served.metric(names.FALLBACKS_TOTAL, reason="disabled") == 1
    assert (
        served.metric(
            names.INFERENCE_SECONDS + "_count", role="stable", model_version="v1", path="served"
        )
        == 0
    )


def test_with_compiling_on_a_loaded_version_moves_to_compiled_trees_while_serving(
    serve: ServeFactory, tmp_path: Path
) -> None:
    config = ServingConfig(generation=1, stable=STABLE_VERSION)
    served = serve(config, compile_models=True, compile_cache=tmp_path / "compiled")
    # It answers at once, from LightGBM's predictor, while the trees compile.
    assert served.suggest(transaction())["suggestions"][0]["served_by"] == "stable"
    model = served.state.models[Source.STABLE]
    wait_until(lambda: model.scorer == "compiled", timeout=120, what="the compiled trees",
               on_timeout=lambda: model.scorer_detail)  # fmt: skip
    (described,) = served.client.get("/v1/models").json()["models"]
    assert described["scorer"] == "compiled"
    assert "max relative difference" in described["scorer_detail"]
    assert served.metric(names.MODEL_COMPILATIONS_TOTAL, result="compiled") == 1
    assert served.suggest(transaction())["suggestions"][0]["served_by"] == "stable"


def test_a_fault_delay_shows_in_its_versions_latency_and_changes_no_answer(
    serve: ServeFactory,
) -> None:
    config = ServingConfig(
        generation=1, stable=STABLE_VERSION, candidate=CANDIDATE_VERSION, shadow_percent=100
    )
    served = serve(config, fault_delay=f"{CANDIDATE_VERSION}=0.05")
    for _ in range(3):
        body = served.suggest(transaction())
        assert body["suggestions"][0]["served_by"] == "stable"  # answers are unchanged
    served.settle()
    labels = {"role": "candidate", "model_version": CANDIDATE_VERSION, "path": "shadow"}
    slow = served.metric(f"{names.INFERENCE_SECONDS}_sum", **labels)
    evaluations = served.metric(f"{names.INFERENCE_SECONDS}_count", **labels)
    # The shadow's rows were evaluated on its worker (service/shadow.py), each evaluation slowed.
    assert evaluations >= 1
    assert slow >= evaluations * 0.05  # a lower bound: the burn never returns early
