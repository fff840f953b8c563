"""The local subnet's "web": the corpus served as HTML pages on 127.0.0.1.

    pages = PageServer(port=8093)
    pages.start()        # a daemon thread; returns once the socket listens
    pages.base_url       # "http://127.0.0.1:8093" — what miners put in MINER_WEB_BASE_URL
    pages.stop()         # shuts the server down and joins the thread

It runs inside the launcher's process (a standard-library threading server),
so the demo and the tests get real URLs that the API and the validator fetch
without another process to manage. ``GET /`` lists every page; each page is
at ``shared.corpus.pages.page_path(passage)``.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

from shared.corpus import Corpus
from shared.corpus.pages import page_path, render_index, render_page


def build_site() -> dict[str, bytes]:
    passages = Corpus.load().passages
    site = {page_path(p): render_page(p).encode() for p in passages}
    site["/"] = render_index(passages).encode()
    return site


class _Handler(BaseHTTPRequestHandler):
    site: dict[str, bytes] = {}

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        body = self.site.get(self.path.split("?", 1)[0])
        if body is None:
            self.send_error(404, "no such page")
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        pass  # quiet: the tests and the demo fetch pages all the time


class PageServer:
    def __init__(self, port: int, host: str = "127.0.0.1"):
        self.host = host
        self.port = port
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        handler = type("PageHandler", (_Handler,), {"site": build_site()})
        self._server = ThreadingHTTPServer((self.host, self.port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="web-pages", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
