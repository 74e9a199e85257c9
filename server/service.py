"""One server process: database, recorder, monitor and the HTTP app (REST + dashboard) under uvicorn."""
from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass, field

from iworkflow.bus.base import Bus
from iworkflow.config import Settings, redact_url
from iworkflow.errors import ConfigurationError
from iworkflow.source_cache import SourceStore

from .api import ApiContext, create_app
from .auth import OriginPolicy, TokenPolicy
from .db import Database
from .monitor import Backoff, Monitor, MonitorPolicy
from .recorder import Recorder

logger = logging.getLogger(__name__)


@dataclass
class ServerOptions:
    """How this server runs, beyond the shared Settings."""

    host: str = "127.0.0.1"
    port: int = 8765
    read_token_required: bool = False
    monitor_interval: float = 1.0
    backoff: Backoff = field(default_factory=Backoff)
    self_supervised: frozenset[str] | None = None
    #: Host names clients use besides the address bound (a DNS name in front of the server)
    allowed_hosts: tuple[str, ...] = ()


class Server:
    """Recorder + monitor + REST API + dashboard, sharing one database and one bus."""

    def __init__(self, settings: Settings, bus: Bus, options: ServerOptions | None = None):
        self.settings = settings
        self.options = options or ServerOptions()
        if self.options.read_token_required and not settings.token:
            raise ConfigurationError("read_token_required is set but IWORKFLOW_TOKEN is empty: set the token the "
                                     "clients must present")
        self.bus = bus
        self.db = Database(settings.database_url)
        self.store = SourceStore(settings.store_path)
        secret = settings.secret_bytes
        self.recorder = Recorder(self.db, bus, secret, where=socket.gethostname())
        policy = MonitorPolicy(heartbeat_timeout=settings.heartbeat_timeout, max_attempt=settings.max_attempt,
                               backoff=self.options.backoff)
        if self.options.self_supervised is not None:
            policy.self_supervised = self.options.self_supervised
        self.monitor = Monitor(self.db, bus, secret, policy, interval=self.options.monitor_interval)
        self.app = create_app(ApiContext(
            db=self.db, bus=bus, secret=secret, store=self.store,
            policy=TokenPolicy(settings.token, self.options.read_token_required),
            max_source_bytes=int(settings.max_source_mb * 2**20), consumers=self.recorder.consumers,
            retry_wait=settings.heartbeat_timeout,
            origins=OriginPolicy.for_bind(self.options.host, self.options.allowed_hosts)))
        self._uvicorn = None
        self._thread: threading.Thread | None = None
        self.url = ""
        if not settings.token:
            logger.warning("IWORKFLOW_TOKEN is not set: the server accepts writes from localhost only")
        if self.app.state.origins.hosts is None:
            logger.warning("the server listens on every interface and answers any Host name: pass --allowed-host "
                           "NAME (the names clients use) to refuse DNS-rebinding requests")

    def start_background(self) -> Server:
        """Start recorder, monitor and HTTP server on threads; ``self.url`` is where it listens."""
        import uvicorn

        self.recorder.start()
        self.monitor.start()
        sock = socket.socket(socket.AF_INET6 if ":" in self.options.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.options.host, self.options.port))
        except OSError as err:
            sock.close()
            self.stop()
            raise ConfigurationError(f"cannot listen on {self.options.host}:{self.options.port}: {err.strerror}; "
                                     "pick another --port") from None
        host, port = sock.getsockname()[:2]
        display = f"[{host}]" if ":" in host else host
        self.url = f"http://{display}:{port}"
        self.recorder.where = f"{self.url} on {socket.gethostname()}"
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", access_log=False)
        self._uvicorn = uvicorn.Server(config)
        self._uvicorn.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._thread = threading.Thread(target=self._uvicorn.run, kwargs={"sockets": [sock]},
                                        name="iworkflow-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._uvicorn.started and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.02)
        if not self._uvicorn.started:
            self.stop()
            raise RuntimeError(f"the HTTP server did not start on {self.url}")
        logger.warning("iworkflow server on %s (db %s, bus %s)", self.url,
                       redact_url(self.settings.database_url), redact_url(self.bus.url))
        return self

    def wait(self) -> None:
        """Block until the HTTP server stops (Ctrl-C / SIGTERM in the CLI)."""
        if self._thread is not None:
            while self._thread.is_alive():
                self._thread.join(0.5)

    def stop(self) -> None:
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.monitor.stop()
        self.recorder.stop()
        self.db.dispose()

    def __enter__(self) -> Server:
        return self.start_background()

    def __exit__(self, *exc) -> None:
        self.stop()
