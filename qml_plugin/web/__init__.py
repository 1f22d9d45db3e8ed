"""The local labelling page (``qml label --web``, SPEC §14): a Starlette app served by uvicorn on 127.0.0.1.

    with LabelServer("results/experiments.db") as srv:   # port 0: any free port
        print(srv.url)                                    # http://127.0.0.1:PORT/?token=...

:func:`serve` is the blocking form the CLI uses. Installed with ``pip install ".[web]"`` (from the source folder).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Mapping

import pandas as pd

from ..errors import ConfigError
from ..patterns import QMLParams

__all__ = ["LabelServer", "serve", "HOST"]

HOST = "127.0.0.1"
"""The only address the page binds: it can write to your registry, so it is never reachable from outside."""


def _uvicorn():
    try:
        import uvicorn

        from .app import create_app, new_token
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ConfigError(f'qml label --web needs the [web] extra: pip install ".[web]" from the qml-plugin source '
                          f'folder ({e})') from None
    return uvicorn, create_app, new_token


class LabelServer:
    """The labelling page for registry ``db`` in a background thread (a context manager).

    ``port=0`` picks a free port; ``token=None`` makes a random one. ``data`` maps ``SYMBOL_TIMEFRAME`` to
    the frames the patterns came from when they are not shipped datasets.
    """

    def __init__(self, db: str, *, port: int = 0, token: str | None = None,
                 data: Mapping[str, pd.DataFrame] | None = None, params: QMLParams | None = None):
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigError(f"--port = {port!r} is not allowed; allowed: an integer in 0..65535")
        uvicorn, create_app, new_token = _uvicorn()
        self.token = token or new_token()
        app = create_app(str(db), token=self.token, data=data, params=params)
        self._server = uvicorn.Server(uvicorn.Config(app, host=HOST, port=port, log_level="warning",
                                                     access_log=False, lifespan="off"))
        self._thread: threading.Thread | None = None
        self.port = port
        self._db = str(db)

    @property
    def url(self) -> str:
        """The page's address, token included: the only way in."""
        return f"http://{HOST}:{self.port}/?token={self.token}"

    def __enter__(self) -> LabelServer:
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(f"qml label --web: could not listen on {HOST}:{self.port} (port in use?)")
            time.sleep(0.02)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)


def serve(db: str, *, port: int = 8765, data: Mapping[str, pd.DataFrame] | None = None,
          params: QMLParams | None = None) -> None:
    """Serve the labelling page until Ctrl-C, printing its URL (with the token) first."""
    with LabelServer(db, port=port, data=data, params=params) as srv:
        print(f"labelling page: {srv.url}\n(W win, L loss, I ignore, S skip; Ctrl-C to stop)", flush=True)
        try:
            while srv._thread.is_alive():
                srv._thread.join(0.5)
        except KeyboardInterrupt:
            print("stopped")
