"""One connection to the daemon: HELLO at creation, a reader thread routing frames to calls by stream id.

Shared by the sync and the asyncio client: a call registers a sink (called on the reader thread) before its
REQUEST is written, so no answer can arrive for an unknown call.
"""
from __future__ import annotations

import itertools
import os
import socket
import threading
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple, Union

from ._errors import BreakwaterError, DaemonRestarted, DaemonUnavailable, ProtocolViolation, error_for
from ._wire import (END_STREAM, PROTOCOL_VERSION, CallNotice, CallRequest, CallResponse, CallTrailers,
                    ErrorMessage, Frame, FrameDecoder, FrameType, GoAway, Hello, Limits, WindowUpdate, WireError,
                    AdminRequest)

SYSTEM_SOCKET = "/run/breakwater/breakwater.sock"
#: Credit each call starts with (PROTOCOL.md, "Flow control"); given back each half window the app consumes.
STREAM_WINDOW = 64 * 1024

_prefix = os.urandom(4).hex()
_counter = itertools.count(1)


def make_request_id() -> str:
    """`bw-`, 8 hex digits drawn once per process, and a counter: as the Swift shim makes them."""
    return "bw-%s%08x" % (_prefix, next(_counter))


def socket_path(path: Optional[str]) -> str:
    """The argument, else $BREAKWATER_SOCKET, else the system socket (as the CLI does)."""
    return path or os.environ.get("BREAKWATER_SOCKET") or SYSTEM_SOCKET


class NotStarted(DaemonUnavailable):
    """The daemon never started the call (it went away or was draining first): safe to send again."""


Event = Tuple[str, object]  # ("notice", CallNotice) | ("response", CallResponse) | ("data", bytes)
#                             | ("trailers", CallTrailers) | ("failed", BreakwaterError)
Sink = Callable[[Event], None]


@dataclass
class _OpenCall:
    sink: Sink
    grants_on_delivery: bool
    started: bool = False
    flushed: bool = False
    consumed: int = 0


class Connection:
    def __init__(self, path: str, *, credential: Optional[bytes], client_name: Optional[str],
                 hello_timeout: float, started_notices: bool = True) -> None:
        self.path = path
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(hello_timeout)
            sock.connect(path)
        except OSError as e:
            raise DaemonUnavailable("cannot connect to %s: %s" % (path, e.strerror or e)) from None
        decoder = FrameDecoder()
        try:
            sock.sendall(Hello(min_version=PROTOCOL_VERSION, max_version=PROTOCOL_VERSION, credential=credential,
                               client_name=client_name, started_notices=started_notices,
                               stream_window=STREAM_WINDOW).frame().encode())
            answer = None
            while answer is None:
                data = sock.recv(65536)
                if not data:
                    raise DaemonUnavailable("the daemon closed the connection at HELLO")
                decoder.feed(data)
                answer = decoder.next()
            if answer.type == FrameType.ERROR:
                m = ErrorMessage.from_frame(answer)
                raise error_for(m.code, m.message)
            hello = Hello.from_frame(answer)
            if hello.version != PROTOCOL_VERSION or hello.limits is None:
                raise ProtocolViolation("the daemon's HELLO has no usable version or limits")
        except (OSError, socket.timeout) as e:
            sock.close()
            raise DaemonUnavailable("HELLO failed: %s" % e) from None
        except WireError as e:
            sock.close()
            raise ProtocolViolation(str(e)) from None
        except BaseException:
            sock.close()
            raise
        sock.settimeout(None)
        self.limits: Limits = hello.limits
        self.started_notices = hello.started_notices
        self.flow_control = hello.stream_window is not None
        decoder.max_payload = hello.limits.max_frame_payload
        self._sock = sock
        self._lock = threading.Lock()  # state, and writes (so stream ids reach the daemon in order)
        self._calls: Dict[int, _OpenCall] = {}
        # Events decoded from the read in hand, by call (reader thread only).
        self._pending: List[Tuple[_OpenCall, List[Event]]] = []
        self._next_id = 1
        self._closed = False
        self._draining = False
        self._closed_by_client = False
        self._reader = threading.Thread(target=self._read_loop, args=(decoder,), name="breakwater-reader",
                                        daemon=True)
        self._reader.start()

    @property
    def usable(self) -> bool:
        with self._lock:
            return not self._closed and not self._draining and self._next_id < 0x7FFFFFFF

    def _write(self, frames: List[Frame]) -> bool:
        """Under the lock: writes the frames whole; False (and the connection shut down) when that fails."""
        if self._closed:
            return False
        try:
            self._sock.sendall(b"".join(f.encode() for f in frames))
            return True
        except OSError:
            self._closed = True
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return False

    def open(self, first: Union[CallRequest, AdminRequest, AuthorizeRequest], body: bytes, sink: Sink,
             grants_on_delivery: bool) -> Optional[int]:
        """Registers a call and writes its REQUEST (or ADMIN) and body; its id, or None when this connection takes
        no new calls (the caller makes a new connection)."""
        max_payload = self.limits.max_frame_payload
        with self._lock:
            if self._closed or self._draining or self._next_id >= 0x7FFFFFFF:
                return None
            sid = self._next_id
            self._next_id += 2
            frames = [first.frame(sid, end_stream=not body)]
            for offset in range(0, len(body), max_payload):
                chunk = body[offset:offset + max_payload]
                frames.append(Frame(FrameType.DATA, sid, END_STREAM if offset + max_payload >= len(body) else 0,
                                    chunk))
            call = _OpenCall(sink, grants_on_delivery)
            self._calls[sid] = call
            if self._write(frames):
                call.flushed = True
        return sid

    def cancel(self, sid: int) -> None:
        """Abandons a call: forgotten here, CANCEL to the daemon (which stops it upstream at once)."""
        with self._lock:
            if self._calls.pop(sid, None) is not None:
                self._write([Frame(FrameType.CANCEL, sid)])

    def consumed(self, sid: int, count: int) -> None:
        """The app took `count` bytes of the call's DATA: credit goes back each half window."""
        if not self.flow_control or count <= 0:
            return
        with self._lock:
            self._consume(sid, count)

    def _consume(self, sid: int, count: int) -> None:
        if not self.flow_control:
            return  # the daemon did not agree to credit: it must get no WINDOW_UPDATE
        call = self._calls.get(sid)
        if call is None:
            return  # the call ended: no credit is owed
        call.consumed += count
        if call.consumed >= STREAM_WINDOW // 2:
            increment, call.consumed = call.consumed, 0
            self._write([WindowUpdate(increment).frame(sid)])

    def shutdown(self) -> None:
        """Ends the connection for the app: open calls fail, none is sent again."""
        with self._lock:
            self._closed_by_client = True
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _read_loop(self, decoder: FrameDecoder) -> None:
        reason: BreakwaterError = DaemonUnavailable("the daemon closed the connection")
        ended = True  # the socket ended rather than the daemon saying why
        try:
            while True:
                frame = decoder.next()
                if frame is not None:
                    stop = self._dispatch(frame)
                    if stop is not None:
                        reason, ended = stop, False
                        break
                    continue
                # Everything one read held is decoded: hand it over before waiting for more.
                self._flush_deliveries()
                data = self._sock.recv(256 * 1024)
                if not data:
                    break
                decoder.feed(data)
        except WireError as e:
            reason, ended = ProtocolViolation(str(e)), False
        except OSError:
            reason = DaemonUnavailable("the connection to the daemon broke")
        self._flush_deliveries()
        with self._lock:
            self._closed = True
            calls, self._calls = self._calls, {}
            by_client = self._closed_by_client
            self._sock.close()
        if by_client:
            reason, ended = DaemonUnavailable("the client closed the connection"), False
        for call in calls.values():
            if not by_client and not call.flushed:
                call.sink(("failed", NotStarted("the connection ended before the call was written to it")))
            elif ended and self.started_notices and not call.started:
                call.sink(("failed", NotStarted("the daemon went away before the call reached a provider")))
            elif ended and self.started_notices:
                call.sink(("failed", DaemonRestarted(
                    "the daemon stopped or restarted while the call was in flight upstream; it may have reached "
                    "the provider, so it was not sent again")))
            else:
                call.sink(("failed", reason))

    def _dispatch(self, frame: Frame) -> Optional[BreakwaterError]:
        """Routes one frame; returns an error when the connection must end."""
        kind = frame.type
        try:
            if kind == FrameType.RESPONSE:
                self._deliver(frame.stream_id, ("response", CallResponse.from_frame(frame)), final=False)
            elif kind == FrameType.DATA:
                self._deliver(frame.stream_id, ("data", frame.payload), final=False)
            elif kind == FrameType.TRAILERS:
                self._deliver(frame.stream_id, ("trailers", CallTrailers.from_frame(frame)), final=True)
            elif kind == FrameType.ERROR:
                m = ErrorMessage.from_frame(frame)
                if frame.stream_id == 0:
                    return error_for(m.code, m.message)
                if m.code == 0x010B:  # NOT_ACCEPTED: the daemon is draining and never started the call
                    error: BreakwaterError = NotStarted(m.message, code=m.code)
                else:
                    error = error_for(m.code, m.message, upstream_status=m.upstream_status,
                                      retry_after_ms=m.retry_after_ms, provider=m.provider, attempts=m.attempts)
                self._deliver(frame.stream_id, ("failed", error), final=True)
            elif kind == FrameType.GOAWAY:
                g = GoAway.from_frame(frame)
                with self._lock:
                    self._draining = True
                    refused = [self._calls.pop(i) for i in sorted(self._calls) if i > g.last_stream_id]
                for call in refused:
                    call.sink(("failed", NotStarted("the daemon is draining; call not started", code=0x010B)))
            elif kind == FrameType.PING:
                with self._lock:
                    self._write([Frame(FrameType.PONG, 0, 0, frame.payload)])
            elif kind == FrameType.NOTICE:
                self._deliver(frame.stream_id, ("notice", CallNotice.from_frame(frame)), final=False)
            elif kind == FrameType.STARTED:
                with self._lock:
                    call = self._calls.get(frame.stream_id)
                    if call is not None:
                        call.started = True
        except WireError as e:
            return ProtocolViolation(str(e))
        return None

    def _deliver(self, sid: int, event: Event, final: bool) -> None:
        with self._lock:
            call = self._calls.pop(sid, None) if final else self._calls.get(sid)
            if call is not None and not final and call.grants_on_delivery and event[0] == "data":
                self._consume(sid, len(event[1]))  # type: ignore[arg-type]
        if call is not None:
            # Held until the frames of this read are all decoded (`_flush_deliveries`): a sink that can take several
            # events at once (an asyncio task's) then wakes its reader once for them, not once per chunk.
            if self._pending and self._pending[-1][0] is call:
                self._pending[-1][1].append(event)
            else:
                self._pending.append((call, [event]))

    def _flush_deliveries(self) -> None:
        """Hands the events decoded from one read to their calls' sinks, in order: to `sink.many` where the sink
        has it (one hand-over for a run of events), else one by one."""
        pending, self._pending = self._pending, []
        for call, events in pending:
            many = getattr(call.sink, "many", None)
            if many is not None and len(events) > 1:
                many(events)
            else:
                for event in events:
                    call.sink(event)
