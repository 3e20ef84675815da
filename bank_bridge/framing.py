"""Message framing on the bank TCP link: a 2-byte big-endian length header,
then the ISO 8583 message. Both the bridge and the simulator use it.

A header of zero or beyond `max_length` means the stream is out of sync (or
not ISO 8583 at all); there is no way to find the next frame, so the
receiver reports FramingError and drops the connection."""
from __future__ import annotations

import struct

DEFAULT_MAX_LENGTH = 4096
_HEADER = struct.Struct(">H")


class FramingError(ValueError):
    """The byte stream cannot be split into frames any more."""


def encode_frame(payload: bytes, max_length: int = DEFAULT_MAX_LENGTH) -> bytes:
    if not 0 < len(payload) <= max_length:
        raise FramingError(f"payload of {len(payload)} bytes outside 1..{max_length}")
    return _HEADER.pack(len(payload)) + payload


class FrameDecoder:
    """Feed bytes, get whole frames. When the stream breaks, `feed` still
    returns the frames that came before the bad header and sets `error`;
    the caller handles those frames, then drops the connection. A broken
    decoder accepts nothing more (feed raises the recorded error)."""

    def __init__(self, max_length: int = DEFAULT_MAX_LENGTH):
        if not 0 < max_length <= 0xFFFF:
            raise ValueError("max_length must be within 1..65535")
        self.max_length = max_length
        self._buffer = bytearray()
        self._error: FramingError | None = None

    def feed(self, data: bytes) -> list[bytes]:
        if self._error is not None:
            raise self._error
        self._buffer += data
        frames: list[bytes] = []
        while len(self._buffer) >= _HEADER.size:
            (length,) = _HEADER.unpack_from(self._buffer)
            if length == 0 or length > self.max_length:
                self._error = FramingError(f"frame length {length} outside 1..{self.max_length}")
                self._buffer.clear()
                break
            if len(self._buffer) < _HEADER.size + length:
                break
            frames.append(bytes(self._buffer[_HEADER.size:_HEADER.size + length]))
            del self._buffer[:_HEADER.size + length]
        return frames

    @property
    def error(self) -> FramingError | None:
        return self._error

    @property
    def buffered(self) -> int:
        return len(self._buffer)
