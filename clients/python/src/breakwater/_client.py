"""`Client` (threads) and `AsyncClient` (asyncio): the calls an app makes, over one shared connection."""
from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Dict, Iterator, List, Optional, Union

from ._connection import Connection, Event, NotStarted, make_request_id, socket_path
from ._errors import BreakwaterError, DaemonUnavailable, ProtocolViolation, error_for
from ._wire import (ActionDecision, AdminRequest, AuthorizeRequest, CallNotice, CallRequest, CallResponse, CallTrailers,
                    Limits)

NoticeCallback = Callable[[CallNotice], None]

#: Times one call is sent again after the daemon went away (or was draining) before starting it.
RESEND_ATTEMPTS = 3
#: Connection attempts before DaemonUnavailable (covers a daemon restart), with backoff from 0.1 s.
RECONNECT_ATTEMPTS = 5


@dataclass
class Usage:
    prompt_tokens: Optional[int] = None
    completion_tokens: Optional[int] = None
    total_tokens: Optional[int] = None


@dataclass
class Completion:
    """A whole answer: the provider's chat.completion JSON, and who answered, after how many attempts."""
    response: Dict[str, Any]
    provider: str
    model: str
    attempts: int
    request_id: str
    usage: Usage = field(default_factory=Usage)


def _usage(t: CallTrailers) -> Usage:
    return Usage(t.prompt_tokens, t.completion_tokens, t.total_tokens)


def _trailer_error(t: CallTrailers, head: Optional[CallResponse]) -> BreakwaterError:
    assert t.error is not None
    return error_for(t.error, t.message or "", provider=head.provider if head else None)


def _request(route: str, stream: bool, timeout: Optional[float], request_id: Optional[str], action: Optional[str],
             tenant: Optional[str], step_up_token: Optional[str]) -> CallRequest:
    return CallRequest(route=route, stream=stream,
                       timeout_ms=None if timeout is None else max(1, int(timeout * 1000)),
                       request_id=request_id or make_request_id(), action=action, tenant=tenant,
                       step_up_token=step_up_token.encode() if step_up_token is not None else None)


def _body(body: Union[Dict[str, Any], bytes, str]) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body, separators=(",", ":")).encode()


def _authorize_request(action: str, tenant: Optional[str], step_up_token: Optional[str], timeout: Optional[float],
                       request_id: Optional[str]) -> AuthorizeRequest:
    return AuthorizeRequest(action, tenant, request_id or make_request_id(),
                            step_up_token.encode() if step_up_token is not None else None,
                            None if timeout is None else int(timeout * 1000))


class _Answer:
    """A call's events, folded as they arrive into what the app gets — the same for both clients: notices go to the
    callback; a failure raises; a streamed call is ready at its RESPONSE, a whole answer at its TRAILERS."""

    def __init__(self, on_notice: Optional[NoticeCallback], streamed: bool) -> None:
        self.on_notice = on_notice
        self.streamed = streamed
        self.head: Optional[CallResponse] = None
        self.trailers: Optional[CallTrailers] = None
        self.chunks: List[bytes] = []

    def take(self, event: Event) -> bool:
        """True once the answer is ready (`head`; for a whole answer also `body` and `trailers`)."""
        kind, value = event
        if kind == "notice":
            if self.on_notice is not None:
                self.on_notice(value)  # type: ignore[arg-type]
            return False
        if kind == "failed":
            raise value  # type: ignore[misc]
        if kind == "response":
            self.head = value  # type: ignore[assignment]
            return self.streamed
        if not self.streamed and kind == "data":
            self.chunks.append(value)  # type: ignore[arg-type]
            return False
        if not self.streamed and kind == "trailers":
            trailers: CallTrailers = value  # type: ignore[assignment]
            if trailers.error is not None:
                raise _trailer_error(trailers, self.head)
            if self.head is None:
                raise ProtocolViolation("TRAILERS before RESPONSE")
            self.trailers = trailers
            return True
        raise ProtocolViolation("the answer did not start with RESPONSE")

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    def completion(self) -> Completion:
        assert self.head is not None and self.trailers is not None
        h = self.head
        return Completion(json.loads(self.body), h.provider, h.model, h.attempts, h.request_id, _usage(self.trailers))


class _Base:
    def __init__(self, socket: Optional[str] = None, *, credential: Optional[str] = None,
                 client_name: Optional[str] = None, hello_timeout: float = 5.0,
                 resend_unstarted_calls: bool = True) -> None:
        self.socket_path = socket_path(socket)
        self._credential = credential.encode() if credential is not None else None
        self._client_name = client_name
        self._hello_timeout = hello_timeout
        self._started_notices = resend_unstarted_calls
        self._lock = threading.Lock()
        self._connection: Optional[Connection] = None
        self._closed = False

    def _connect_once(self) -> Connection:
        return Connection(self.socket_path, credential=self._credential, client_name=self._client_name,
                          hello_timeout=self._hello_timeout, started_notices=self._started_notices)

    def _current(self) -> Connection:
        """The usable connection, or a new one (retrying while a restarting daemon comes back). Blocking."""
        with self._lock:
            if self._connection is not None and self._connection.usable:
                return self._connection
            last: BreakwaterError = DaemonUnavailable("no daemon at %s" % self.socket_path)
            for attempt in range(RECONNECT_ATTEMPTS):
                if attempt:
                    time.sleep(0.1 * (1 << min(attempt - 1, 4)))
                try:
                    self._connection = self._connect_once()
                    return self._connection
                except DaemonUnavailable as e:
                    last = e
                    if e.code is not None:  # refused for a stated reason (too many connections, ...)
                        raise
            raise last

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self._lock:
                    if self._connection is None or not self._connection.usable:
                        self._connection = self._connect_once()
                return
            except DaemonUnavailable as e:
                if time.monotonic() >= deadline:
                    raise DaemonUnavailable("the daemon at %s was not ready within %.1f s: %s"
                                            % (self.socket_path, timeout, e.message)) from None
                time.sleep(0.05)

    def __del__(self) -> None:
        # A client dropped without close() ends its connection (its reader thread would keep it open).
        try:
            self._close()
        except Exception:
            pass

    def _close(self) -> None:
        with self._lock:
            self._closed = True
            if self._connection is not None:
                self._connection.shutdown()
                self._connection = None

    @property
    def limits(self) -> Limits:
        """The limits the daemon announced (connecting first if needed)."""
        return self._current().limits


class Client(_Base):
    """A client of the daemon for threaded code: thread-safe, one connection shared by every thread (made on the
    first call and again after a daemon restart), a reader thread routing the answers.

    ``socket``: the daemon's socket, else ``$BREAKWATER_SOCKET``, else ``/run/breakwater/breakwater.sock``.
    ``credential``: the agent token presented in HELLO (secret)."""

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connection; calls still open fail. The next call connects again."""
        self._close()

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Returns once the daemon answers HELLO; DaemonUnavailable if it does not within ``timeout`` seconds."""
        self._wait_ready(timeout)

    def send(self, route: str, body: Union[Dict[str, Any], bytes, str], *, timeout: Optional[float] = None,
             request_id: Optional[str] = None, action: Optional[str] = None, tenant: Optional[str] = None,
             step_up_token: Optional[str] = None, on_notice: Optional[NoticeCallback] = None) -> Completion:
        """One call, waiting for the whole answer. ``body`` is an OpenAI chat-completions request (dict or JSON).
        ``timeout`` is the call's deadline in seconds (the daemon's default otherwise)."""
        request = _request(route, False, timeout, request_id, action, tenant, step_up_token)
        data = _body(body)
        for resend in range(RESEND_ATTEMPTS + 1):
            events: "queue.Queue[Event]" = queue.Queue()
            conn, sid = self._open(request, data, events.put, grants_on_delivery=True)
            try:
                answer = _Answer(on_notice, streamed=False)
                while not answer.take(events.get()):
                    pass
                return answer.completion()
            except NotStarted:
                if resend == RESEND_ATTEMPTS:
                    raise
            except BaseException:  # KeyboardInterrupt and the like: the call is abandoned
                conn.cancel(sid)
                raise
        raise AssertionError("unreachable")

    def stream(self, route: str, body: Union[Dict[str, Any], bytes, str], *, timeout: Optional[float] = None,
               request_id: Optional[str] = None, action: Optional[str] = None, tenant: Optional[str] = None,
               step_up_token: Optional[str] = None, on_notice: Optional[NoticeCallback] = None) -> "Stream":
        """A streamed call. Returns once the answer has begun (so errors before the first byte raise here); iterate
        the result for each ``chat.completion.chunk`` dict as the provider sends it. Closing the stream (or breaking
        out of a ``with`` block) cancels the call."""
        request = _request(route, True, timeout, request_id, action, tenant, step_up_token)
        data = _body(body)
        for resend in range(RESEND_ATTEMPTS + 1):
            events: "queue.Queue[Event]" = queue.Queue()
            conn, sid = self._open(request, data, events.put, grants_on_delivery=False)
            try:
                answer = _Answer(on_notice, streamed=True)
                while not answer.take(events.get()):
                    pass
                assert answer.head is not None
                return Stream(conn, sid, answer.head, events, self)
            except NotStarted:
                if resend == RESEND_ATTEMPTS:
                    raise
            except BaseException:
                conn.cancel(sid)
                raise
        raise AssertionError("unreachable")

    def authorize(self, action: str, *, tenant: Optional[str] = None, arguments: Optional[Dict[str, Any]] = None,
                  step_up_token: Optional[str] = None, timeout: Optional[float] = None,
                  request_id: Optional[str] = None, on_notice: Optional[NoticeCallback] = None) -> ActionDecision:
        """Asks, before the app executes ``action``, whether its agent may: the daemon's policy decides (and a person,
        when it says so, approving exactly these ``arguments``). Returns the decision when allowed; a refusal raises
        (``Forbidden``, ``StepUpRequired``, ``RateLimited``, ``ApprovalDenied``, ``ApprovalExpired``, ...)."""
        events: "queue.Queue[Event]" = queue.Queue()
        self._open(_authorize_request(action, tenant, step_up_token, timeout, request_id),
                   _body(arguments or {}), events.put, grants_on_delivery=True)
        answer = _Answer(on_notice, streamed=False)
        while not answer.take(events.get()):
            pass
        return ActionDecision.from_payload(answer.body)

    def admin(self, command: str, arguments: Optional[Dict[str, Any]] = None) -> Any:
        """An admin command (``status``, ``approvals``, ``approve``, ...) and its JSON answer; needs a uid or gid the
        daemon's config names in ``admins``."""
        events: "queue.Queue[Event]" = queue.Queue()
        self._open(AdminRequest(command), _body(arguments or {}), events.put, grants_on_delivery=True)
        answer = _Answer(None, streamed=False)
        while not answer.take(events.get()):
            pass
        return json.loads(answer.body)

    def _open(self, first: Union[CallRequest, AdminRequest, AuthorizeRequest], body: bytes, sink: Callable[[Event], None],
              grants_on_delivery: bool) -> "tuple[Connection, int]":
        for _ in range(3):
            conn = self._current()
            sid = conn.open(first, body, sink, grants_on_delivery)
            if sid is not None:
                return conn, sid
        raise DaemonUnavailable("the daemon takes no new calls on its connections (draining)")


class _StreamBase:
    """What a sync and an asyncio stream share: who answered, the usage once ended, the step from one event to the
    app's next chunk, and cancelling."""

    def __init__(self, conn: Connection, sid: int, head: CallResponse, owner: _Base) -> None:
        self._owner = owner  # keeps the client, and so its connection, open while the stream is read
        self._conn = conn
        self._sid = sid
        self._head = head
        self.provider = head.provider
        self.model = head.model
        self.attempts = head.attempts
        self.request_id = head.request_id
        self.usage: Optional[Usage] = None
        self._done = False

    def _take(self, event: Event) -> Optional[Dict[str, Any]]:
        """The app's next chunk, or None: read on (a late notice), or the stream has ended (`_done`). A chunk taken
        gives its bytes back to the daemon as credit."""
        kind, value = event
        if kind == "data":
            self._conn.consumed(self._sid, len(value))  # type: ignore[arg-type]
            return json.loads(value)  # type: ignore[arg-type,no-any-return]
        if kind == "notice":
            return None
        self._done = True
        if kind == "trailers":
            trailers: CallTrailers = value  # type: ignore[assignment]
            self.usage = _usage(trailers)
            if trailers.error is not None:
                raise _trailer_error(trailers, self._head)
            return None
        raise value  # type: ignore[misc]

    def close(self) -> None:
        """Abandons the stream if it has not ended: CANCEL, and the daemon stops the upstream request."""
        if not self._done:
            self._done = True
            self._conn.cancel(self._sid)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


class Stream(_StreamBase):
    """A streamed answer: iterate for each chunk (a ``chat.completion.chunk`` dict). ``provider``, ``model`` and
    ``attempts`` say who answered; ``usage`` is set once the stream has ended. A stream the provider cut raises
    StreamInterrupted; ``close()`` (or leaving a ``with`` block early) cancels the call."""

    def __init__(self, conn: Connection, sid: int, head: CallResponse, events: "queue.Queue[Event]",
                 owner: "Client") -> None:
        super().__init__(conn, sid, head, owner)
        self._events = events

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        return self

    def __next__(self) -> Dict[str, Any]:
        while not self._done:
            chunk = self._take(self._events.get())
            if chunk is not None:
                return chunk
        raise StopIteration

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _LoopSink:
    """Hands a call's events from the reader thread to its asyncio task's queue: several decoded from one read go
    over in one `call_soon_threadsafe` (one wake-up of the event loop), not one each."""

    def __init__(self, loop: asyncio.AbstractEventLoop, events: "asyncio.Queue[Event]") -> None:
        self._loop = loop
        self._events = events

    def __call__(self, event: Event) -> None:
        self._loop.call_soon_threadsafe(self._events.put_nowait, event)

    def many(self, events: List[Event]) -> None:
        self._loop.call_soon_threadsafe(self._put_all, events)

    def _put_all(self, events: List[Event]) -> None:
        for event in events:
            self._events.put_nowait(event)


class AsyncClient(_Base):
    """The same client for asyncio: the same connection machinery (its reader thread hands events to the loop),
    and cancelling the task that awaits a call, or closing a stream, cancels the call in the daemon."""

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._close()

    async def wait_ready(self, timeout: float = 10.0) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._wait_ready, timeout)

    async def _open_async(self, first: Union[CallRequest, AdminRequest, AuthorizeRequest], body: bytes,
                          grants_on_delivery: bool) -> "tuple[Connection, int, asyncio.Queue[Event]]":
        loop = asyncio.get_running_loop()
        events: "asyncio.Queue[Event]" = asyncio.Queue()

        sink = _LoopSink(loop, events)

        with self._lock:
            ready = self._connection if self._connection is not None and self._connection.usable else None
        for _ in range(3):
            conn = ready or await loop.run_in_executor(None, self._current)
            ready = None
            sid = conn.open(first, body, sink, grants_on_delivery)
            if sid is not None:
                return conn, sid, events
        raise DaemonUnavailable("the daemon takes no new calls on its connections (draining)")

    async def send(self, route: str, body: Union[Dict[str, Any], bytes, str], *, timeout: Optional[float] = None,
                   request_id: Optional[str] = None, action: Optional[str] = None, tenant: Optional[str] = None,
                   step_up_token: Optional[str] = None, on_notice: Optional[NoticeCallback] = None) -> Completion:
        """As ``Client.send``; cancelling the awaiting task sends CANCEL."""
        request = _request(route, False, timeout, request_id, action, tenant, step_up_token)
        data = _body(body)
        for resend in range(RESEND_ATTEMPTS + 1):
            conn, sid, events = await self._open_async(request, data, grants_on_delivery=True)
            try:
                answer = _Answer(on_notice, streamed=False)
                while not answer.take(await events.get()):
                    pass
                return answer.completion()
            except NotStarted:
                if resend == RESEND_ATTEMPTS:
                    raise
            except BaseException:  # asyncio.CancelledError included
                conn.cancel(sid)
                raise
        raise AssertionError("unreachable")

    async def authorize(self, action: str, *, tenant: Optional[str] = None,
                        arguments: Optional[Dict[str, Any]] = None, step_up_token: Optional[str] = None,
                        timeout: Optional[float] = None, request_id: Optional[str] = None,
                        on_notice: Optional[NoticeCallback] = None) -> ActionDecision:
        """As ``Client.authorize``; cancelling the awaiting task withdraws the request (and its approval)."""
        conn, sid, events = await self._open_async(
            _authorize_request(action, tenant, step_up_token, timeout, request_id), _body(arguments or {}),
            grants_on_delivery=True)
        try:
            answer = _Answer(on_notice, streamed=False)
            while not answer.take(await events.get()):
                pass
            return ActionDecision.from_payload(answer.body)
        except BaseException:  # asyncio.CancelledError included
            conn.cancel(sid)
            raise

    async def stream(self, route: str, body: Union[Dict[str, Any], bytes, str], *,
                     timeout: Optional[float] = None, request_id: Optional[str] = None,
                     action: Optional[str] = None, tenant: Optional[str] = None,
                     step_up_token: Optional[str] = None,
                     on_notice: Optional[NoticeCallback] = None) -> "AsyncStream":
        """As ``Client.stream``; iterate with ``async for``. Cancelling the task or ``await stream.aclose()``
        cancels the call."""
        request = _request(route, True, timeout, request_id, action, tenant, step_up_token)
        data = _body(body)
        for resend in range(RESEND_ATTEMPTS + 1):
            conn, sid, events = await self._open_async(request, data, grants_on_delivery=False)
            try:
                answer = _Answer(on_notice, streamed=True)
                while not answer.take(await events.get()):
                    pass
                assert answer.head is not None
                return AsyncStream(conn, sid, answer.head, events, self)
            except NotStarted:
                if resend == RESEND_ATTEMPTS:
                    raise
            except BaseException:
                conn.cancel(sid)
                raise
        raise AssertionError("unreachable")


class AsyncStream(_StreamBase):
    """A streamed answer for asyncio: ``async for chunk in stream``; see ``Stream``."""

    def __init__(self, conn: Connection, sid: int, head: CallResponse, events: "asyncio.Queue[Event]",
                 owner: "AsyncClient") -> None:
        super().__init__(conn, sid, head, owner)
        self._events = events

    def __aiter__(self) -> AsyncIterator[Dict[str, Any]]:
        return self

    async def __anext__(self) -> Dict[str, Any]:
        try:
            while not self._done:
                chunk = self._take(await self._events.get())
                if chunk is not None:
                    return chunk
        except asyncio.CancelledError:
            self.close()
            raise
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> "AsyncStream":
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
