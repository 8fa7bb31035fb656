"""redis-tcache: the Python client of tcache, the tagged application cache module for Redis.

``TCache`` (sync) and ``AsyncTCache`` (asyncio) are cache objects; ``TCacheModule`` gives
the raw commands in redis-py's module-command shape.
"""

from .aio import AsyncTCache
from .cache import TCache
from .commands import FetchReply, TCacheCommands, TCacheModule, TCachePipeline, register_callbacks
from .exceptions import GateRejected, TCacheError, Unconfirmed
from .serializer import Codec, JsonSerializer, PickleSerializer, RawSerializer, Serializer

__all__ = [
    "AsyncTCache",
    "Codec",
    "FetchReply",
    "GateRejected",
    "JsonSerializer",
    "PickleSerializer",
    "RawSerializer",
    "Serializer",
    "TCache",
    "TCacheCommands",
    "TCacheError",
    "TCacheModule",
    "TCachePipeline",
    "Unconfirmed",
    "register_callbacks",
]

__version__ = "0.1.0"
