"""Value serialization: JSON by default (orjson when installed), pluggable, optional zlib."""

from __future__ import annotations

import json
import zlib
from typing import Any, Optional, Protocol, Union

__all__ = ["JsonSerializer", "PickleSerializer", "RawSerializer", "Serializer", "Codec"]

try:  # a faster encoder when the application has one
    import orjson as _orjson  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None

#: Compressed values start with this marker; JSON text never starts with a NUL byte.
ZLIB_MARKER = b"\x00tcz1"


class Serializer(Protocol):
    """Turns Python values into bytes and back."""

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


class JsonSerializer:
    """JSON (UTF-8). Uses orjson when importable, else the standard library."""

    def __init__(self, use_orjson: Optional[bool] = None) -> None:
        self.use_orjson = (_orjson is not None) if use_orjson is None else use_orjson
        if self.use_orjson and _orjson is None:
            raise RuntimeError("orjson is not installed")

    def dumps(self, value: Any) -> bytes:
        if self.use_orjson:
            return bytes(_orjson.dumps(value))
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    def loads(self, data: bytes) -> Any:
        if self.use_orjson:
            return _orjson.loads(data)
        return json.loads(data)


class RawSerializer:
    """Bytes in, bytes out (str is encoded as UTF-8)."""

    def dumps(self, value: Any) -> bytes:
        if isinstance(value, str):
            return value.encode("utf-8")
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value)
        raise TypeError(f"RawSerializer stores bytes or str, not {type(value).__name__}")

    def loads(self, data: bytes) -> Any:
        return data


class PickleSerializer:
    """pickle: only for data you trust (a cache shared with others is not)."""

    def dumps(self, value: Any) -> bytes:
        import pickle

        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def loads(self, data: bytes) -> Any:
        import pickle

        return pickle.loads(data)  # noqa: S301


class Codec:
    """A serializer plus optional zlib compression of values over ``compress_threshold``
    bytes. A value checked by a gate is never compressed (the module must see the JSON)."""

    def __init__(self, serializer: Serializer, compress_threshold: Optional[int] = None, level: int = 6) -> None:
        self.serializer = serializer
        self.compress_threshold = compress_threshold
        self.level = level

    def encode(self, value: Any, *, gated: bool = False) -> bytes:
        data = self.serializer.dumps(value)
        if not gated and self.compress_threshold is not None and len(data) > self.compress_threshold:
            packed = ZLIB_MARKER + zlib.compress(data, self.level)
            if len(packed) < len(data):
                return packed
        return data

    def decode(self, data: Union[bytes, str]) -> Any:
        if isinstance(data, str):
            data = data.encode("utf-8")
        if data[:5] == ZLIB_MARKER:
            data = zlib.decompress(data[5:])
        return self.serializer.loads(data)
