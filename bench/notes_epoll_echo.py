"""The notes' "epoll 版 - TCP 服务器", in Python 3, echoing: the baseline of bench/echo.py.

Same structure as the note: a listening socket registered EPOLLIN|EPOLLET, dicts of connections
and addresses keyed by fd, one epoll.poll() loop.  Two changes make it a correct echo server:
every ready socket is drained until EAGAIN (edge-triggered epoll only reports new data once --
the note's single accept()/recv(1024) loses clients and bytes under load), and what is received is
sent back.  Prints "READY <port>"; with --verbose also the note's messages.

    python bench/notes_epoll_echo.py [PORT] [--verbose]
"""

import errno
import select
import signal
import socket
import sys

port = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 7788
verbose = "--verbose" in sys.argv
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))

# 创建套接字
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
# 设置可以重复使用绑定的信息
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
# 绑定本机信息 (loopback only here)
s.bind(("127.0.0.1", port))
# 变为被动
s.listen(1024)
s.setblocking(False)

# 创建一个epoll对象, 将创建的套接字添加到epoll的事件监听中
epoll = select.epoll()
epoll.register(s.fileno(), select.EPOLLIN | select.EPOLLET)

connections = {}
addresses = {}

print("READY", s.getsockname()[1], flush=True)


def offline(fd):
    epoll.unregister(fd)
    connections[fd].close()
    if verbose:
        print("%s---offline---" % str(addresses[fd]))
    del connections[fd]
    del addresses[fd]


try:
    # 循环等待客户端的到来或者对方发送数据
    while True:
        epoll_list = epoll.poll()
        for fd, events in epoll_list:
            # 如果是socket创建的套接字被激活
            if fd == s.fileno():
                while True:
                    try:
                        conn, addr = s.accept()
                    except BlockingIOError:
                        break
                    if verbose:
                        print("有新的客户端到来%s" % str(addr))
                    conn.setblocking(False)
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    connections[conn.fileno()] = conn
                    addresses[conn.fileno()] = addr
                    # 向 epoll 中注册 连接 socket 的 可读 事件
                    epoll.register(conn.fileno(), select.EPOLLIN | select.EPOLLET)
            elif events & select.EPOLLIN:
                conn = connections[fd]
                while True:
                    try:
                        recvData = conn.recv(65536)
                    except BlockingIOError:
                        break
                    except OSError:
                        offline(fd)
                        break
                    if len(recvData) > 0:
                        if verbose:
                            print("recv:%s" % recvData)
                        try:
                            view = memoryview(recvData)
                            while view:
                                try:
                                    view = view[conn.send(view):]
                                except BlockingIOError:
                                    select.select([], [conn], [], 1.0)
                        except OSError:
                            offline(fd)
                            break
                    else:
                        offline(fd)
                        break
except KeyboardInterrupt:
    pass
