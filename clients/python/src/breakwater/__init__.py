"""Breakwater's Python client: calls through the host's `breakwaterd` sidecar over its Unix socket.

    import breakwater
    client = breakwater.Client()                     # $BREAKWATER_SOCKET, else /run/breakwater/breakwater.sock
    answer = client.send("default", {"messages": [{"role": "user", "content": "Hello"}]})
    print(answer.provider, answer.response["choices"][0]["message"]["content"])
    with client.stream("default", {"messages": [...]}) as stream:
        for chunk in stream: ...

Standard library only. See protocol/PROTOCOL.md for the wire protocol this speaks.
"""
from ._client import AsyncClient, AsyncStream, Client, Completion, Stream, Usage
from ._errors import (ApprovalDenied, ApprovalExpired, BadRequest, BreakwaterError, BudgetExceeded, Cancelled,
                      DaemonRestarted, DaemonUnavailable, Forbidden, ProtocolViolation, RateLimited, StepUpRequired,
                      StreamInterrupted, Timeout, ToolCallBlocked, UnknownRoute, UpstreamError)
from ._wire import ActionDecision, Attempt, CallNotice, ErrorCode, Limits

__all__ = [
    "AsyncClient", "AsyncStream", "Client", "Completion", "Stream", "Usage", "ActionDecision", "Attempt", "CallNotice",
    "ErrorCode",
    "Limits",
    "BreakwaterError", "BadRequest", "UnknownRoute", "Forbidden", "StepUpRequired", "ToolCallBlocked", "RateLimited",
    "BudgetExceeded", "ApprovalDenied", "ApprovalExpired", "UpstreamError", "Timeout", "StreamInterrupted",
    "Cancelled", "DaemonUnavailable", "DaemonRestarted", "ProtocolViolation",
]
