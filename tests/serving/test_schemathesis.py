"""schemathesis over the whole OpenAPI of the running service (uvicorn on loopback,
SQLite, the trained world): no request it generates gets a server error (5xx) or a
response that breaks the response schema documented for its status, for every
operation, called as an admin (who may call every endpoint). Bounded: a few
examples per operation, derandomised so a run is repeatable."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from serving.auth import Role
from tests.serving.conftest import (
    add_users,
    build_app,
    password_for,
    username_for,
    uvicorn_server,
)

MAX_EXAMPLES = 12
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def served(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(base URL, admin API key) of a real server on a copy of the trained world."""
    data = tmp_path_factory.mktemp("schemathesis") / "data"
    shutil.copytree(world, data)
    app = build_app(f"sqlite:///{data / 'caravan.db'}", data, ip_lockout_threshold=10_000)
    with uvicorn_server(app) as base:
        add_users(app)
        login = httpx.post(
            f"{base}/api/v1/auth/login",
            data={"username": username_for(Role.admin), "password": password_for(Role.admin)},
        )
        assert login.status_code == 200, login.text
        token = str(login.json()["access_token"])
        key = httpx.post(
            f"{base}/api/v1/users/api-keys",
            json={"name": "schemathesis", "role": "admin"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert key.status_code == 201, key.text
        yield base, str(key.json()["key"])


@pytest.fixture(scope="module")
def api_schema(served: tuple[str, str]) -> Any:
    base, _token = served
    return schemathesis.openapi.from_url(f"{base}/openapi.json")


def test_no_server_error_and_responses_match_the_schema(
    served: tuple[str, str], api_schema: Any
) -> None:
    """Every operation, with valid inputs (positive) and invalid ones (negative)."""
    base, key = served
    # the API key replaces whatever the generator puts in the X-API-Key header
    headers = {"X-API-Key": key}
    failures: list[str] = []
    statuses: dict[str, set[int]] = {}
    operations = 0
    found = [result.ok() for result in api_schema.get_all_operations()]
    # deletions last: DELETE /users/api-keys/{id} may revoke the key this run uses
    for operation in sorted(found, key=lambda op: op.method.upper() == "DELETE"):
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _exercise(operation, mode, base, headers, statuses)
            except Unsatisfiable:  # nothing invalid to send (an operation without inputs)
                assert mode is GenerationMode.NEGATIVE, operation.label
            except (Exception, BaseExceptionGroup) as exc:  # collect all failures, then report
                failures.append(f"{operation.label} [{mode.value}]: {exc}")
    assert operations >= 30
    assert not failures, "\n\n".join(failures)
    # the run reached the handlers: authenticated throughout (until the deletions, which
    # may revoke the run's own key), and many operations answered with success
    refused = [
        op
        for op, codes in statuses.items()
        if 401 in codes and "login" not in op and "DELETE" not in op
    ]
    assert refused == [], statuses
    succeeded = [op for op, codes in statuses.items() if any(c < 300 for c in codes)]
    assert len(succeeded) >= 18, statuses


def _exercise(
    operation: Any,
    mode: GenerationMode,
    base: str,
    headers: dict[str, str],
    statuses: dict[str, set[int]],
) -> None:
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        response = case.call(base_url=base, headers=headers)
        statuses.setdefault(operation.label, set()).add(response.status_code)
        case.validate_response(response, checks=CHECKS, headers=headers)

    run()
