"""`rk serve`: wire the service to its listeners, run until a signal, then shut down in stages.

SIGINT/SIGTERM: stop accepting, refuse waiting jobs (`shutting_down`), let the running job finish within
the grace period, then abort it, stop the runner and only then remove the socket and let go of the
instance lock. A second SIGINT skips the grace period.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import signal
import time
from typing import Any

from aiohttp import web

from rk.daemon.agentcheck import AgentServer
from rk.daemon.families.registry import FAMILIES
from rk.daemon.http.app import build_app
from rk.daemon.http.middleware import OneLineErrors
from rk.daemon.instance import InstanceBusy, InstanceLock
from rk.daemon.listener import Sniffer, SocketInUse, open_tcp, open_unix
from rk.daemon.runner.proxy import RunnerPort
from rk.daemon.service import Service
from rk.daemon.settings import Settings, parse_hostport

log = logging.getLogger("rk.daemon")


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


class Daemon:
    def __init__(self, settings: Settings, runner: RunnerPort | None = None) -> None:
        self.settings = settings
        self.service = Service.build(settings, runner)
        self.servers: list[asyncio.AbstractServer] = []
        self.line_tasks: set[asyncio.Task[None]] = set()
        self.stopping = asyncio.Event()
        self.forced = asyncio.Event()
        self.http: web.AppRunner | None = None
        self.agent = AgentServer(self.service.scheduler)

    async def start(self) -> None:
        t0 = time.perf_counter()
        s = self.settings
        self.http = web.AppRunner(build_app(self.service, FAMILIES), access_log=None, handle_signals=False,
                                  logger=OneLineErrors(logging.getLogger("rk.daemon.http"), {}),
                                  keepalive_timeout=s.idle_timeout_s, shutdown_timeout=s.shutdown_grace_s,
                                  handler_cancellation=True)  # a client that hangs up cancels its job
        await self.http.setup()
        http_server = self.http.server
        assert http_server is not None

        def factory(tcp: bool) -> Any:
            return lambda: Sniffer(self.service, http_server, tcp, self.line_tasks)

        self.servers.append(await open_unix(s.socket, factory(False), s.socket_group))
        where = [str(s.socket)]
        if s.tcp:
            host, port = parse_hostport(s.tcp)
            if not is_loopback(host) and not s.api_key:
                log.warning("!!! TCP on %s:%d without an API key: anyone on the network can use this daemon. "
                            "Set --api-key or RK_API_KEY.", host, port)
            server = await open_tcp(host, port, factory(True))
            self.servers.append(server)
            port = server.sockets[0].getsockname()[1]  # the kernel's choice for port 0
            self.service.tcp_address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            where.append(f"http://{self.service.tcp_address}")
        if s.agent_port:
            self.service.agent_addr = await self.agent.start(*parse_hostport(s.agent_port))
            where.append(f"agent-check {self.service.agent_addr}")
        self.scheduler_task = asyncio.create_task(self.service.scheduler.run())
        self.runner_task = asyncio.create_task(self._warm_runner())
        log.info("rk daemon ready in %.0f ms on %s (models: %s)", (time.perf_counter() - t0) * 1000,
                 " and ".join(where), ", ".join(m.name for m in self.service.store.list()) or "none")

    async def _warm_runner(self) -> None:
        """Start the runner process early so the first job does not pay for its start-up."""
        with contextlib.suppress(Exception):
            await self.service.runner.start()

    def on_signal(self) -> None:
        if self.stopping.is_set():
            log.warning("second signal: stopping now")
            self.forced.set()
        self.stopping.set()

    async def shutdown(self) -> None:
        log.info("shutting down: no new connections; waiting jobs are refused")
        for srv in self.servers:
            srv.close()
        sched = self.service.scheduler
        grace = asyncio.create_task(sched.shutdown(self.settings.shutdown_grace_s))
        forced = asyncio.create_task(self.forced.wait())
        await asyncio.wait({grace, forced}, return_when=asyncio.FIRST_COMPLETED)
        if not grace.done():
            grace.cancel()
            sched.stop_running("the daemon was stopped")
            await self.service.runner.kill()
            await asyncio.sleep(0.05)  # the scheduler turns the dead runner into the jobs' final events
        forced.cancel()
        await asyncio.sleep(0)  # let connection tasks write the final events
        for task in list(self.line_tasks):
            task.cancel()
        self.scheduler_task.cancel()
        self.runner_task.cancel()
        if self.http is not None:
            await self.http.cleanup()
        await self.service.runner.kill()
        self.agent.close()  # last: balancers saw `drain` through the grace period
        self.settings.socket.unlink(missing_ok=True)  # only now: nothing of this daemon uses the NPU any more


async def serve(settings: Settings) -> int:
    lock = InstanceLock(settings.socket)
    try:
        await asyncio.to_thread(lock.acquire, settings.shutdown_grace_s + 10)
    except InstanceBusy as e:
        log.error("%s", e)
        return 1
    try:
        daemon = Daemon(settings)
        try:
            await daemon.start()
        except SocketInUse as e:
            log.error("%s", e)
            return 1
        except OSError as e:
            log.error("cannot listen: %s", e)
            return 1
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, daemon.on_signal)
        await daemon.stopping.wait()
        await daemon.shutdown()
        return 0
    finally:
        lock.release()


def raise_fd_limit() -> None:
    """Each client holds a socket: lift the soft open-files limit (often 1024) to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536, hard))


def run(settings: Settings) -> int:
    """Blocking entry point: uvloop when installed, plain asyncio otherwise."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s rk %(levelname)s %(message)s")
    if settings.quiet:
        logging.getLogger("rk.access").setLevel(logging.WARNING)
    raise_fd_limit()
    try:
        import uvloop

        return uvloop.run(serve(settings))
    except ImportError:
        return asyncio.run(serve(settings))
