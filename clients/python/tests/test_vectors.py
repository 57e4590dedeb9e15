"""Every byte-exact example in protocol/vectors/: decoded with the spec's checks, re-encoded to the same bytes,
and each `expect: CODE` vector refused with that code."""
from __future__ import annotations

import pathlib
from typing import Dict, List

import pytest

from breakwater._wire import REENCODE, FrameDecoder, FrameType, WireError, code_name

VECTORS = pathlib.Path(__file__).resolve().parents[3] / "protocol" / "vectors"


def load() -> List[Dict[str, object]]:
    out = []
    for path in sorted(VECTORS.glob("*.vector")):
        v: Dict[str, object] = {"name": path.stem, "roundtrip": True}
        hex_lines: List[str] = []
        in_hex = False
        for line in path.read_text().splitlines():
            if line.startswith("#"):
                continue
            if in_hex:
                hex_lines.append(line)
                continue
            key, _, value = line.partition(":")
            value = value.strip()
            if key == "hex":
                in_hex = True
            elif key == "roundtrip":
                v["roundtrip"] = value != "no"
            else:
                v[key] = value
        v["bytes"] = bytes.fromhex("".join(hex_lines))
        out.append(v)
    return out


ALL = load()


def test_the_vectors_are_there() -> None:
    assert len(ALL) >= 50


@pytest.mark.parametrize("v", ALL, ids=[str(v["name"]) for v in ALL])
def test_vector(v: Dict[str, object]) -> None:
    data = v["bytes"]
    assert isinstance(data, bytes)
    decoder = FrameDecoder(max_payload=1 << 20)
    decoder.feed(data)
    try:
        frame = decoder.next()
        assert frame is not None, "the decoder wanted more bytes"
        encoded = REENCODE[frame.type](frame).encode()
    except WireError as e:
        assert code_name(e.code) == v["expect"], str(e)
        return
    assert v["expect"] == "ok", "should have been refused with %s" % v["expect"]
    assert FrameType(frame.type).name == v["frame"]
    assert frame.stream_id == int(str(v["stream"]))
    assert frame.flags == int(str(v["flags"]), 16)
    assert decoder.buffered == 0
    if v["roundtrip"]:
        assert encoded == data, "re-encoding changed the bytes"
