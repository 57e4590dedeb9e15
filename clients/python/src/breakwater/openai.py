"""An OpenAI SDK drop-in: httpx transports that send `chat.completions.create` through the sidecar.

    import httpx, openai, breakwater.openai
    client = openai.OpenAI(api_key="unused", base_url="http://breakwater/v1", max_retries=0,
                           http_client=httpx.Client(transport=breakwater.openai.Transport()))

(`AsyncOpenAI` with `httpx.AsyncClient(transport=breakwater.openai.AsyncTransport())` likewise.) Turn the SDK's own
retries off (`max_retries=0`): the daemon retries, falls back and paces, and a second layer of retries on top only
multiplies the load on a failing provider.

The route is the request header `X-Breakwater-Route` when set, else the request's `model` (a route of that name).
`X-Breakwater-Action`, `X-Breakwater-Tenant`, `X-Breakwater-Step-Up-Token`, `X-Breakwater-Request-Id` and
`X-Breakwater-Timeout-Ms` set the call's action, tenant, step-up token, request id and deadline (the SDK's
`extra_headers=` passes them). The answer carries `X-Breakwater-Provider`, `X-Breakwater-Model`,
`X-Breakwater-Attempts` and `X-Breakwater-Request-Id`. The API key given to the SDK is not used: the daemon holds
the providers' keys (the agent token, if the daemon's policy needs one, is `credential=`).

Daemon errors come back as the HTTP status and OpenAI error body that make the SDK raise its usual exceptions:
unknown route 404 (`NotFoundError`), bad request 400, policy refusals 403 (`PermissionDeniedError`), rate limits and
budgets 429 with `retry-after` (`RateLimitError`), provider errors with the provider's status (or 502), the call's
deadline as a timeout (`APITimeoutError`), an unreachable daemon as a connection error (`APIConnectionError`); a
stream cut after it began ends with a protocol error the SDK raises from the iterator.

Needs `httpx` (the `openai` extra: `pip install "./clients/python[openai]"`).
"""
from __future__ import annotations

import json
from typing import Any, AsyncIterator, Dict, Iterator, Optional, Tuple

import httpx

from ._client import AsyncClient, AsyncStream, Client, Completion, Stream
from ._errors import (ApprovalDenied, ApprovalExpired, BadRequest, BreakwaterError, BudgetExceeded, DaemonUnavailable,
                      Forbidden, RateLimited, StreamInterrupted, Timeout, UnknownRoute, UpstreamError)

_PREFIX = "x-breakwater-"


def _call_options(request: httpx.Request) -> Tuple[str, bool, Dict[str, Any], bytes]:
    """The route, whether streamed, the call's options and the body, from an SDK request."""
    body = json.loads(request.read() or b"{}")
    headers = request.headers
    route = headers.get(_PREFIX + "route") or body.get("model") or "default"
    timeout_ms = headers.get(_PREFIX + "timeout-ms")
    options: Dict[str, Any] = {
        "action": headers.get(_PREFIX + "action"),
        "tenant": headers.get(_PREFIX + "tenant"),
        "step_up_token": headers.get(_PREFIX + "step-up-token"),
        "request_id": headers.get(_PREFIX + "request-id"),
        "timeout": int(timeout_ms) / 1000 if timeout_ms else None,
    }
    return route, bool(body.get("stream")), options, request.content


def _answer_headers(a: Any) -> Dict[str, str]:
    return {_PREFIX + "provider": a.provider, _PREFIX + "model": a.model, _PREFIX + "attempts": str(a.attempts),
            _PREFIX + "request-id": a.request_id}


def _error_response(e: BreakwaterError, request: httpx.Request) -> httpx.Response:
    """The HTTP status and OpenAI error body for a daemon error; raises for the ones the SDK knows as transport
    failures (timeouts, an unreachable daemon)."""
    if isinstance(e, Timeout):
        raise httpx.ReadTimeout(str(e), request=request)
    if isinstance(e, DaemonUnavailable):
        raise httpx.ConnectError(str(e), request=request)
    status, kind = 500, "server_error"
    headers: Dict[str, str] = {}
    if isinstance(e, UnknownRoute):
        status, kind = 404, "invalid_request_error"
    elif isinstance(e, BadRequest):
        status, kind = 400, "invalid_request_error"
    elif isinstance(e, (Forbidden, ApprovalDenied)):
        status, kind = 403, "permission_error"
    elif isinstance(e, ApprovalExpired):
        status, kind = 408, "approval_expired"
    elif isinstance(e, (RateLimited, BudgetExceeded)):
        status, kind = 429, "insufficient_quota" if isinstance(e, BudgetExceeded) else "rate_limit_exceeded"
    elif isinstance(e, UpstreamError):
        status, kind = (e.upstream_status if e.upstream_status and e.upstream_status >= 400 else 502), "upstream_error"
    if e.retry_after is not None:
        headers["retry-after"] = str(max(1, round(e.retry_after)))
        headers["retry-after-ms"] = str(int(e.retry_after * 1000))
    body = {"error": {"message": str(e), "type": kind, "code": e.code_name, "param": None}}
    return httpx.Response(status, json=body, headers=headers, request=request)


def _not_found(request: httpx.Request) -> httpx.Response:
    return httpx.Response(404, json={"error": {
        "message": "breakwater's transport serves POST /chat/completions only, not %s %s"
                   % (request.method, request.url.path), "type": "invalid_request_error", "code": None}},
        request=request)


def _sse(chunk: Dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


class _StreamBody(httpx.SyncByteStream):
    def __init__(self, stream: Stream, request: httpx.Request) -> None:
        self._stream = stream
        self._request = request

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self._stream:
                yield _sse(chunk)
        except StreamInterrupted as e:
            raise httpx.RemoteProtocolError(str(e), request=self._request) from e
        yield b"data: [DONE]\n\n"

    def close(self) -> None:
        self._stream.close()


class _AsyncStreamBody(httpx.AsyncByteStream):
    def __init__(self, stream: AsyncStream, request: httpx.Request) -> None:
        self._stream = stream
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield _sse(chunk)
        except StreamInterrupted as e:
            raise httpx.RemoteProtocolError(str(e), request=self._request) from e
        yield b"data: [DONE]\n\n"

    async def aclose(self) -> None:
        await self._stream.aclose()


def _is_chat(request: httpx.Request) -> bool:
    return request.method == "POST" and request.url.path.rstrip("/").endswith("/chat/completions")


class Transport(httpx.BaseTransport):
    """For `httpx.Client(transport=...)` under `openai.OpenAI`. `socket`, `credential` and `client_name` as for
    `breakwater.Client` (one connection shared by every request of this transport)."""

    def __init__(self, socket: Optional[str] = None, *, credential: Optional[str] = None,
                 client_name: Optional[str] = "openai-sdk") -> None:
        self.client = Client(socket, credential=credential, client_name=client_name)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if not _is_chat(request):
            return _not_found(request)
        route, streamed, options, body = _call_options(request)
        try:
            if streamed:
                s = self.client.stream(route, body, **options)
                return httpx.Response(200, headers={"content-type": "text/event-stream", **_answer_headers(s)},
                                      stream=_StreamBody(s, request), request=request)
            a: Completion = self.client.send(route, body, **options)
        except BreakwaterError as e:
            return _error_response(e, request)
        return httpx.Response(200, json=a.response, headers=_answer_headers(a), request=request)

    def close(self) -> None:
        self.client.close()


class AsyncTransport(httpx.AsyncBaseTransport):
    """For `httpx.AsyncClient(transport=...)` under `openai.AsyncOpenAI`; see `Transport`."""

    def __init__(self, socket: Optional[str] = None, *, credential: Optional[str] = None,
                 client_name: Optional[str] = "openai-sdk") -> None:
        self.client = AsyncClient(socket, credential=credential, client_name=client_name)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not _is_chat(request):
            return _not_found(request)
        await request.aread()
        route, streamed, options, body = _call_options(request)
        try:
            if streamed:
                s = await self.client.stream(route, body, **options)
                return httpx.Response(200, headers={"content-type": "text/event-stream", **_answer_headers(s)},
                                      stream=_AsyncStreamBody(s, request), request=request)
            a = await self.client.send(route, body, **options)
        except BreakwaterError as e:
            return _error_response(e, request)
        return httpx.Response(200, json=a.response, headers=_answer_headers(a), request=request)

    async def aclose(self) -> None:
        self.client.close()
