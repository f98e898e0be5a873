"""Audit hash chain: canonical form, hashing, tamper detection with the right index."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import itertools
from enum import Enum
from typing import Any

import pytest

from serving.audit_chain import (
    GENESIS_HASH,
    AuditEntry,
    AuditRecord,
    append,
    canonical_json,
    chain,
    entry_hash,
    verify,
)

T0 = dt.datetime(2025, 6, 1, 8, 0, tzinfo=dt.UTC)
KINDS = ["score", "personal_data_view", "queue_decision", "outcome", "rule_change", "promotion"]


def records(n: int) -> list[AuditRecord]:
    return [
        AuditRecord(
            f"e{i}",
            T0 + dt.timedelta(minutes=i),
            KINDS[i % len(KINDS)],
            f"user{i % 3}",
            {"shipment_id": f"s{i}", "score": 0.1 * i, "n": i},
        )
        for i in range(n)
    ]


def forge(prev: AuditEntry | None, seq: int, record: AuditRecord) -> AuditEntry:
    """An entry made by someone who knows the hash function (no secret in the chain)."""
    prev_hash = GENESIS_HASH if prev is None else prev.hash
    draft = AuditEntry(
        seq, record.entry_id, record.at, record.kind, record.actor, record.payload, prev_hash, ""
    )
    return dataclasses.replace(draft, hash=entry_hash(prev_hash, draft.content()))


class Colour(Enum):
    RED = "red"


class TestCanonical:
    def test_sorted_compact_utc(self) -> None:
        almaty = dt.timezone(dt.timedelta(hours=5))
        value = {
            "b": 1,
            "a": [dt.datetime(2025, 6, 1, 13, 0, tzinfo=almaty), dt.date(2025, 6, 1)],
            "c": Colour.RED,
            "d": ("x", None, True),
        }
        assert canonical_json(value) == (
            '{"a":["2025-06-01T08:00:00+00:00","2025-06-01"],"b":1,"c":"red","d":["x",null,true]}'
        )

    def test_floats_repr_stable_and_distinct_from_ints(self) -> None:
        assert canonical_json({"x": 0.1 + 0.2}) == '{"x":0.30000000000000004}'
        assert canonical_json(1.0) != canonical_json(1)
        assert canonical_json(1e-7) == "1e-07"

    def test_non_ascii_kept(self) -> None:
        assert canonical_json({"name": "Ахмедов"}) == '{"name":"Ахмедов"}'

    @pytest.mark.parametrize(
        "bad", [float("nan"), float("inf"), dt.datetime(2025, 6, 1), {1: "x"}, {"s": {1, 2}}]
    )
    def test_ambiguous_values_refused(self, bad: object) -> None:
        with pytest.raises(ValueError):
            canonical_json(bad)

    def test_entry_hash_by_hand(self) -> None:
        expected = hashlib.sha256((GENESIS_HASH + "\n" + '{"a":1}').encode()).hexdigest()
        assert entry_hash(GENESIS_HASH, {"a": 1}) == expected
        assert entry_hash("1" * 64, {"a": 1}) != expected

    def test_key_order_does_not_matter(self) -> None:
        assert entry_hash("x", {"a": 1, "b": 2}) == entry_hash("x", {"b": 2, "a": 1})


class TestChain:
    def test_links(self) -> None:
        entries = chain(records(4))
        assert [e.seq for e in entries] == [1, 2, 3, 4]
        assert entries[0].prev_hash == GENESIS_HASH
        for before, after in itertools.pairwise(entries):
            assert after.prev_hash == before.hash
        assert verify(entries).ok
        assert verify([]).ok

    def test_continue_after(self) -> None:
        recs = records(6)
        whole = chain(recs)
        first = chain(recs[:3])
        assert first + chain(recs[3:], after=first[-1]) == whole
        assert append(whole[-1], records(7)[6]).seq == 7

    def test_segment_verification(self) -> None:
        whole = chain(records(6))
        assert verify(whole[3:], start_seq=4, anchor_hash=whole[2].hash).ok
        assert not verify(whole[3:], start_seq=4, anchor_hash=whole[1].hash).ok


class TestTamper:
    entries = chain(records(8))

    def test_edit_payload(self) -> None:
        tampered = list(self.entries)
        tampered[3] = dataclasses.replace(tampered[3], payload={**tampered[3].payload, "score": 0})
        result = verify(tampered)
        assert (result.ok, result.first_broken_index, result.first_broken_id) == (False, 3, "e3")
        assert "edited" in result.reason

    @pytest.mark.parametrize("field", ["actor", "kind", "entry_id"])
    def test_edit_other_fields(self, field: str) -> None:
        tampered = list(self.entries)
        changes: dict[str, Any] = {field: "someone-else"}
        tampered[5] = dataclasses.replace(tampered[5], **changes)
        assert verify(tampered).first_broken_index == 5

    def test_edit_time(self) -> None:
        tampered = list(self.entries)
        tampered[0] = dataclasses.replace(tampered[0], at=T0 + dt.timedelta(seconds=1))
        assert verify(tampered).first_broken_index == 0

    def test_edit_and_rehash_breaks_the_next_link(self) -> None:
        tampered = list(self.entries)
        edited = dataclasses.replace(tampered[2], payload={"shipment_id": "s2", "score": 0.0})
        tampered[2] = forge(
            tampered[1],
            3,
            AuditRecord(edited.entry_id, edited.at, edited.kind, edited.actor, edited.payload),
        )
        result = verify(tampered)
        assert result.first_broken_index == 3 and "prev_hash" in result.reason

    def test_delete(self) -> None:
        tampered = self.entries[:4] + self.entries[5:]
        result = verify(tampered)
        assert (result.first_broken_index, result.first_broken_id) == (4, "e5")
        assert "sequence number 6 where 5 was expected" in result.reason

    def test_delete_first(self) -> None:
        assert verify(self.entries[1:]).first_broken_index == 0

    def test_delete_and_renumber_breaks_link(self) -> None:
        tampered = self.entries[:4] + [
            dataclasses.replace(e, seq=e.seq - 1) for e in self.entries[5:]
        ]
        assert verify(tampered).first_broken_index == 4

    def test_delete_last_needs_the_recorded_head(self) -> None:
        head = self.entries[-1].hash
        assert verify(self.entries[:-1]).ok  # invisible from the rows alone
        result = verify(self.entries[:-1], expected_head=head)
        assert (result.ok, result.first_broken_index) == (False, 7)
        assert verify(self.entries, expected_head=head).ok

    def test_reorder(self) -> None:
        tampered = list(self.entries)
        tampered[2], tampered[6] = tampered[6], tampered[2]
        result = verify(tampered)
        assert (result.first_broken_index, result.first_broken_id) == (2, "e6")

    def test_reorder_adjacent(self) -> None:
        tampered = list(self.entries)
        tampered[4], tampered[5] = tampered[5], tampered[4]
        assert verify(tampered).first_broken_index == 4

    def test_insert_naive(self) -> None:
        intruder = dataclasses.replace(self.entries[3], entry_id="fake", payload={"x": 1})
        tampered = [*self.entries[:3], intruder, *self.entries[3:]]
        result = verify(tampered)
        assert (result.first_broken_index, result.first_broken_id) == (3, "fake")

    def test_insert_forged(self) -> None:
        # a well-formed entry slipped in after entry 3 (seq 4, right link, right hash):
        # the chain breaks at the next row, whose sequence number is now one short
        intruder = forge(self.entries[2], 4, AuditRecord("fake", T0, "outcome", "mallory", {}))
        tampered = [*self.entries[:3], intruder, *self.entries[3:]]
        result = verify(tampered)
        assert (result.first_broken_index, result.first_broken_id) == (4, "e3")
        assert "inserted" in result.reason

    def test_forged_hash_field(self) -> None:
        tampered = list(self.entries)
        tampered[6] = dataclasses.replace(tampered[6], hash="f" * 64)
        assert verify(tampered).first_broken_index == 6
