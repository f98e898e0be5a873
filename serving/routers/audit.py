"""The audit log: read it (auditors) and verify its hash chain."""

from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import select

from serving.deps import AuditorUser, SessionDep
from serving.orm import AuditLog
from serving.routers import PROTECTED
from serving.schemas import AuditEntryOut, AuditVerifyOut
from serving.services import verify_audit

PLAIN = r"^[^\x00-\x1f\x7f]*$"  # no control characters (PostgreSQL refuses NUL)
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


@router.get("/verify", response_model=AuditVerifyOut, summary="Check the hash chain")
def get_verify(session: SessionDep, _user: AuditorUser) -> dict[str, Any]:
    n, result, seq = verify_audit(session)
    return {
        "ok": result.ok,
        "entries": n,
        "first_broken_seq": seq,
        "first_broken_entry_id": result.first_broken_id,
        "reason": result.reason,
    }
