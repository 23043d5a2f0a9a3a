"""How the API is put together: every route reachable at its own path, and route modules independent of each other."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from fastapi.routing import APIRoute
from starlette.routing import Match

from api.main import create_app
from api.routes import path_order
from core.settings import Settings

ROUTES = Path(__file__).resolve().parents[2] / "api" / "routes"


def _sample(path: str) -> str:
    """A concrete URL for a route's path: each parameter filled with a value no literal segment has."""
    return re.sub(r"\{[^}]+\}", "x1y2", path)


def test_each_route_is_the_first_match_for_its_own_paths(tmp_path):
    app = create_app(Settings(var_dir=tmp_path / "var", reconcile_in_api=False))
    api_routes = [r for r in app.router.routes if isinstance(r, APIRoute)]
    assert len(api_routes) > 40
    for route in api_routes:
        for method in route.methods - {"HEAD"}:
            scope = {"type": "http", "method": method, "path": _sample(route.path), "root_path": ""}
            first = next(r for r in app.router.routes if r.matches(scope)[0] == Match.FULL)
            assert first is route, f"{method} {route.path} is answered by {first.path}"


def test_a_literal_segment_is_tried_before_a_parameter_at_the_same_place():
    def endpoint() -> None: ...

    routes = [APIRoute(path, endpoint, methods=["GET"]) for path in
              ("/api/v1/jobs/{job_id}", "/api/v1/jobs/{job_id}/epochs", "/api/v1/jobs/estimate", "/api/v1/jobs")]
    assert [r.path for r in sorted(routes, key=path_order)] == [
        "/api/v1/jobs", "/api/v1/jobs/estimate", "/api/v1/jobs/{job_id}", "/api/v1/jobs/{job_id}/epochs"]


def test_no_route_module_imports_another():
    for module in ROUTES.glob("*.py"):
        tree = ast.parse(module.read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        others = {name for name in imported if name.startswith("api.routes.")}
        assert not others, f"{module.name} imports {sorted(others)}: shared work belongs in api/services"
