"""Acceptance round 2, security F6: /docs and /redoc run in a real browser from the
server's own assets, under their Content-Security-Policy, without contacting any
other host."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.serving.conftest import build_app, uvicorn_server


def test_swagger_ui_and_redoc_render_from_local_assets_under_their_csp(
    browser: Any, tmp_path: Path
) -> None:
    app = build_app(f"sqlite:///{tmp_path / 'caravan.db'}", tmp_path / "data")
    with uvicorn_server(app) as base:
        context = browser.new_context(base_url=base)
        try:
            page = context.new_page()
            requested: list[str] = []
            problems: list[str] = []
            page.on("requestfinished", lambda r: requested.append(r.url))
            page.on(
                "console",
                lambda m: problems.append(m.text) if m.type in ("error", "warning") else None,
            )
            page.on("pageerror", lambda e: problems.append(str(e)))

            page.goto("/docs")
            page.wait_for_selector(".opblock", timeout=30_000)  # the operations, rendered
            assert page.locator(".opblock").count() > 20
            page.goto("/redoc")
            page.wait_for_selector("[data-section-id]", timeout=30_000)
            assert page.locator("[data-section-id]").count() > 20

            # Everything loaded came from the server (ReDoc's search runs in a blob: worker)
            hosts = {urlsplit(u).netloc for u in requested if u.startswith("http")}
            assert hosts == {urlsplit(base).netloc}, hosts
            assert all(u.startswith(("http", f"blob:{base}")) for u in requested), requested
            # nothing was refused by the policy: not even ReDoc's "API docs by Redocly"
            # logo, which the bundle as shipped fetches from Redocly's CDN
            blocked = [p for p in problems if "Content Security Policy" in p]
            assert not blocked, blocked
        finally:
            context.close()
