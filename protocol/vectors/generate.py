#!/usr/bin/env python3
"""Writes the protocol test vectors from PROTOCOL.md with an encoder independent of the Swift one.

Run from anywhere: python3 protocol/vectors/generate.py [DIR]  (writes the *.vector files to DIR, by default
beside this script; scripts/test.sh writes them to a temporary DIR and checks nothing changed).
"""
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TYPES = {"HELLO": 1, "REQUEST": 2, "DATA": 3, "RESPONSE": 4, "TRAILERS": 5, "ERROR": 6,
         "CANCEL": 7, "PING": 8, "PONG": 9, "GOAWAY": 10, "NOTICE": 11, "ADMIN": 12,
         "STARTED": 13, "WINDOW_UPDATE": 14, "AUTHORIZE": 15}
CODES = {"PROTOCOL_ERROR": 0x0001, "FRAME_TOO_LARGE": 0x0002, "UNKNOWN_FRAME_TYPE": 0x0003,
         "INVALID_STREAM_ID": 0x0007, "UPSTREAM_ERROR": 0x0104, "STREAM_INTERRUPTED": 0x010A,
         "SHUTTING_DOWN": 0x0009, "FORBIDDEN": 0x010C, "STEP_UP_REQUIRED": 0x010F, "STALLED": 0x000B,
         "TOO_MANY_CONNECTIONS": 0x000C, "TIMEOUT": 0x0106, "BAD_REQUEST": 0x0101, "EVENT_TOO_LARGE": 0x0114}
MAGIC = b"BKWR"
END_STREAM = 0x01


def u8(v): return struct.pack(">B", v)
def u16(v): return struct.pack(">H", v)
def u32(v): return struct.pack(">I", v)


def field(tag, value):
    return u16(tag) + u32(len(value)) + value


def fields(*pairs):
    return b"".join(field(t, v) for t, v in pairs)


def frame(type_, stream, flags, payload, length=None):
    length = len(payload) if length is None else length
    return u32(length) + u32(stream) + u8(type_) + u8(flags) + payload


VECTORS = []


def vector(name, description, type_name, stream, flags, payload, expect="ok", roundtrip=True, length=None,
           raw_type=None):
    t = raw_type if raw_type is not None else TYPES[type_name]
    VECTORS.append((name, description, type_name if raw_type is None else str(raw_type), stream, flags,
                    frame(t, stream, flags, payload, length), expect, roundtrip))


vector("01-hello-client", "Client HELLO offering versions 1..1, with an agent credential and a client name.",
       "HELLO", 0, 0, MAGIC + fields((1, u16(1)), (2, u16(1)), (3, b"agent-token-example"),
                                     (4, b"billing-worker")))
vector("02-hello-client-minimal", "Client HELLO with only the version range: no credential, no name.",
       "HELLO", 0, 0, MAGIC + fields((1, u16(1)), (2, u16(1))))
vector("03-hello-daemon", "Daemon HELLO: version 1 chosen, default limits (1 MiB frames, 8 MiB bodies, 256 calls).",
       "HELLO", 0, 0, MAGIC + fields((5, u16(1)), (6, u32(1 << 20)), (7, u32(8 << 20)), (8, u32(256)),
                                     (9, b"breakwaterd")))
vector("04-request-plain", "REQUEST on stream 1: route \"default\", not streamed, caller's request id; body follows.",
       "REQUEST", 1, 0, fields((1, b"default"), (2, u8(0)), (4, b"req-1")))
vector("05-request-streamed", "REQUEST on stream 3: route \"chat\", streamed, 30 s deadline, action and tenant.",
       "REQUEST", 3, 0, fields((1, b"chat"), (2, u8(1)), (3, u32(30000)), (5, b"invoice.create"),
                               (6, b"tenant-a")))
vector("06-request-no-body", "REQUEST flagged END_STREAM: a call with no body.",
       "REQUEST", 5, END_STREAM, fields((1, b"default"), (2, u8(0))))
vector("07-data-body-end", "Client DATA on stream 1, END_STREAM: the whole request body in one frame.",
       "DATA", 1, END_STREAM, b'{"messages":[{"role":"user","content":"Hello"}]}')
vector("08-response", "RESPONSE on stream 1: 200 from provider openai, model gpt-4o-mini, first attempt.",
       "RESPONSE", 1, 0, fields((1, u16(200)), (2, b"openai"), (3, b"gpt-4o-mini"), (4, u16(1)), (5, b"req-1")))
vector("09-data-chunk", "Daemon DATA on stream 3: one streamed chat.completion.chunk.",
       "DATA", 3, 0, b'{"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hi"}}]}')
vector("10-trailers-ok", "TRAILERS on stream 1: success, 12 prompt + 5 completion = 17 tokens.",
       "TRAILERS", 1, END_STREAM, fields((1, u8(0)), (4, u32(12)), (5, u32(5)), (6, u32(17))))
vector("11-trailers-interrupted", "TRAILERS on stream 3: the provider cut the stream after bytes reached the app.",
       "TRAILERS", 3, END_STREAM, fields((1, u8(1)), (2, u16(CODES["STREAM_INTERRUPTED"])),
                                        (3, b"provider openai ended the stream before [DONE]")))
vector("12-error-call", "ERROR on stream 5: the provider answered 503.",
       "ERROR", 5, 0, fields((1, u16(CODES["UPSTREAM_ERROR"])), (2, b"provider answered HTTP 503"), (3, u16(503)),
                             (4, b"openai")))
vector("13-error-connection", "ERROR on stream 0: a frame over the limit; the connection closes after it.",
       "ERROR", 0, 0, fields((1, u16(CODES["FRAME_TOO_LARGE"])),
                             (2, b"frame payload of 2097152 bytes exceeds the limit of 1048576")))
vector("14-cancel", "CANCEL of the call on stream 7.", "CANCEL", 7, 0, b"")
vector("15-ping", "PING with 8 opaque bytes.", "PING", 0, 0, bytes(range(1, 9)))
vector("16-pong", "PONG echoing that PING.", "PONG", 0, 0, bytes(range(1, 9)))
vector("17-goaway", "GOAWAY: calls up to stream 9 finish; later ones were not started.",
       "GOAWAY", 0, 0, fields((1, u32(9)), (2, u16(CODES["SHUTTING_DOWN"])), (3, b"daemon is shutting down")))
vector("18-request-unknown-field", "REQUEST with an extra field (tag 99) a v1 receiver must skip; "
       "re-encoding drops it, so no byte round trip.",
       "REQUEST", 9, 0, fields((1, b"default"), (99, b"future"), (2, u8(0))), roundtrip=False)
vector("27-request-step-up", "REQUEST on stream 11 for a sensitive action, carrying its step-up token.",
       "REQUEST", 11, 0, fields((1, b"default"), (2, u8(0)), (5, b"refund.issue"), (6, b"tenant-a"),
                                (7, b"step-up-token-example")))
vector("28-notice-pending-approval", "NOTICE on stream 13: the call waits for a human approval (up to 5 min).",
       "NOTICE", 13, 0, fields((1, b"pending_approval"), (2, b"apr-7f3a"),
                               (3, b"refund.issue needs an approval: breakwater approve apr-7f3a"), (4, u32(300000))))
vector("29-admin-approvals", "ADMIN on stream 15: list pending approvals; no arguments follow.",
       "ADMIN", 15, END_STREAM, fields((1, b"approvals")))
vector("30-error-step-up", "ERROR on stream 11: the action needs step-up authentication.",
       "ERROR", 11, 0, fields((1, u16(CODES["STEP_UP_REQUIRED"])),
                              (2, b"refund.issue needs step-up authentication")))
vector("32-hello-client-started-notices", "Client HELLO asking for STARTED frames (tag 10 = 1), as the shim sends.",
       "HELLO", 0, 0, MAGIC + fields((1, u16(1)), (2, u16(1)), (4, b"billing-worker"), (10, u8(1))))
vector("33-started", "STARTED on stream 5: the call's first upstream request is about to go out.",
       "STARTED", 5, 0, b"")
# Refusals.
vector("19-frame-too-large", "DATA header announcing 2 MiB: refused from the header alone.",
       "DATA", 1, 0, b"", expect="FRAME_TOO_LARGE", length=2 << 20)
vector("20-unknown-type", "A frame of type 0x42.", "", 0, 0, b"", expect="UNKNOWN_FRAME_TYPE", raw_type=0x42)
vector("31-notice-on-stream-0", "NOTICE on stream 0 (it belongs to a call).", "NOTICE", 0, 0,
       fields((1, b"pending_approval")), expect="INVALID_STREAM_ID")
vector("34-started-on-stream-0", "STARTED on stream 0 (it belongs to a call).", "STARTED", 0, 0, b"",
       expect="INVALID_STREAM_ID")
vector("35-error-stalled", "ERROR on stream 0: a frame's first bytes came, the rest not within frame_timeout.",
       "ERROR", 0, 0, fields((1, u16(CODES["STALLED"])),
                             (2, b"a frame was not whole within frame_timeout (5.0 seconds) of its first byte")))
vector("36-error-too-many-connections", "ERROR on stream 0, sent at once on connecting: the uid's connection cap.",
       "ERROR", 0, 0, fields((1, u16(CODES["TOO_MANY_CONNECTIONS"])),
                             (2, b"uid 1000 already has 1024 connections open (max_connections_per_uid 1024)")))
vector("37-error-body-timeout", "ERROR on stream 5: the call's body did not end within its deadline.",
       "ERROR", 5, 0, fields((1, u16(CODES["TIMEOUT"])),
                             (2, b"the request body was not whole within the call's deadline (30.0 seconds)")))
vector("38-request-no-route", "REQUEST with no route: that call fails (BAD_REQUEST), the connection goes on.",
       "REQUEST", 9, 0x01, fields((2, u8(0))), expect="BAD_REQUEST")
vector("39-request-id-too-long", "REQUEST whose request_id is 129 bytes: that call fails (BAD_REQUEST).",
       "REQUEST", 11, 0x01, fields((1, b"default"), (4, b"x" * 129)), expect="BAD_REQUEST")
vector("40-admin-no-command", "ADMIN with no command: that call fails (BAD_REQUEST).",
       "ADMIN", 13, 0x01, b"", expect="BAD_REQUEST")
vector("41-request-bool-two", "REQUEST whose stream flag (a bool) is 2.",
       "REQUEST", 15, 0x01, fields((1, b"default"), (2, u8(2))), expect="PROTOCOL_ERROR")
vector("42-pong-short", "PONG of 7 bytes: PING and PONG carry exactly 8.", "PONG", 0, 0, bytes(7),
       expect="PROTOCOL_ERROR")
vector("43-cancel-with-payload", "CANCEL carrying a byte: CANCEL is empty.", "CANCEL", 7, 0, b"\x00",
       expect="PROTOCOL_ERROR")
vector("44-hello-max-body-wrong-width", "Client HELLO with field 7 (max_body) of 2 bytes and no field 6.",
       "HELLO", 0, 0, MAGIC + fields((1, u16(1)), (2, u16(1)), (7, u16(9))), expect="PROTOCOL_ERROR")
vector("45-trailers-event-too-large", "Error TRAILERS on stream 3: a streamed event did not fit in one frame.",
       "TRAILERS", 3, END_STREAM, fields((1, u8(1)), (2, u16(CODES["EVENT_TOO_LARGE"])),
                                         (3, b"a streamed event was larger than max_frame_payload (1024 bytes)")))
vector("46-hello-client-stream-window", "Client HELLO asking for flow control: each call starts with 65,536 bytes of credit.",
       "HELLO", 0, 0, MAGIC + fields((1, u16(1)), (2, u16(1)), (11, u32(65536))))
vector("47-hello-daemon-stream-window", "Daemon HELLO agreeing to flow control: it echoes stream_window.",
       "HELLO", 0, 0, MAGIC + fields((5, u16(1)), (6, u32(1 << 20)), (7, u32(8 << 20)), (8, u32(256)),
                                     (9, b"breakwaterd"), (11, u32(65536))))
vector("48-window-update", "WINDOW_UPDATE on stream 5: the client consumed 32,768 bytes and grants that much more.",
       "WINDOW_UPDATE", 5, 0, u32(32768))
vector("49-window-update-zero", "WINDOW_UPDATE with an increment of 0.", "WINDOW_UPDATE", 5, 0, u32(0),
       expect="PROTOCOL_ERROR")
vector("50-window-update-short", "WINDOW_UPDATE of 3 bytes: its payload is exactly 4.", "WINDOW_UPDATE", 5, 0,
       bytes(3), expect="PROTOCOL_ERROR")
vector("51-window-update-on-stream-0", "WINDOW_UPDATE on stream 0 (credit is per call).", "WINDOW_UPDATE", 0, 0,
       u32(1024), expect="INVALID_STREAM_ID")
vector("52-window-update-past-max", "WINDOW_UPDATE with an increment of 2^31, past the most a stream may hold.",
       "WINDOW_UPDATE", 5, 0, u32(1 << 31), expect="PROTOCOL_ERROR")
vector("53-hello-stream-window-zero", "Client HELLO with a stream_window of 0.",
       "HELLO", 0, 0, MAGIC + fields((1, u16(1)), (2, u16(1)), (11, u32(0))), expect="PROTOCOL_ERROR")
ATTEMPT_1 = fields((1, b"openai"), (2, b"gpt-4o-mini"), (3, b"error_status"), (4, b"transient"), (5, u16(503)),
                   (6, u32(100)), (7, b"retried"), (9, b"HTTP 503: overloaded"))
ATTEMPT_2 = fields((1, b"openai"), (2, b"gpt-4o-mini"), (3, b"error_status"), (4, b"transient"), (5, u16(503)),
                   (7, b"moved_on"), (8, u8(1)), (9, b"HTTP 503: overloaded; moving on: retry budget refused"))
ATTEMPT_3 = fields((1, b"anthropic"), (2, b"claude-sonnet"), (3, b"breaker_open"), (7, b"gave_up"),
                   (9, b"skipped: circuit breaker open"))
vector("54-error-attempts", "ERROR on stream 5 after the route's walk: each target tried or skipped, in order.",
       "ERROR", 5, 0, fields((1, u16(CODES["UPSTREAM_ERROR"])), (2, b"all 2 target(s) of the route failed"),
                             (3, u16(503)), (4, b"openai"),
                             (6, fields((1, ATTEMPT_1), (1, ATTEMPT_2), (1, ATTEMPT_3)))))
vector("55-error-attempt-bool-two", "ERROR whose attempt says retry_budget_refused (a bool) is 2.",
       "ERROR", 5, 0, fields((1, u16(CODES["UPSTREAM_ERROR"])), (2, b"x"),
                             (6, fields((1, fields((1, b"p"), (2, b"m"), (3, b"error_status"), (8, u8(2))))))),
       expect="PROTOCOL_ERROR")
vector("56-authorize", "AUTHORIZE on stream 7: may the agent issue a refund for tenant acme? Its JSON arguments "
       "follow in DATA.", "AUTHORIZE", 7, 0, fields((1, b"refund.issue"), (2, b"acme"), (3, b"req-refund-1182")))
vector("57-authorize-no-action", "AUTHORIZE with no action: that call fails (BAD_REQUEST).",
       "AUTHORIZE", 9, END_STREAM, fields((2, b"acme")), expect="BAD_REQUEST")
vector("58-authorize-step-up-timeout", "AUTHORIZE with a step-up token and a 30 s limit on the wait, no arguments.",
       "AUTHORIZE", 11, END_STREAM, fields((1, b"user.export"), (4, b"step-up-secret"), (5, u32(30000))))
vector("21-reserved-bit", "PING with the stream id's reserved top bit set.",
       "PING", 0x80000000, 0, bytes(8), expect="PROTOCOL_ERROR")
vector("22-undefined-flag", "DATA with flag bit 0x80, which v1 does not define.",
       "DATA", 1, 0x80, b"x", expect="PROTOCOL_ERROR")
vector("23-request-on-stream-0", "REQUEST on stream 0.", "REQUEST", 0, 0, fields((1, b"default")),
       expect="INVALID_STREAM_ID")
vector("24-ping-on-call-stream", "PING on stream 1 (connection frames belong on stream 0).",
       "PING", 1, 0, bytes(8), expect="PROTOCOL_ERROR")
vector("25-hello-bad-magic", "HELLO whose payload does not start with BKWR.",
       "HELLO", 0, 0, b"HTTP" + fields((1, u16(1))), expect="PROTOCOL_ERROR")
vector("26-field-past-end", "REQUEST whose route field claims 200 bytes but carries 7.",
       "REQUEST", 1, 0, u16(1) + u32(200) + b"default", expect="PROTOCOL_ERROR")


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else HERE
    for old in os.listdir(out):
        if old.endswith(".vector"):
            os.remove(os.path.join(out, old))
    for name, description, type_name, stream, flags, data, expect, roundtrip in VECTORS:
        hexs = data.hex()
        lines = [" ".join(hexs[i:i + 2] for i in range(j, min(j + 32, len(hexs)), 2))
                 for j in range(0, len(hexs), 32)]
        with open(os.path.join(out, name + ".vector"), "w") as f:
            f.write(f"# {description}\n")
            f.write(f"frame: {type_name}\nstream: {stream}\nflags: 0x{flags:02x}\nexpect: {expect}\n")
            if not roundtrip:
                f.write("roundtrip: no\n")
            f.write("hex:\n" + "\n".join(lines) + "\n")
    print(f"wrote {len(VECTORS)} vectors")


if __name__ == "__main__":
    main()
