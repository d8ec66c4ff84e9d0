"""Event ids: compact, self-describing, optionally signed."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.events import MAX_EVENT_ID_LENGTH, EventCodec, EventIdError
from service.metric_names import NO_VERSION, Source


@given(
    served_by=st.sampled_from([Source.STABLE, Source.CANDIDATE]),
    version=st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,40}\Z"),
    label=st.text(min_size=1, max_size=60),
)
def test_an_event_id_round_trips(served_by: Source, version: str, label: str) -> None:
    for codec in (EventCodec(), EventCodec(b"key")):
        event_id = codec.encode(served_by, version, label)
        event = codec.decode(event_id)
        assert (event.served_by, event.model_version, event.label) == (served_by, version, label)


def test_the_longest_answer_still_makes_an_id_that_decodes() -> None:
    label = "\U0001f600" * 128  # 4 bytes each in UTF-8
    version = "v" * 128
    for codec in (EventCodec(), EventCodec(b"key")):
        event_id = codec.encode(Source.CANDIDATE, version, label)
        assert len(event_id) <= MAX_EVENT_ID_LENGTH
        assert codec.decode(event_id).label == label


def test_event_ids_are_compact_unique_and_url_safe() -> None:
    codec = EventCodec(b"key")
    ids = {
        codec.encode(Source.STABLE, "20260101T000000Z-ab12cd34", "Groceries") for _ in range(1000)
    }
    assert len(ids) == 1000
    sample = next(iter(ids))
    assert len(sample) < 120
    assert all(c.isalnum() or c in "-_." for c in sample)


def test_rules_answers_carry_no_version() -> None:
    codec = EventCodec()
    assert codec.decode(codec.encode(Source.RULES, NO_VERSION, "Other")).model_version == NO_VERSION
    forged = codec.encode(Source.RULES, "v1", "Other")
    with pytest.raises(EventIdError, match="no model version"):
        codec.decode(forged)


def test_a_signed_id_is_refused_when_altered_or_signed_with_another_key() -> None:
    codec = EventCodec(b"key")
    event_id = codec.encode(Source.CANDIDATE, "v2", "Dining")
    head, answer, nonce, tag = event_id.split(".")
    other = EventCodec().encode(Source.STABLE, "v2", "Dining").split(".")[1]
    with pytest.raises(EventIdError, match="signature does not match"):
        codec.decode(f"{head}.{other}.{nonce}.{tag}")
    with pytest.raises(EventIdError, match="signature does not match"):
        EventCodec(b"another key").decode(event_id)
    with pytest.raises(EventIdError, match="signature missing"):
        codec.decode(f"{head}.{answer}.{nonce}")
    # Without a key, a signed id is accepted (the tag is ignored).
    assert EventCodec().decode(event_id).label == "Dining"


@given(st.text(max_size=MAX_EVENT_ID_LENGTH + 10))
def test_decoding_anything_either_succeeds_or_raises_event_id_error(text: str) -> None:
    with contextlib.suppress(EventIdError):
        EventCodec().decode(text)


def test_nonces_drawn_for_a_batch_are_distinct_and_shaped_like_single_ones() -> None:
    codec = EventCodec(b"key")
    nonces = EventCodec.nonces(1000)
    assert len(nonces) == len(set(nonces)) == 1000
    single = codec.encode(Source.STABLE, "v1", "Dining").split(".")[2]
    assert {len(n) for n in nonces} == {len(single)} == {12}
    event_id = codec.encode(Source.STABLE, "v1", "Dining", nonces[7])
    assert event_id.split(".")[2] == nonces[7]
    assert codec.decode(event_id).label == "Dining"
    assert EventCodec.nonces(0) == []
