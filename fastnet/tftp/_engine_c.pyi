import socket

__all__ = ["Session", "SENDER", "RECEIVER", "DONE", "TIMEOUT", "STOP", "IO_ERROR", "CANCELLED", "SOCK_ERROR",
           "PROGRESS", "REFUSED", "FIRST_MAX"]

SENDER: str
RECEIVER: str
DONE: int
TIMEOUT: int
STOP: int
IO_ERROR: int
CANCELLED: int
SOCK_ERROR: int
PROGRESS: int
REFUSED: int
FIRST_MAX: int

class Session:
    role: str
    def __init__(
        self,
        role: str,
        sock: socket.socket,
        fd: int,
        peer: tuple,
        *,
        blksize: int,
        windowsize: int,
        timeout: float,
        retries: int,
        max_backoff: float = ...,
        first: bytes | None = ...,
        first_sent: bool = ...,
        file_start: int = ...,
        start_block: int = ...,
        strict: bool = ...,
        ack_last: bool = ...,
        oack_reack: bool = ...,
        report_interval: float = ...,
        zero_copy: bool = ...,
    ) -> None: ...
    def run(self) -> int: ...
    def cancel(self) -> None: ...
    def close(self) -> None: ...
    @property
    def outcome(self) -> int: ...
    @property
    def bytes(self) -> int: ...
    @property
    def blocks(self) -> int: ...
    @property
    def retransmissions(self) -> int: ...
    @property
    def next_block(self) -> int: ...
    @property
    def error_errno(self) -> int: ...
    @property
    def stop_packet(self) -> bytes | None: ...
