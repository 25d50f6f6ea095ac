"""The catalogue of the notes' examples: where each is in the notes, and the command that runs it.

``python -m fastnet`` prints it as text; :func:`as_markdown` gives the table of ``docs/examples.md``.
Sections and headings are written as in the notes (``Python 笔记 3（网络相关）``).
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Example", "EXAMPLES", "commands", "as_text", "as_markdown"]


class Example(NamedTuple):
    section: str  #: the notes' ``###`` heading
    heading: str  #: the ``####``/``#####`` heading under it ("" when the section is the example)
    gloss: str  #: the heading in English
    command: str  #: what runs it
    shows: str  #: one line on what it shows


EXAMPLES: tuple[Example, ...] = (
    Example("UDP", "客户端收发数据", "client: send and receive", "python -m fastnet.udp client",
            "sendto() each line, print the reply recvfrom() returns"),
    Example("UDP", "服务端", "server", "python -m fastnet.udp server",
            "bind() a port, receive one datagram, print it with its sender"),
    Example("UDP", "echo 服务器", "echo server", "python -m fastnet.udp echo",
            "send every datagram back, counting them (fast: python -m fastnet.epoll_echo --udp)"),
    Example("UDP", "聊天室", "chat room", "python -m fastnet.udp chat",
            "print every datagram with ctime() and its sender"),
    Example("UDP", "广播", "broadcast", "python -m fastnet.udp broadcast",
            "SO_BROADCAST to 127.255.255.255 (loopback broadcast), print every reply"),
    Example("TFTP", "", "TFTP download client", "python -m fastnet.tftp get",
            "a read request, then DATA/ACK in lock step until a short block"),
    Example("TCP", "服务器", "server", "python -m fastnet.tcp server",
            'socket/bind/listen/accept, receive, answer "thank you !"'),
    Example("TCP", "客户端", "client", "python -m fastnet.tcp client",
            "connect, send a line, print the answer"),
    Example("TCP", "模拟聊天 客户端", "chat simulation: client", "python -m fastnet.tcp chat-client",
            "send a line, print the answer, in turn, until an empty line"),
    Example("TCP", "模拟聊天 服务端", "chat simulation: server", "python -m fastnet.tcp chat-server",
            "print each line received, answer with the next line of input"),
    Example("Listen 的队列长度", "服务端", "listen backlog: server", "python -m fastnet.tcp backlog-server",
            "listen(n), then accept slowly: the queue fills"),
    Example("Listen 的队列长度", "客户端", "listen backlog: client", "python -m fastnet.tcp backlog-client",
            "open N connections; on Linux n+1 complete, then connect() stalls"),
    Example("并发服务器", "单进程服务器", "single-process server", "python -m fastnet.servers single",
            "one client at a time (SO_REUSEADDR): the next one waits"),
    Example("并发服务器", "多进程服务器", "multi-process server", "python -m fastnet.servers process",
            "a forked process per client"),
    Example("并发服务器", "多进程服务器 2", "thread-per-client server", "python -m fastnet.servers thread",
            "a thread per client"),
    Example("并发服务器", "单进程服务器-非堵塞模式 服务端", "non-blocking server", "python -m fastnet.servers nonblocking",
            "non-blocking sockets polled in one process (fixed: NameError, 100% CPU when idle)"),
    Example("并发服务器", "单进程服务器-非堵塞模式 客户端", "non-blocking server: client",
            "python -m fastnet.servers nonblocking-client", "N connections sending random numbers"),
    Example("select 版 - TCP 服务器", "select 回显服务器", "select echo server", "python -m fastnet.servers select",
            "echo with select(); a line on stdin stops it (fast: python -m fastnet.epoll_echo)"),
    Example("select 版 - TCP 服务器", "另外一个服务器（包含 writeList）", "select server with a write list",
            "python -m fastnet.servers select-writelist",
            "per-client queues and a write list (fixed: per-client addresses, closed clients dropped)"),
    Example("epoll 版 - TCP 服务器", "", "epoll TCP server", "python -m fastnet.servers epoll",
            "edge-triggered select.epoll (fixed: read until EAGAIN, forget closed connections)"),
    Example("epoll 版 - TCP 服务器", "", "epoll echo server in C", "python -m fastnet.epoll_echo",
            "the same idea, fast: an epoll echo server in C, level-triggered (--udp for UDP)"),
    Example("协程", "简单实现", "simple implementation", "python -m fastnet.coroutines generators",
            "two generators taking turns with next()"),
    Example("协程", "greenlet 版", "greenlet version", "python -m fastnet.coroutines greenlet",
            "two greenlets switching to each other"),
    Example("协程", "gevent 版 / gevent 的使用", "using gevent", "python -m fastnet.coroutines gevent-spawn",
            "spawn and join greenlets, print getcurrent(): they run one after another"),
    Example("协程", "gevent 版 / gevent 切换执行", "gevent switching", "python -m fastnet.coroutines gevent-switch",
            "gevent.sleep() hands over: the greenlets take turns"),
    Example("协程", "gevent 版 / gevent 并发下载器", "gevent concurrent downloader",
            "python -m fastnet.coroutines gevent-download", "monkey.patch_all(), then download URLs concurrently"),
    Example("协程", "gevent 版 / gevent 版 - TCP 服务器", "gevent TCP server", "python -m fastnet.coroutines gevent-server",
            "an echo server with a greenlet per client (fast: python -m fastnet.epoll_echo)"),
)


def commands() -> list[str]:
    """Every command of the catalogue, in order."""
    return [example.command for example in EXAMPLES]


def _where(example: Example) -> str:
    return f"{example.section} / {example.heading}" if example.heading else example.section


def as_text() -> str:
    """The catalogue for a terminal: grouped by the notes' sections."""
    lines = [
        "fastnet: every example of the notes 'Python 笔记 3（网络相关）', runnable in Python 3.",
        "Each command takes --help; servers listen on 127.0.0.1 unless given --all-interfaces.",
    ]
    section = None
    for example in EXAMPLES:
        if example.section != section:
            section = example.section
            lines += ["", section]
        title = example.heading or example.section
        lines.append(f"  {title} ({example.gloss})")
        lines.append(f"      {example.command}")
        lines.append(f"      {example.shows}")
    return "\n".join(lines)


def as_markdown() -> str:
    """The catalogue as a Markdown table (``docs/examples.md``, the README)."""
    rows = [
        "| Notes section | Heading | In English | Command | What it shows |",
        "|---|---|---|---|---|",
    ]
    for example in EXAMPLES:
        shows = example.shows.replace("|", "\\|")
        rows.append(
            f"| {example.section} | {example.heading or '—'} | {example.gloss} | `{example.command}` | {shows} |"
        )
    return "\n".join(rows)
