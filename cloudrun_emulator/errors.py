"""API errors in Google's JSON shape (``google.rpc.Status`` over HTTP, AIP-193)."""

from __future__ import annotations

from typing import Any

# HTTP status for each canonical code, as Google's HTTP/JSON gateways map them (google/rpc/code.proto).
_HTTP_FOR_STATUS = {
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "UNAUTHENTICATED": 401,
}
# google.rpc.Code numbers, for the ``error`` of a finished long-running operation.
RPC_CODE = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "UNAUTHENTICATED": 16,
}
STATUS_FOR_HTTP = {429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}


class ApiError(Exception):
    """An error answer: canonical status, message, and optional ``BadRequest`` field violations."""

    def __init__(self, status: str, message: str, *, field_violations: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field_violations = field_violations or {}

    @property
    def http_code(self) -> int:
        return _HTTP_FOR_STATUS.get(self.status, 500)

    def body(self) -> dict[str, Any]:
        """The JSON error body Google APIs send."""
        error: dict[str, Any] = {"code": self.http_code, "message": self.message, "status": self.status}
        if self.field_violations:
            error["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.BadRequest",
                    "fieldViolations": [
                        {"field": field, "description": description}
                        for field, description in self.field_violations.items()
                    ],
                }
            ]
        return {"error": error}


def invalid(field: str, description: str, message: str | None = None) -> ApiError:
    """A 400 INVALID_ARGUMENT naming the offending request field."""
    return ApiError("INVALID_ARGUMENT", message or description, field_violations={field: description})


def not_found(kind: str, name: str) -> ApiError:
    """A 404 for a resource that does not exist."""
    return ApiError("NOT_FOUND", f"Resource '{name}' of kind '{kind}' does not exist.")
