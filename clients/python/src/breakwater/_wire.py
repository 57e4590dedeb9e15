"""The Breakwater wire protocol, version 1 (protocol/PROTOCOL.md): frames, field lists and the typed messages.

Pure functions and small dataclasses; no I/O. Every rule the spec gives a receiver is checked here, so a client
built on this module refuses exactly what the spec says to refuse (the vectors in protocol/vectors/ pin it).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Callable, Dict, List, Optional, Tuple

HEADER_SIZE = 10
MAGIC = b"BKWR"
END_STREAM = 0x01
PRE_HELLO_MAX_PAYLOAD = 65536
#: The most credit a stream may hold (HTTP/2's 2^31 - 1).
MAX_CREDIT = 0x7FFFFFFF
PROTOCOL_VERSION = 1


class FrameType(IntEnum):
    HELLO = 0x01
    REQUEST = 0x02
    DATA = 0x03
    RESPONSE = 0x04
    TRAILERS = 0x05
    ERROR = 0x06
    CANCEL = 0x07
    PING = 0x08
    PONG = 0x09
    GOAWAY = 0x0A
    NOTICE = 0x0B
    ADMIN = 0x0C
    STARTED = 0x0D
    WINDOW_UPDATE = 0x0E
    AUTHORIZE = 0x0F


class ErrorCode(IntEnum):
    PROTOCOL_ERROR = 0x0001
    FRAME_TOO_LARGE = 0x0002
    UNKNOWN_FRAME_TYPE = 0x0003
    HELLO_REQUIRED = 0x0004
    UNSUPPORTED_VERSION = 0x0005
    BODY_TOO_LARGE = 0x0006
    INVALID_STREAM_ID = 0x0007
    UNAUTHENTICATED = 0x0008
    SHUTTING_DOWN = 0x0009
    INTERNAL_ERROR = 0x000A
    STALLED = 0x000B
    TOO_MANY_CONNECTIONS = 0x000C
    BAD_REQUEST = 0x0101
    UNKNOWN_ROUTE = 0x0102
    CANCELLED = 0x0103
    UPSTREAM_ERROR = 0x0104
    UPSTREAM_UNAVAILABLE = 0x0105
    TIMEOUT = 0x0106
    TOO_MANY_CALLS = 0x0107
    UPSTREAM_MALFORMED = 0x0108
    NO_CREDENTIAL = 0x0109
    STREAM_INTERRUPTED = 0x010A
    NOT_ACCEPTED = 0x010B
    FORBIDDEN = 0x010C
    APPROVAL_DENIED = 0x010D
    APPROVAL_EXPIRED = 0x010E
    STEP_UP_REQUIRED = 0x010F
    RATE_LIMITED = 0x0110
    BUDGET_EXCEEDED = 0x0111
    CONCURRENCY_LIMIT = 0x0112
    CONFIGURATION_ERROR = 0x0113
    EVENT_TOO_LARGE = 0x0114
    TOOL_CALL_BLOCKED = 0x0115

    @property
    def is_connection_error(self) -> bool:
        return self.value < 0x0100


def code_name(code: int) -> str:
    """The spec's name for a code, or its number for one this client does not know."""
    try:
        return ErrorCode(code).name
    except ValueError:
        return "0x%04X" % code


class WireError(Exception):
    """Bytes the spec says to refuse, with the code to refuse them with."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return "%s: %s" % (code_name(self.code), self.message)


@dataclass
class Frame:
    type: int
    stream_id: int
    flags: int = 0
    payload: bytes = b""

    @property
    def end_stream(self) -> bool:
        return bool(self.flags & END_STREAM)

    def encode(self) -> bytes:
        return struct.pack(">IIBB", len(self.payload), self.stream_id, self.type, self.flags) + self.payload


_CONNECTION_FRAMES = {FrameType.HELLO, FrameType.PING, FrameType.PONG, FrameType.GOAWAY}
_FIXED_LENGTH = {FrameType.PING: 8, FrameType.PONG: 8, FrameType.WINDOW_UPDATE: 4,
                 FrameType.CANCEL: 0, FrameType.STARTED: 0}


def validate_header(length: int, stream_id: int, raw_type: int, flags: int, max_payload: int) -> None:
    """Every check the header alone allows, in the spec's order ("Order of checks")."""
    if length > max_payload:
        raise WireError(ErrorCode.FRAME_TOO_LARGE,
                        "frame payload of %d bytes exceeds the limit of %d" % (length, max_payload))
    try:
        kind = FrameType(raw_type)
    except ValueError:
        raise WireError(ErrorCode.UNKNOWN_FRAME_TYPE, "unknown frame type 0x%x" % raw_type) from None
    if stream_id & 0x80000000:
        raise WireError(ErrorCode.PROTOCOL_ERROR, "reserved high bit of the stream id is set")
    if flags & ~END_STREAM:
        raise WireError(ErrorCode.PROTOCOL_ERROR, "undefined flag bits 0x%x on %s" % (flags, kind.name))
    if kind in _CONNECTION_FRAMES:
        if stream_id != 0:
            raise WireError(ErrorCode.PROTOCOL_ERROR, "%s frame must be on stream 0" % kind.name)
    elif kind != FrameType.ERROR and stream_id == 0:
        raise WireError(ErrorCode.INVALID_STREAM_ID, "%s frame must not be on stream 0" % kind.name)
    fixed = _FIXED_LENGTH.get(kind)
    if fixed is not None and length != fixed:
        raise WireError(ErrorCode.PROTOCOL_ERROR, "%s payload must be %d bytes, not %d" % (kind.name, fixed, length))


class FrameDecoder:
    """Cuts a byte stream into frames, checking each header before its payload is waited for."""

    def __init__(self, max_payload: int = PRE_HELLO_MAX_PAYLOAD) -> None:
        self.max_payload = max_payload
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer += data

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def next(self) -> Optional[Frame]:
        """The next whole frame, or None until more bytes arrive; WireError for bytes the spec refuses."""
        if len(self._buffer) < HEADER_SIZE:
            return None
        length, stream_id, raw_type, flags = struct.unpack_from(">IIBB", self._buffer, 0)
        validate_header(length, stream_id, raw_type, flags, self.max_payload)
        if len(self._buffer) < HEADER_SIZE + length:
            return None
        payload = bytes(self._buffer[HEADER_SIZE:HEADER_SIZE + length])
        del self._buffer[:HEADER_SIZE + length]
        return Frame(raw_type, stream_id, flags, payload)


# Field lists: tag (u16) | length (u32) | value.

U8, U16, U32, STRING, BYTES, BOOL = "u8", "u16", "u32", "string", "bytes", "bool"
_WIDTH = {U8: 1, U16: 2, U32: 4, BOOL: 1}
_INT_FORMAT = {U8: ">B", U16: ">H", U32: ">I", BOOL: ">B"}


def read_fields(payload: bytes, schema: Dict[int, str], start: int = 0) -> Dict[int, object]:
    """Parses a field list: the first occurrence of each known tag, width- and UTF-8-checked; unknown tags skipped."""
    values: Dict[int, object] = {}
    i = start
    while i < len(payload):
        if len(payload) - i < 6:
            raise WireError(ErrorCode.PROTOCOL_ERROR, "field header runs past the end of the payload")
        tag, length = struct.unpack_from(">HI", payload, i)
        i += 6
        if length > len(payload) - i:
            raise WireError(ErrorCode.PROTOCOL_ERROR, "field %d runs past the end of the payload" % tag)
        raw = payload[i:i + length]
        i += length
        kind = schema.get(tag)
        if kind is None:
            continue
        if kind in _WIDTH:
            if length != _WIDTH[kind]:
                raise WireError(ErrorCode.PROTOCOL_ERROR,
                                "field %d must be %d bytes, not %d" % (tag, _WIDTH[kind], length))
            value: object = struct.unpack(_INT_FORMAT[kind], raw)[0]
            if kind == BOOL:
                if value not in (0, 1):
                    raise WireError(ErrorCode.PROTOCOL_ERROR, "field %d is a bool of %d" % (tag, value))
                value = value == 1
        elif kind == STRING:
            try:
                value = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise WireError(ErrorCode.PROTOCOL_ERROR, "field %d is not valid UTF-8" % tag) from None
        else:
            value = bytes(raw)
        values.setdefault(tag, value)
    return values


def read_all(payload: bytes, tag: int) -> List[bytes]:
    """Every field with `tag`, in order: for nested lists whose every entry has one tag (ERROR's attempts)."""
    found: List[bytes] = []
    i = 0
    while i < len(payload):
        if len(payload) - i < 6:
            raise WireError(ErrorCode.PROTOCOL_ERROR, "field header runs past the end of the payload")
        t, length = struct.unpack_from(">HI", payload, i)
        i += 6
        if length > len(payload) - i:
            raise WireError(ErrorCode.PROTOCOL_ERROR, "field %d runs past the end of the payload" % t)
        if t == tag:
            found.append(bytes(payload[i:i + length]))
        i += length
    return found


def write_fields(fields: List[Tuple[int, str, object]]) -> bytes:
    """Writes the fields that are not None, in the order given (tag order, as the daemon's encoder does)."""
    out = bytearray()
    for tag, kind, value in fields:
        if value is None:
            continue
        if kind in _INT_FORMAT:
            raw = struct.pack(_INT_FORMAT[kind], int(value))  # type: ignore[call-overload]
        elif kind == STRING:
            raw = str(value).encode("utf-8")
        else:
            raw = bytes(value)  # type: ignore[call-overload]
        out += struct.pack(">HI", tag, len(raw)) + raw
    return bytes(out)


# Messages. Each has from_frame (checks what the spec says to check) and frame (encodes in tag order).

@dataclass
class Limits:
    max_frame_payload: int
    max_body: int
    max_concurrent_calls: int


_HELLO = {1: U16, 2: U16, 3: BYTES, 4: STRING, 5: U16, 6: U32, 7: U32, 8: U32, 9: STRING, 10: BOOL, 11: U32}


@dataclass
class Hello:
    min_version: Optional[int] = None
    max_version: Optional[int] = None
    credential: Optional[bytes] = field(default=None, repr=False)  # secret: never shown
    client_name: Optional[str] = None
    version: Optional[int] = None
    limits: Optional[Limits] = None
    server_name: Optional[str] = None
    started_notices: bool = False
    stream_window: Optional[int] = None

    def frame(self) -> Frame:
        lim = self.limits
        payload = MAGIC + write_fields([
            (1, U16, self.min_version), (2, U16, self.max_version), (3, BYTES, self.credential),
            (4, STRING, self.client_name), (5, U16, self.version),
            (6, U32, lim.max_frame_payload if lim else None), (7, U32, lim.max_body if lim else None),
            (8, U32, lim.max_concurrent_calls if lim else None), (9, STRING, self.server_name),
            (10, BOOL, True if self.started_notices else None), (11, U32, self.stream_window),
        ])
        return Frame(FrameType.HELLO, 0, 0, payload)

    @classmethod
    def from_frame(cls, frame: Frame) -> "Hello":
        if frame.type != FrameType.HELLO:
            raise WireError(ErrorCode.HELLO_REQUIRED, "expected HELLO")
        if not frame.payload.startswith(MAGIC):
            raise WireError(ErrorCode.PROTOCOL_ERROR, "HELLO payload does not start with the magic bytes")
        f = read_fields(frame.payload, _HELLO, start=len(MAGIC))
        limits = None
        if 6 in f and 7 in f and 8 in f:
            limits = Limits(f[6], f[7], f[8])  # type: ignore[arg-type]
        window = f.get(11)
        if window is not None and not 1 <= window <= MAX_CREDIT:  # type: ignore[operator]
            raise WireError(ErrorCode.PROTOCOL_ERROR, "stream_window must be 1 to %d" % MAX_CREDIT)
        return cls(f.get(1), f.get(2), f.get(3), f.get(4), f.get(5), limits, f.get(9),  # type: ignore[arg-type]
                   bool(f.get(10, False)), window)  # type: ignore[arg-type]


_REQUEST = {1: STRING, 2: BOOL, 3: U32, 4: STRING, 5: STRING, 6: STRING, 7: BYTES}


def _request_id(value: Any, frame: str) -> Optional[str]:
    """A request id field: at most 128 bytes, else that call fails (BAD_REQUEST)."""
    if value is not None and len(str(value).encode("utf-8")) > 128:
        raise WireError(ErrorCode.BAD_REQUEST, "%s request id is longer than 128 bytes" % frame)
    return value  # type: ignore[no-any-return]


@dataclass
class CallRequest:
    route: str
    stream: bool = False
    timeout_ms: Optional[int] = None
    request_id: Optional[str] = None
    action: Optional[str] = None
    tenant: Optional[str] = None
    step_up_token: Optional[bytes] = field(default=None, repr=False)  # secret

    def frame(self, stream_id: int, end_stream: bool = False) -> Frame:
        payload = write_fields([
            (1, STRING, self.route), (2, BOOL, self.stream), (3, U32, self.timeout_ms),
            (4, STRING, self.request_id), (5, STRING, self.action), (6, STRING, self.tenant),
            (7, BYTES, self.step_up_token),
        ])
        return Frame(FrameType.REQUEST, stream_id, END_STREAM if end_stream else 0, payload)

    @classmethod
    def from_frame(cls, frame: Frame) -> "CallRequest":
        f = read_fields(frame.payload, _REQUEST)
        route = f.get(1)
        if not route:
            raise WireError(ErrorCode.BAD_REQUEST, "REQUEST has no route")
        request_id = _request_id(f.get(4), "REQUEST")
        return cls(route, bool(f.get(2, False)), f.get(3), request_id, f.get(5), f.get(6),  # type: ignore[arg-type]
                   f.get(7))  # type: ignore[arg-type]


_RESPONSE = {1: U16, 2: STRING, 3: STRING, 4: U16, 5: STRING}


@dataclass
class CallResponse:
    status: int
    provider: str
    model: str
    attempts: int
    request_id: str

    def frame(self, stream_id: int) -> Frame:
        return Frame(FrameType.RESPONSE, stream_id, 0, write_fields([
            (1, U16, self.status), (2, STRING, self.provider), (3, STRING, self.model), (4, U16, self.attempts),
            (5, STRING, self.request_id)]))

    @classmethod
    def from_frame(cls, frame: Frame) -> "CallResponse":
        f = read_fields(frame.payload, _RESPONSE)
        return cls(f.get(1, 0), f.get(2, ""), f.get(3, ""), f.get(4, 1), f.get(5, ""))  # type: ignore[arg-type]


_TRAILERS = {1: U8, 2: U16, 3: STRING, 4: U32, 5: U32, 6: U32}


@dataclass
class CallTrailers:
    error: Optional[int] = None
    message: Optional[str] = None
    prompt_tokens: Optional[int] = None
    completion_tokens: Optional[int] = None
    total_tokens: Optional[int] = None

    def frame(self, stream_id: int) -> Frame:
        return Frame(FrameType.TRAILERS, stream_id, END_STREAM, write_fields([
            (1, U8, 0 if self.error is None else 1), (2, U16, self.error), (3, STRING, self.message),
            (4, U32, self.prompt_tokens), (5, U32, self.completion_tokens), (6, U32, self.total_tokens)]))

    @classmethod
    def from_frame(cls, frame: Frame) -> "CallTrailers":
        f = read_fields(frame.payload, _TRAILERS)
        error = None
        if f.get(1, 0) != 0:
            error = f.get(2, ErrorCode.INTERNAL_ERROR.value)
        return cls(error, f.get(3), f.get(4), f.get(5), f.get(6))  # type: ignore[arg-type]


_ATTEMPT = {1: STRING, 2: STRING, 3: STRING, 4: STRING, 5: U16, 6: U32, 7: STRING, 8: BOOL, 9: STRING}


@dataclass
class Attempt:
    """One step of a failed call's walk along its route: a target tried or skipped, and what came of it.

    ``outcome``: ``error_status``, ``timed_out``, ``unreachable``, ``malformed``, ``stream_error``,
    ``configuration`` (the request went out, or was to); ``breaker_open``, ``keys_busy``, ``policy``, ``budget``,
    ``deadline``, ``no_credential``, ``not_translatable`` (skipped). ``failure``: the failure's class
    (``transient``, ``rate_limited``, ...). ``wait_ms``: the wait chosen after it. ``then``: ``retried``,
    ``moved_on`` or ``gave_up``. ``retry_budget_refused``: the retry budget refused its retry."""
    provider: str
    model: str
    outcome: str
    failure: Optional[str] = None
    upstream_status: Optional[int] = None
    wait_ms: Optional[int] = None
    then: Optional[str] = None
    retry_budget_refused: bool = False
    message: Optional[str] = None

    def fields(self) -> bytes:
        return write_fields([
            (1, STRING, self.provider), (2, STRING, self.model), (3, STRING, self.outcome), (4, STRING, self.failure),
            (5, U16, self.upstream_status), (6, U32, self.wait_ms), (7, STRING, self.then),
            (8, BOOL, True if self.retry_budget_refused else None), (9, STRING, self.message)])

    @classmethod
    def from_fields(cls, raw: bytes) -> "Attempt":
        f = read_fields(raw, _ATTEMPT)
        return cls(f.get(1, ""), f.get(2, ""), f.get(3, ""), f.get(4), f.get(5), f.get(6),  # type: ignore[arg-type]
                   f.get(7), bool(f.get(8, False)), f.get(9))  # type: ignore[arg-type]


_ERROR = {1: U16, 2: STRING, 3: U16, 4: STRING, 5: U32, 6: BYTES}


@dataclass
class ErrorMessage:
    code: int
    message: str = ""
    upstream_status: Optional[int] = None
    provider: Optional[str] = None
    retry_after_ms: Optional[int] = None
    attempts: List[Attempt] = field(default_factory=list)

    def frame(self, stream_id: int) -> Frame:
        nested = b"".join(struct.pack(">HI", 1, len(a.fields())) + a.fields() for a in self.attempts)
        return Frame(FrameType.ERROR, stream_id, 0, write_fields([
            (1, U16, self.code), (2, STRING, self.message), (3, U16, self.upstream_status),
            (4, STRING, self.provider), (5, U32, self.retry_after_ms), (6, BYTES, nested or None)]))

    @classmethod
    def from_frame(cls, frame: Frame) -> "ErrorMessage":
        f = read_fields(frame.payload, _ERROR)
        if 1 not in f:
            raise WireError(ErrorCode.PROTOCOL_ERROR, "ERROR has no code")
        attempts = [Attempt.from_fields(raw) for raw in read_all(f[6], 1)] if 6 in f else []  # type: ignore
        return cls(f[1], f.get(2, ""), f.get(3), f.get(4), f.get(5), attempts)  # type: ignore[arg-type]


_GOAWAY = {1: U32, 2: U16, 3: STRING}


@dataclass
class GoAway:
    last_stream_id: int
    code: int = ErrorCode.SHUTTING_DOWN.value
    message: str = ""

    def frame(self) -> Frame:
        return Frame(FrameType.GOAWAY, 0, 0, write_fields([
            (1, U32, self.last_stream_id), (2, U16, self.code), (3, STRING, self.message)]))

    @classmethod
    def from_frame(cls, frame: Frame) -> "GoAway":
        f = read_fields(frame.payload, _GOAWAY)
        return cls(f.get(1, 0), f.get(2, ErrorCode.SHUTTING_DOWN.value), f.get(3, ""))  # type: ignore[arg-type]


_NOTICE = {1: STRING, 2: STRING, 3: STRING, 4: U32}


@dataclass
class CallNotice:
    kind: str
    approval_id: Optional[str] = None
    message: str = ""
    timeout_ms: Optional[int] = None

    def frame(self, stream_id: int) -> Frame:
        return Frame(FrameType.NOTICE, stream_id, 0, write_fields([
            (1, STRING, self.kind), (2, STRING, self.approval_id), (3, STRING, self.message),
            (4, U32, self.timeout_ms)]))

    @classmethod
    def from_frame(cls, frame: Frame) -> "CallNotice":
        f = read_fields(frame.payload, _NOTICE)
        return cls(f.get(1, ""), f.get(2), f.get(3, ""), f.get(4))  # type: ignore[arg-type]


_ADMIN = {1: STRING}


@dataclass
class AdminRequest:
    command: str

    def frame(self, stream_id: int, end_stream: bool = False) -> Frame:
        return Frame(FrameType.ADMIN, stream_id, END_STREAM if end_stream else 0,
                     write_fields([(1, STRING, self.command)]))

    @classmethod
    def from_frame(cls, frame: Frame) -> "AdminRequest":
        command = read_fields(frame.payload, _ADMIN).get(1)
        if not command:
            raise WireError(ErrorCode.BAD_REQUEST, "ADMIN has no command")
        return cls(command)  # type: ignore[arg-type]


_AUTHORIZE = {1: STRING, 2: STRING, 3: STRING, 4: BYTES, 5: U32}


@dataclass
class AuthorizeRequest:
    """AUTHORIZE: may the agent perform ``action`` now? Its JSON arguments follow in DATA."""
    action: str
    tenant: Optional[str] = None
    request_id: Optional[str] = None
    step_up_token: Optional[bytes] = field(default=None, repr=False)  # secret
    timeout_ms: Optional[int] = None

    def frame(self, stream_id: int, end_stream: bool = False) -> Frame:
        return Frame(FrameType.AUTHORIZE, stream_id, END_STREAM if end_stream else 0, write_fields([
            (1, STRING, self.action), (2, STRING, self.tenant), (3, STRING, self.request_id),
            (4, BYTES, self.step_up_token), (5, U32, self.timeout_ms)]))

    @classmethod
    def from_frame(cls, frame: Frame) -> "AuthorizeRequest":
        f = read_fields(frame.payload, _AUTHORIZE)
        action = f.get(1)
        if not action:
            raise WireError(ErrorCode.BAD_REQUEST, "AUTHORIZE has no action")
        request_id = _request_id(f.get(3), "AUTHORIZE")
        return cls(action, f.get(2), request_id, f.get(4), f.get(5))  # type: ignore[arg-type]


_DECISION = {1: STRING, 2: STRING, 3: STRING, 4: STRING}


@dataclass
class ActionDecision:
    """An allowed AUTHORIZE's answer (the DATA between RESPONSE and TRAILERS, a field list)."""
    decision_id: str
    rule: str
    argument_hash: str
    approval_id: Optional[str] = None

    def payload(self) -> bytes:
        return write_fields([(1, STRING, self.decision_id), (2, STRING, self.rule), (3, STRING, self.argument_hash),
                             (4, STRING, self.approval_id)])

    @classmethod
    def from_payload(cls, payload: bytes) -> "ActionDecision":
        f = read_fields(payload, _DECISION)
        if f.get(1) is None or f.get(2) is None or f.get(3) is None:
            raise WireError(ErrorCode.PROTOCOL_ERROR, "an AUTHORIZE decision lacks decision_id, rule or argument_hash")
        return cls(f[1], f[2], f[3], f.get(4))  # type: ignore[arg-type]


@dataclass
class WindowUpdate:
    increment: int

    def frame(self, stream_id: int) -> Frame:
        return Frame(FrameType.WINDOW_UPDATE, stream_id, 0, struct.pack(">I", self.increment))

    @classmethod
    def from_frame(cls, frame: Frame) -> "WindowUpdate":
        if len(frame.payload) != 4:
            raise WireError(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE payload must be 4 bytes")
        increment = struct.unpack(">I", frame.payload)[0]
        if not 1 <= increment <= MAX_CREDIT:
            raise WireError(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE increment must be 1 to %d" % MAX_CREDIT)
        return cls(increment)


def _same(frame: Frame) -> Frame:
    return frame


#: For each frame type, the typed decode-and-re-encode the spec defines (frames with raw payloads as they are).
REENCODE: Dict[int, Callable[[Frame], Frame]] = {
    FrameType.HELLO: lambda f: Hello.from_frame(f).frame(),
    FrameType.REQUEST: lambda f: CallRequest.from_frame(f).frame(f.stream_id, f.end_stream),
    FrameType.RESPONSE: lambda f: CallResponse.from_frame(f).frame(f.stream_id),
    FrameType.TRAILERS: lambda f: CallTrailers.from_frame(f).frame(f.stream_id),
    FrameType.ERROR: lambda f: ErrorMessage.from_frame(f).frame(f.stream_id),
    FrameType.GOAWAY: lambda f: GoAway.from_frame(f).frame(),
    FrameType.NOTICE: lambda f: CallNotice.from_frame(f).frame(f.stream_id),
    FrameType.ADMIN: lambda f: AdminRequest.from_frame(f).frame(f.stream_id, f.end_stream),
    FrameType.WINDOW_UPDATE: lambda f: WindowUpdate.from_frame(f).frame(f.stream_id),
    FrameType.AUTHORIZE: lambda f: AuthorizeRequest.from_frame(f).frame(f.stream_id, f.end_stream),
    FrameType.DATA: _same, FrameType.CANCEL: _same, FrameType.PING: _same, FrameType.PONG: _same,
    FrameType.STARTED: _same,
}
