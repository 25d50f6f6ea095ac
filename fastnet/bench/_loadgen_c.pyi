from typing import Any

__all__ = ["run_echo", "IMPLEMENTATION_NAME"]

IMPLEMENTATION_NAME: str

def run_echo(
    host: str,
    port: int,
    *,
    conns: int = ...,
    size: int = ...,
    secs: float = ...,
    udp: bool = ...,
    pipeline: int = ...,
    udp_timeout: float = ...,
) -> dict[str, Any]: ...
