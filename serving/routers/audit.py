"""The audit log: read it (auditors) and verify its hash chain."""

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import Field
from sqlalchemy import select

from serving.deps import AuditorUser, SessionDep
from serving.orm import AuditLog
from serving.routers import PROTECTED
from serving.schemas import AuditEntryOut
from serving.schemas import AuditVerifyOut as _VerifyOut
from serving.services import audit_report

PLAIN = r"^[^\x00-\x1f\x7f]*$"  # no control characters (PostgreSQL refuses NUL)
HEAD = r"^[1-9][0-9]{0,17}:[0-9a-f]{64}$"  # (seq 0 is never written)


class AuditVerifyOut(_VerifyOut):
    head_seq: int | None = Field(description="The last entry verified: keep it with head_hash")
    head_hash: str | None = Field(
        description="Pass `SEQ:HASH` as `expect` later to detect removed or rewritten entries"
    )
    expected: str | None = Field(description="The recorded head checked (`expect`), if any")


router = APIRouter(prefix="/api/v1/audit", tags=["audit"], responses=PROTECTED)


@router.get("", response_model=list[AuditEntryOut], summary="Audit entries, oldest first")
def list_audit(
    session: SessionDep,
    _user: AuditorUser,
    shipment_id: Annotated[str | None, Query(max_length=128, pattern=PLAIN)] = None,
    user: Annotated[str | None, Query(max_length=64, pattern=PLAIN, description="Actor")] = None,
    kind: Annotated[str | None, Query(max_length=64, pattern=PLAIN)] = None,
    after_seq: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditLog]:
    query = select(AuditLog).where(AuditLog.seq > after_seq)
    if shipment_id is not None:
        query = query.where(AuditLog.entity == "shipment", AuditLog.entity_id == shipment_id)
    if user is not None:
        query = query.where(AuditLog.actor == user)
    if kind is not None:
        query = query.where(AuditLog.kind == kind)
    return list(session.scalars(query.order_by(AuditLog.seq).limit(limit)))


@router.get(
    "/verify",
    response_model=AuditVerifyOut,
    summary="Check the hash chain, the lookup columns, a recorded head, and that the "
    "recorded rows (scores, outcomes, referrals, views, rules, promotions) have entries",
)
def get_verify(
    session: SessionDep,
    _user: AuditorUser,
    expect: Annotated[
        str | None,
        Query(
            pattern=HEAD,
            description="A head recorded earlier, `SEQ:HASH`: that entry must still be there "
            "with that hash (catches entries deleted at the end, or a rewritten log)",
        ),
    ] = None,
) -> dict[str, Any]:
    checkpoint = None
    if expect is not None:
        seq_text, digest = expect.split(":")
        checkpoint = (int(seq_text), digest)
    report = audit_report(session, checkpoint)
    result = report.result
    return {
        "ok": result.ok,
        "entries": report.entries,
        "first_broken_seq": report.broken_seq,
        "first_broken_entry_id": result.first_broken_id,
        "reason": result.reason,
        "head_seq": report.head[0] if report.head else None,
        "head_hash": report.head[1] if report.head else None,
        "expected": expect,
    }
