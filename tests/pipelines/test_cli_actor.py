"""Account administration from the command line names a person (operations round 2,
F7): without `--by` and with USER unset (containers, systemd units, cron) the
commands refuse, as `caravan promote` does, before asking for any password; the
scheduled traveller purge of the configured retention is audited as the system actor
"retention", another period needs a person. The real CLI, as a subprocess, with USER
removed from its environment (each case of the matrix in-process, with Typer's runner
and USER unset, to keep the test fast)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import text
from typer.testing import CliRunner

from pipelines.cli import app
from serving.db import make_engine
from tests.conftest import ROOT

REQUIRED = "--by is required: account administration names the person who does it"
NO_USER = "(USER is not set)"


def run(
    *args: str, data: Path, env: dict[str, str] | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """`caravan ARGS --data DATA` with USER (and any retention setting) unset."""
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("USER", "CARAVAN_TRAVELLER_RETENTION_DAYS", "CARAVAN_DATABASE_URL")
    }
    return subprocess.run(
        [sys.executable, "-m", "pipelines", *args, "--data", str(data)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**base, "COLUMNS": "300", **(env or {})},
        input=stdin,
        timeout=300,
        check=False,
    )


def invoke(
    *args: str, data: Path, env: dict[str, str] | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """The same command in-process (Typer's runner), USER unset."""
    unset: dict[str, str | None] = dict.fromkeys(
        ("USER", "CARAVAN_TRAVELLER_RETENTION_DAYS", "CARAVAN_DATABASE_URL")
    )
    result = CliRunner().invoke(
        app,
        [*args, "--data", str(data)],
        input=stdin,
        env={**unset, "COLUMNS": "300", **(env or {})},
    )
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def audit_rows(data: Path) -> list[tuple[str, str, str | None]]:
    engine = make_engine(f"sqlite:///{data / 'caravan.db'}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT kind, actor, entity_id FROM audit_log ORDER BY seq"))
            return [(str(k), str(a), e) for k, a, e in rows]
    finally:
        engine.dispose()


def refused(result: subprocess.CompletedProcess[str]) -> bool:
    message = " ".join(result.stderr.split())
    return result.returncode == 2 and REQUIRED in message and NO_USER in message


def test_account_administration_without_user_names_a_person(tmp_path: Path) -> None:
    data = tmp_path / "data"
    password = "Admin-boot-pass-2026\n"
    # Without --by: refused before the password is asked for, and nothing is created.
    first = run("users", "create", "root1", "--role", "admin", data=data, stdin=password * 2)
    assert refused(first), first.stderr
    assert "Password" not in first.stdout + first.stderr
    assert not data.exists()
    done = run(
        "users", "create", "root1", "--role", "admin", "--by", "a.karimova",
        data=data, stdin=password * 2,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    invoke(
        "users", "create", "off1", "--role", "officer", "--office", "KZ-ALA",
        "--password", "Officer-pass-2026", "--by", "a.karimova", data=data,
    )  # fmt: skip
    before = audit_rows(data)
    assert [(k, a) for k, a, _ in before] == [("user_create", "a.karimova")] * 2

    for command in (
        ("users", "disable", "off1"),
        ("users", "enable", "off1"),
        ("users", "unlock", "off1"),
        ("users", "update", "off1", "--display-name", "Officer One"),
        ("users", "reset-password", "off1"),
        ("users", "create", "off2", "--role", "officer", "--office", "KZ-ALA"),
    ):
        result = invoke(*command, data=data, stdin="New-officer-pass-2026\n" * 2)
        assert refused(result), (command, result.stdout, result.stderr)
        assert "Password" not in result.stdout + result.stderr, command
        blank = invoke(*command, "--by", " \u200b ", data=data, stdin="New-officer-pass-2026\n" * 2)
        assert refused(blank), (command, blank.stderr)
    unlock = run("users", "unlock", "off1", data=data)  # (and the real command)
    assert refused(unlock), unlock.stderr
    assert audit_rows(data) == before  # nothing was changed, nothing recorded

    # Named with --by, or by USER, the change is made and audited with that name.
    assert invoke("users", "disable", "off1", "--by", "b.saidov", data=data).returncode == 0
    enabled = run("users", "enable", "off1", data=data, env={"USER": "c.nurova"})
    assert enabled.returncode == 0, enabled.stderr
    after = audit_rows(data)[len(before) :]
    assert [(k, a) for k, a, _ in after] == [
        ("user_change", "b.saidov"),
        ("user_change", "c.nurova"),
    ]


def test_the_scheduled_purge_is_the_retention_actor_another_period_a_person(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    scheduled = run("travellers", "purge", data=data)  # the configured 365 days
    assert scheduled.returncode == 0, scheduled.stderr
    configured = invoke(
        "travellers", "purge", "--days", "300", data=data,
        env={"CARAVAN_TRAVELLER_RETENTION_DAYS": "300"},
    )  # fmt: skip
    assert configured.returncode == 0, configured.stderr
    other = run("travellers", "purge", "--days", "300", data=data)
    message = " ".join(other.stderr.split())
    assert other.returncode == 2 and "--by is required" in message and NO_USER in message
    named = invoke("travellers", "purge", "--days", "300", "--by", "dpo.officer", data=data)
    assert named.returncode == 0, named.stderr
    purges = [(k, a) for k, a, _ in audit_rows(data) if k == "traveller_purge"]
    assert purges == [
        ("traveller_purge", "retention"),
        ("traveller_purge", "retention"),
        ("traveller_purge", "dpo.officer"),
    ]
