"""HTTP statuses of pas's typed errors, and the hub's own (auth, limits).

Every error leaves the server as ``{"error": {"status", "code", "message"}}``."""
from __future__ import annotations

from ..errors import (BadInput, IntegrityError, NotARepository, NotFound, PasError, RepositoryLocked,
                      StoreError, UnsupportedFormat)


class HubError(PasError):
    status = 400
    code = "bad_request"


class Unauthorized(HubError):
    """No token, or one the hub does not know."""
    status, code = 401, "unauthorized"


class Forbidden(HubError):
    """A known user without the permission."""
    status, code = 403, "forbidden"


class TooLarge(HubError):
    status, code = 413, "too_large"


class RateLimited(HubError):
    status, code = 429, "rate_limited"

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.retry_after = retry_after


# Most specific first: BadName is a BadInput, and so on.
_STATUS = [
    (NotARepository, 404, "not_a_repository"),
    (NotFound, 404, "not_found"),
    (BadInput, 400, "bad_input"),
    (RepositoryLocked, 423, "locked"),
    (IntegrityError, 500, "integrity_error"),
    (UnsupportedFormat, 500, "unsupported_format"),
    (StoreError, 503, "store_error"),
]


def status_of(exc: PasError) -> tuple[int, str]:
    if isinstance(exc, HubError):
        return exc.status, exc.code
    for cls, status, code in _STATUS:
        if isinstance(exc, cls):
            return status, code
    return 500, "error"


def body(status: int, code: str, message: str) -> dict:
    # Messages can quote hostile input (a name, a query): bounded.
    if len(message) > 2000:
        message = message[:2000] + f"... ({len(message) - 2000} more characters)"
    return {"error": {"status": status, "code": code, "message": message}}
