from typing import Any, Callable

from ._relay_py import EchoRelay as _PyEchoRelay
from ._relay_py import RelayStats as RelayStats

__all__ = ["serve_echo", "EchoRelay", "RelayStats"]

DEFAULT_BACKLOG: int

def serve_echo(
    host: str,
    port: int,
    *,
    udp: bool = ...,
    workers: int = ...,
    backlog: int = ...,
    ready: Callable[[tuple[str, int]], Any] | None = ...,
    duration: float | None = ...,
) -> RelayStats: ...

class EchoRelay(_PyEchoRelay): ...
