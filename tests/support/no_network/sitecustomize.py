"""Loaded by every Python process of an offline test (via PYTHONPATH): any network connect is refused.

Each attempt is appended to the file named by NO_NETWORK_LOG before the error is raised, so a test
can prove that no attempt was made even when the caller swallowed the error.
"""

import os
import socket
import traceback

_LOG = os.environ.get("NO_NETWORK_LOG")
_original_connect = socket.socket.connect
_original_connect_ex = socket.socket.connect_ex


def _is_local(sock, address):
    if sock.family == getattr(socket, "AF_UNIX", None):
        return True
    host = address[0] if isinstance(address, tuple) else address
    return host in ("127.0.0.1", "::1", "localhost")


def _refuse(sock, address):
    if _LOG:
        with open(_LOG, "a", encoding="utf-8") as fh:
            fh.write(f"connect to {address!r} from pid {os.getpid()}\n{''.join(traceback.format_stack(limit=12))}\n")
    raise OSError(101, f"network access attempted in an offline test: {address!r}")


def _guarded_connect(self, address):
    if not _is_local(self, address):
        _refuse(self, address)
    return _original_connect(self, address)


def _guarded_connect_ex(self, address):
    if not _is_local(self, address):
        _refuse(self, address)
    return _original_connect_ex(self, address)


socket.socket.connect = _guarded_connect
socket.socket.connect_ex = _guarded_connect_ex
_original_getaddrinfo = socket.getaddrinfo


def _guarded_getaddrinfo(host, *args, **kwargs):
    if host not in (None, "127.0.0.1", "::1", "localhost"):
        _refuse(None, (host,))
    return _original_getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _guarded_getaddrinfo
