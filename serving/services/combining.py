"""Combining concurrent requests into one piece of work (a "group commit").

`Combiner` lets requests that arrive together be processed as one group by one of
them, which hands each its own result. It knows nothing of shipments: the caller
says how to process a group and how to process a request alone
(`serving.services.shipments.ingest_shipments` uses it for single-shipment
ingests: `Services.shipment_combiner`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_GROUP_LIMIT = 256


@dataclass(eq=False)
class _Waiting(Generic[T, R]):
    """A request in the combiner: its item, and what it is told once a leader took it
    (`result`, or None: process it alone), or that it leads the next group (`lead`)."""

    item: T
    result: R | None = None
    lead: bool = False
    done: threading.Event = field(default_factory=threading.Event)


class Combiner(Generic[T, R]):
    """Requests that arrive while another group is processed wait, and are then
    processed together as the next group, by one of them: the leader.

    A request joins the queue (`submit`). When no group is being processed, it
    becomes the leader at once; else it waits. A leader takes every request
    queued (at most `limit`, in arrival order; the others stay for the next
    group) and processes them: a group of one with `alone` (the request's own
    path, unchanged: nothing combined, nothing slower), a larger group with
    `group`, called with the leader's own `group` (its session, say), which
    returns one result per item, or None for an item it did not process (the
    request then processes itself alone, in its own thread, with what it has:
    its own session). Should `group` raise, every request of the group is told
    None. Each request is woken with its own result. When its group is done, the
    leader hands the lead to the first request queued meanwhile (which then
    takes the queue as its group), or, when none is, leaves the combiner idle;
    so while one group is processed the next one forms. A group's result
    reaches the request waiting for it only through that request's `_Waiting`
    (its own slot; the `Event` orders the write before the read).

    `groups` counts the groups of two or more processed with `group`,
    `combined` the requests answered from such a group's result and `largest`
    the largest of those groups (for tests and measurements)."""

    def __init__(self, limit: int = DEFAULT_GROUP_LIMIT) -> None:
        if limit < 2:
            raise ValueError(f"a group holds two or more requests (limit {limit})")
        self.limit = limit
        self._lock = threading.Lock()
        self._queue: list[_Waiting[T, R]] = []
        self._leading = False  # a leader processes a group (or is about to take one)
        self._leader: int | None = None  # the leader's thread, while it processes
        self.groups = 0
        self.combined = 0
        self.largest = 0

    def submit(
        self,
        item: T,
        group: Callable[[Sequence[T]], Sequence[R | None]],
        alone: Callable[[], R],
    ) -> R | None:
        """The result of `item`: from its group (`group`, run by the group's
        leader), from `alone` (it was alone in its group: run here, as the
        leader), or None: the group did not process it (it declined the item,
        or failed), so the caller processes it alone now. Exceptions of `alone`
        reach the caller; those of `group` do not (but for those that are no
        `Exception`, which the leader re-raises once the others are told). A
        request made by a thread while it leads (from within `alone` or `group`)
        is processed alone at once: it would otherwise wait for its own thread."""
        if self._leader == threading.get_ident():
            # (a request made while this thread leads: it would wait for itself)
            return alone()
        me: _Waiting[T, R] = _Waiting(item)
        with self._lock:
            self._queue.append(me)
            leads = not self._leading
            if leads:
                self._leading = True
        if not leads:
            me.done.wait()
            if not me.lead:
                return me.result
        return self._lead(me, group, alone)

    def _lead(
        self,
        me: _Waiting[T, R],
        group: Callable[[Sequence[T]], Sequence[R | None]],
        alone: Callable[[], R],
    ) -> R | None:
        """Take the queue as one group, process it, tell each request its result,
        and hand the lead on (in every case: also when `alone` or `group` raises)."""
        with self._lock:
            taken, self._queue = self._queue[: self.limit], self._queue[self.limit :]
            self._leader = threading.get_ident()
        try:
            if len(taken) == 1:  # (`me`: the request's own path, as without a combiner)
                return alone()
            return self._process(me, taken, group)
        finally:
            self._hand_on()

    def _process(
        self,
        me: _Waiting[T, R],
        taken: list[_Waiting[T, R]],
        group: Callable[[Sequence[T]], Sequence[R | None]],
    ) -> R | None:
        results: Sequence[R | None] = [None] * len(taken)
        try:
            got = group([w.item for w in taken])
            if len(got) != len(taken):
                raise ValueError(f"{len(got)} results for a group of {len(taken)}")
            results = got
        except Exception:
            log.warning(
                "a combined group of %d failed: each request is processed alone",
                len(taken),
                exc_info=True,
            )
        finally:  # (also for a BaseException: no request is left waiting)
            answered = sum(r is not None for r in results)
            with self._lock:
                self.groups += 1
                self.combined += answered
                self.largest = max(self.largest, len(taken))
            for w, r in zip(taken, results, strict=True):
                if w is not me:
                    w.result = r
                    w.done.set()
        return results[taken.index(me)]

    def _hand_on(self) -> None:
        """Give the lead to the first request queued, or leave the combiner idle."""
        with self._lock:
            self._leader = None
            if not self._queue:
                self._leading = False
                return
            first = self._queue[0]
            first.lead = True
        first.done.set()
