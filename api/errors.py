"""The API's one error shape. Services raise a Problem: what went wrong in words for users, a code for programs, and
the fields it is about. It is mapped to HTTP here, once, as are FastAPI's own HTTP and validation errors and a
database that is down, so that every 4xx and every 503 has the same body (documented in OpenAPI as ErrorBody):

    {"detail": {"message": "…", "code": "…", "errors": [{"field": "…", "message": "…"}]}}
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import DataError, DBAPIError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.schemas import readable_error
from trainer.job.config import FieldProblem

log = logging.getLogger(__name__)


class FieldError(BaseModel):
    field: str
    message: str


class ErrorDetail(BaseModel):
    message: str
    code: str
    errors: list[FieldError] = Field(default_factory=list)


class ErrorBody(BaseModel):
    detail: ErrorDetail


class Problem(Exception):
    """A request that cannot be done as asked; each kind below says which HTTP status it is."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"

    def __init_subclass__(cls, *, status: int, code: str) -> None:
        super().__init_subclass__()
        cls.status, cls.code = status, code

    def __init__(self, message: str, errors: Iterable[FieldProblem | Mapping[str, str]] = (),
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = [FieldError(field=e.field, message=e.message) if isinstance(e, FieldProblem)
                       else FieldError(field=e["field"], message=e["message"]) for e in errors]
        self.headers = headers


# one line per kind: its HTTP status and its code
class Unauthorized(Problem, status=401, code="unauthorized"): ...
class PaymentRequired(Problem, status=402, code="not_enough_credits"): ...
class Forbidden(Problem, status=403, code="forbidden"): ...
class NotFound(Problem, status=404, code="not_found"): ...
class Conflict(Problem, status=409, code="conflict"): ...
class Invalid(Problem, status=422, code="invalid"): ...
class TooMany(Problem, status=429, code="too_many_requests"): ...
class Unavailable(Problem, status=503, code="unavailable"): ...


def not_enough_credits(exc: Exception) -> PaymentRequired:
    """402 naming the price and the balance (`exc`: core.credits.NotEnoughCredits)."""
    return PaymentRequired(f"not enough credits: {exc}", [{"field": "price", "message": f"{exc.price} credits"},
                                                          {"field": "balance", "message": f"{exc.balance} credits"}])


def answer(status: int, message: str, code: str, errors: Iterable[FieldError] = (),
           headers: Mapping[str, str] | None = None) -> JSONResponse:
    body = ErrorBody(detail=ErrorDetail(message=message, code=code, errors=list(errors)))
    return JSONResponse(body.model_dump(), status_code=status, headers=dict(headers or {}))


# every route module's router declares these, so OpenAPI shows the shape on every operation
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {"4XX": {"model": ErrorBody, "description": "Refused, with why"},
                                                    "5XX": {"model": ErrorBody, "description": "Not available now"}}


def install(app: FastAPI) -> None:
    """Maps every error to the one shape."""

    @app.exception_handler(Problem)
    async def _problem(_: Request, exc: Problem) -> JSONResponse:
        return answer(exc.status, exc.message, exc.code, exc.errors, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:  # FastAPI's own: 404 path, 405 …
        code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_")
        return answer(exc.status_code, str(exc.detail), code, (), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [FieldError(field=".".join(str(p) for p in e["loc"] if p != "body"), message=readable_error(e))
                  for e in exc.errors()]
        return answer(Invalid.status, "the request has problems", Invalid.code, errors)

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    async def _database_down(_: Request, exc: DBAPIError) -> JSONResponse:
        log.warning("database unavailable: %s", exc)
        return answer(Unavailable.status, "the database is not reachable right now; try again in a moment",
                      Unavailable.code, headers={"Retry-After": "10"})

    @app.exception_handler(DataError)
    @app.exception_handler(OverflowError)
    async def _unstorable(_: Request, exc: Exception) -> JSONResponse:
        log.info("refused a value the database cannot store: %s", exc)
        return answer(Invalid.status, "the request has a value that cannot be stored: a NUL character, or a number "
                      "too large", Invalid.code)

