"""One daemon per socket path, from its start until its runner (the NPU's owner) is gone.

A draining daemon closes its listeners first and stops its runner last; a new daemon started in
between must not bind the socket and start a second runner beside it. An exclusive `flock` on
`<socket>.lock`, held for the daemon's whole life, makes the new one wait for the old one (or refuse
clearly when it does not finish in time). The kernel drops the lock if the old daemon is killed.
"""
from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
from pathlib import Path

log = logging.getLogger("rk.daemon")


class InstanceBusy(RuntimeError):
    """Another daemon still holds this socket path."""


class InstanceLock:
    def __init__(self, socket_path: Path) -> None:
        self.socket = socket_path
        self.path = socket_path.with_name(socket_path.name + ".lock")
        self._fd: int | None = None

    def _serving(self) -> bool:
        """The holder still accepts connections (a live daemon, not one that is draining)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            try:
                probe.connect(str(self.socket))
            except OSError:
                return False
        return True

    def acquire(self, wait_s: float) -> None:
        """Take the lock, waiting up to `wait_s` for a daemon that is shutting down to let go."""
        if not self.path.parent.exists():
            self.path.parent.mkdir(mode=0o700, parents=True)
            os.chmod(self.path.parent, 0o700)  # mkdir's mode is filtered by the umask
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + wait_s
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                if self._serving():
                    os.close(fd)
                    raise InstanceBusy(f"another rk daemon (pid {holder}) is already serving {self.socket} "
                                       "(stop it, or pick another --socket)") from None
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise InstanceBusy(f"the rk daemon (pid {holder}) that is shutting down still holds {self.socket} "
                                       "and its runner; stop it first, or pick another --socket") from None
                if not told:
                    log.info("waiting up to %.0f s for the rk daemon (pid %s) that is shutting down", wait_s, holder)
                    told = True
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None
