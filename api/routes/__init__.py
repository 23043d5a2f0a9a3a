"""The API's routes, one module per step of the user's flow; every router carries the /api/v1 prefix itself.

The app takes every module's routes in `path_order`, found here by walking this package: a new route module is
served by being here, and no route module imports another (shared work lives in api/services)."""

from __future__ import annotations

import importlib
import pkgutil

from starlette.routing import BaseRoute

API_PREFIX = "/api/v1"


def all_routes() -> list[BaseRoute]:
    """Every route of every module in this package, in `path_order`."""
    routes = []
    for module in pkgutil.iter_modules(__path__):
        routes += importlib.import_module(f"{__name__}.{module.name}").router.routes
    return sorted(routes, key=path_order)


def path_order(route: BaseRoute) -> tuple[tuple[bool, str], ...]:
    """Segment by segment, a literal before a parameter: /jobs/estimate is tried before /jobs/{job_id}, whatever
    module either came from."""
    return tuple((segment.startswith("{"), segment) for segment in getattr(route, "path", "").split("/"))
