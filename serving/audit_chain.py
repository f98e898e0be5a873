"""The audit log's hash chain, as pure functions.

Each entry carries its sequence number (1, 2, 3 ...), the hash of the entry
before it (`prev_hash`; the first entry carries GENESIS_HASH) and its own hash::

    hash = SHA-256( prev_hash + "\\n" + canonical_json(content) )

where content is everything in the entry except the two hashes (seq, entry_id,
at, kind, actor, payload). `verify` walks the chain and names the first entry
that breaks it: a changed entry no longer matches its hash; a deleted, inserted
or moved entry breaks the sequence numbers or the link to the previous hash.
Deleting entries at the end cannot be seen from the rows alone: keep the head
(seq and hash) that a verification reports, and pass it later as `checkpoint`: the
entry with that seq must still be there with that hash (so nothing at or before it
was removed or rewritten, even by someone who recomputed the hashes after it).

Lookup columns kept beside an entry but outside the hash (the audit_log's
`entity`/`entity_id`) are passed as `AuditEntry.lookup`; `verify` checks that each
equals the copy inside the hashed payload, so that editing one is detected too.

Canonical JSON: keys sorted, no whitespace, UTF-8, datetimes converted to UTC
ISO 8601 (``2025-03-01T08:00:00+00:00``; naive datetimes are refused as
ambiguous), dates ISO, enums by value, tuples as lists, floats in Python's
shortest round-trip form (``repr``, so 0.1 is ``0.1`` and 1.0 stays ``1.0``,
distinct from the integer 1); NaN and infinities are refused.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

GENESIS_HASH = "0" * 64


def _normalise(value: Any, path: str = "$") -> Any:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, Enum):
        return _normalise(value.value, path)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{path}: {value} cannot be recorded (not a finite number)")
        return value
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError(
                f"{path}: naive datetime {value.isoformat()} is ambiguous; "
                "use a timezone-aware (UTC) datetime"
            )
        return value.astimezone(dt.UTC).isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{path}: keys must be strings, got {key!r}")
            out[key] = _normalise(item, f"{path}.{key}")
        return out
    if isinstance(value, list | tuple):
        return [_normalise(v, f"{path}[{i}]") for i, v in enumerate(value)]
    raise ValueError(f"{path}: cannot record a value of type {type(value).__name__}")


class NotPlainError(Exception):
    """A value `plain` leaves to `_normalise` (which converts it, or says why not)."""


def plain(value: Any, *, nonfinite_as_none: bool = False) -> Any:
    """`_normalise(value)` for the common types, each compared exactly (no
    subclasses): dicts with string keys (returned with their keys sorted, as the
    canonical form orders them), lists, tuples, str, int, bool, None, finite floats,
    timezone-aware datetimes and dates. Raises NotPlainError at anything else, or at a
    NaN or infinity (`nonfinite_as_none`: those become None instead). The same
    values as `_normalise`, without building an error path for every value."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is float:
        if math.isfinite(value):
            return value
        if nonfinite_as_none:
            return None
        raise NotPlainError
    if kind is dict:
        out: dict[str, Any] = {}
        for key in sorted(value):  # (keys of mixed types raise TypeError: not plain)
            if type(key) is not str:
                raise NotPlainError
            item = value[key]
            of = type(item)
            if (
                of is str
                or of is int
                or of is bool
                or item is None
                or (of is float and math.isfinite(item))
            ):
                out[key] = item
            else:
                out[key] = plain(item, nonfinite_as_none=nonfinite_as_none)
        return out
    if kind is list or kind is tuple:
        return [plain(v, nonfinite_as_none=nonfinite_as_none) for v in value]
    if kind is dt.datetime:
        if value.tzinfo is None:
            raise NotPlainError
        return value.astimezone(dt.UTC).isoformat()
    if kind is dt.date:
        return value.isoformat()
    raise NotPlainError


def canonical_json(value: Any) -> str:
    """The one text form of a value that the hash is computed over."""
    try:
        data = plain(value)
    except (NotPlainError, TypeError):  # (`_normalise` converts it or says why not)
        data = _normalise(value)
    return canonical_plain_json(data)


def canonical_plain_json(data: Any) -> str:
    """`canonical_json` of data that `plain` returned (or JSON parsed: str keys,
    finite floats): the same text, without converting the data again."""
    return json.dumps(
        data,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )


def entry_hash(prev_hash: str, payload: Any) -> str:
    """SHA-256 (hex) of the previous hash and the canonical JSON of `payload`."""
    data = prev_hash + "\n" + canonical_json(payload)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class AuditRecord:
    """What is to be logged (before it is chained)."""

    entry_id: str
    at: dt.datetime
    kind: str  # score, personal_data_view, queue_decision, outcome, rule_change, promotion ...
    actor: str
    payload: Mapping[str, Any]


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    entry_id: str
    at: dt.datetime
    kind: str
    actor: str
    payload: Mapping[str, Any]
    prev_hash: str
    hash: str
    # columns stored beside the entry, outside the hash, that must equal the payload's
    # copies (name -> value); None when there are none
    lookup: Mapping[str, Any] | None = field(default=None, compare=False)

    def content(self) -> dict[str, Any]:
        """Everything the hash covers."""
        return {
            "seq": self.seq,
            "entry_id": self.entry_id,
            "at": self.at,
            "kind": self.kind,
            "actor": self.actor,
            "payload": self.payload,
        }


def append(prev: AuditEntry | None, record: AuditRecord) -> AuditEntry:
    """The entry that follows `prev` (or starts the chain when `prev` is None)."""
    seq = 1 if prev is None else prev.seq + 1
    prev_hash = GENESIS_HASH if prev is None else prev.hash
    draft = AuditEntry(
        seq, record.entry_id, record.at, record.kind, record.actor, record.payload, prev_hash, ""
    )
    return dataclasses.replace(draft, hash=entry_hash(prev_hash, draft.content()))


def chain(records: Iterable[AuditRecord], after: AuditEntry | None = None) -> list[AuditEntry]:
    """Chain records in order, continuing after `after` when given."""
    out: list[AuditEntry] = []
    prev = after
    for record in records:
        prev = append(prev, record)
        out.append(prev)
    return out


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    first_broken_index: int | None = None  # position in the list given to verify
    first_broken_id: str | None = None
    reason: str = ""


def verify(
    entries: Sequence[AuditEntry],
    *,
    start_seq: int = 1,
    anchor_hash: str = GENESIS_HASH,
    expected_head: str | None = None,
    checkpoint: tuple[int, str] | None = None,
) -> VerifyResult:
    """Check a chain (or a segment of it starting at `start_seq` after `anchor_hash`).

    `checkpoint` (seq, hash): a head recorded earlier; the entry with that seq must be
    present with that hash. Returns the first entry that breaks it, with the reason."""

    def broken(i: int, reason: str) -> VerifyResult:
        entry_id = entries[i].entry_id if i < len(entries) else None
        return VerifyResult(False, i, entry_id, reason)

    if checkpoint is not None and checkpoint[0] < start_seq:
        # (seq 0 is never written: a head that names no checked entry confirms nothing)
        return broken(
            0,
            f"entry {checkpoint[0]} was given as the recorded head, but the checked log "
            f"starts at entry {start_seq}: it names no entry",
        )
    prev_hash = anchor_hash
    for i, entry in enumerate(entries):
        expected_seq = start_seq + i
        if entry.seq != expected_seq:
            if entry.seq < expected_seq:
                why = "an entry was inserted or moved here"
            else:
                why = f"{entry.seq - expected_seq} entr(ies) deleted before it, or it was moved"
            return broken(
                i, f"sequence number {entry.seq} where {expected_seq} was expected: {why}"
            )
        if entry.prev_hash != prev_hash:
            return broken(
                i,
                "prev_hash does not match the hash of the previous entry: an entry "
                "before it was changed, deleted, inserted or moved",
            )
        try:
            recomputed = entry_hash(entry.prev_hash, entry.content())
        except ValueError as exc:
            return broken(i, f"content cannot be serialised: {exc}")
        if recomputed != entry.hash:
            return broken(i, "hash does not match the content: the entry was edited")
        for name, value in (entry.lookup or {}).items():
            hashed = entry.payload.get(name)
            if value != hashed:
                return broken(
                    i,
                    f"column {name} holds {value!r} but the hashed entry says {hashed!r}: "
                    "the column was edited",
                )
        if checkpoint is not None and entry.seq == checkpoint[0] and entry.hash != checkpoint[1]:
            return broken(
                i,
                f"entry {entry.seq} does not have the recorded head hash {checkpoint[1][:16]}...: "
                "the log was rewritten at or before this entry",
            )
        prev_hash = entry.hash
    last_seq = start_seq + len(entries) - 1
    if checkpoint is not None and last_seq < checkpoint[0]:
        return broken(
            len(entries),
            f"the log ends at entry {last_seq} but entry {checkpoint[0]} was recorded as its "
            f"head: {checkpoint[0] - last_seq} entr(ies) at the end were deleted",
        )
    if expected_head is not None and prev_hash != expected_head:
        return broken(
            len(entries),
            "the chain does not end at the recorded head: entries at "
            "the end were deleted or replaced",
        )
    return VerifyResult(True)
