"""Exceptions: one base class with the protocol's code and the details the daemon sent, a subclass per family."""
from __future__ import annotations

from typing import Dict, List, Optional, Type

from ._wire import Attempt, ErrorCode, code_name


class BreakwaterError(Exception):
    """A call or connection failed. `code` is the protocol's error code (an `ErrorCode` value, or None for a
    failure on this side such as the daemon being unreachable); `upstream_status` the provider's HTTP status for
    upstream errors; `retry_after` seconds the daemon suggests waiting; `attempts` each target the call tried or
    skipped, in order (`breakwater.Attempt`: provider, model, outcome, failure, upstream status, the wait chosen,
    what came next), empty when the daemon sent none; `provider` the provider that failed."""

    def __init__(self, message: str, *, code: Optional[int] = None, upstream_status: Optional[int] = None,
                 retry_after: Optional[float] = None, attempts: Optional[List[Attempt]] = None,
                 provider: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.upstream_status = upstream_status
        self.retry_after = retry_after
        self.attempts: List[Attempt] = attempts or []
        self.provider = provider

    @property
    def code_name(self) -> Optional[str]:
        return None if self.code is None else code_name(self.code)

    def __str__(self) -> str:
        return self.message if self.code is None else "%s: %s" % (code_name(self.code), self.message)


class BadRequest(BreakwaterError):
    """The request was not usable (BAD_REQUEST, BODY_TOO_LARGE)."""


class UnknownRoute(BreakwaterError):
    """No route by that name (UNKNOWN_ROUTE)."""


class Forbidden(BreakwaterError):
    """Policy refused the call (FORBIDDEN) or the credential (UNAUTHENTICATED)."""


class ToolCallBlocked(Forbidden):
    """The model's answer called a tool outside the agent's scopes (TOOL_CALL_BLOCKED); the tool is named."""


class StepUpRequired(Forbidden):
    """The action needs a valid step-up token (STEP_UP_REQUIRED)."""


class RateLimited(BreakwaterError):
    """A rate limit or the agent's concurrency limit (RATE_LIMITED, CONCURRENCY_LIMIT, TOO_MANY_CALLS);
    `retry_after` says when to try again, when the daemon knows."""


class BudgetExceeded(BreakwaterError):
    """The agent's or tenant's budget for the window is spent (BUDGET_EXCEEDED)."""


class ApprovalDenied(BreakwaterError):
    """An approver denied the call (APPROVAL_DENIED)."""


class ApprovalExpired(BreakwaterError):
    """Nobody approved the call in time (APPROVAL_EXPIRED)."""


class UpstreamError(BreakwaterError):
    """The provider failed: an error status (UPSTREAM_ERROR, `upstream_status` says which), unreachable
    (UPSTREAM_UNAVAILABLE), an answer not understood (UPSTREAM_MALFORMED), no key (NO_CREDENTIAL), the daemon's
    own configuration (CONFIGURATION_ERROR)."""


class Timeout(BreakwaterError):
    """The call's deadline or a provider timeout passed (TIMEOUT)."""


class StreamInterrupted(BreakwaterError):
    """A streamed answer ended early after chunks reached the app (STREAM_INTERRUPTED, EVENT_TOO_LARGE)."""


class Cancelled(BreakwaterError):
    """The call was cancelled (CANCELLED, or by this side)."""


class DaemonUnavailable(BreakwaterError):
    """The daemon could not be reached, went away, or is draining and did not take the call."""


class DaemonRestarted(DaemonUnavailable):
    """The daemon stopped while the call was in flight upstream: it may have reached the provider, so it was not
    sent again."""


class ProtocolViolation(BreakwaterError):
    """The daemon sent something the protocol does not allow (or a connection-level error)."""


_FAMILIES: Dict[int, Type[BreakwaterError]] = {
    ErrorCode.BAD_REQUEST: BadRequest, ErrorCode.BODY_TOO_LARGE: BadRequest,
    ErrorCode.UNKNOWN_ROUTE: UnknownRoute,
    ErrorCode.FORBIDDEN: Forbidden, ErrorCode.UNAUTHENTICATED: Forbidden,
    ErrorCode.STEP_UP_REQUIRED: StepUpRequired, ErrorCode.TOOL_CALL_BLOCKED: ToolCallBlocked,
    ErrorCode.RATE_LIMITED: RateLimited, ErrorCode.CONCURRENCY_LIMIT: RateLimited,
    ErrorCode.TOO_MANY_CALLS: RateLimited,
    ErrorCode.BUDGET_EXCEEDED: BudgetExceeded,
    ErrorCode.APPROVAL_DENIED: ApprovalDenied, ErrorCode.APPROVAL_EXPIRED: ApprovalExpired,
    ErrorCode.UPSTREAM_ERROR: UpstreamError, ErrorCode.UPSTREAM_UNAVAILABLE: UpstreamError,
    ErrorCode.UPSTREAM_MALFORMED: UpstreamError, ErrorCode.NO_CREDENTIAL: UpstreamError,
    ErrorCode.CONFIGURATION_ERROR: UpstreamError,
    ErrorCode.TIMEOUT: Timeout,
    ErrorCode.STREAM_INTERRUPTED: StreamInterrupted, ErrorCode.EVENT_TOO_LARGE: StreamInterrupted,
    ErrorCode.CANCELLED: Cancelled,
    ErrorCode.NOT_ACCEPTED: DaemonUnavailable, ErrorCode.SHUTTING_DOWN: DaemonUnavailable,
    ErrorCode.TOO_MANY_CONNECTIONS: DaemonUnavailable, ErrorCode.STALLED: DaemonUnavailable,
}


def error_for(code: int, message: str, *, upstream_status: Optional[int] = None,
              retry_after_ms: Optional[int] = None, attempts: Optional[List[Attempt]] = None,
              provider: Optional[str] = None) -> BreakwaterError:
    """The exception for a code the daemon sent: its family's class, or ProtocolViolation for connection codes
    without a family, or the base class for a code this client does not know."""
    cls = _FAMILIES.get(code)
    if cls is None:
        cls = ProtocolViolation if code < 0x0100 else BreakwaterError
    return cls(message, code=code, upstream_status=upstream_status,
               retry_after=None if retry_after_ms is None else retry_after_ms / 1000, attempts=attempts,
               provider=provider)
