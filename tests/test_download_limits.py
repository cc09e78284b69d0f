"""Downloads that never end: a deadline per file and a size cap per file, then the documented
fallback to mnist-mini with a warning. Real HTTP servers on 127.0.0.1, bounded in time.

lgdram 0.1 had only a per-read timeout: a server sending one byte every two seconds, or zeros
forever, kept `lgdram gen-data` waiting (and filling the cache folder) without end.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from helpers import leftovers
from lgdram_cli.data import download as download_module
from lgdram_cli.data import sources
from lgdram_cli.data.sources import SourceFallbackWarning, load_digits


class Server:
    """A misbehaving mirror: `behaviour(handler)` answers every GET."""

    def __init__(self, behaviour) -> None:
        self.stop_event = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                try:
                    behaviour(self, server.stop_event)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/mnist/"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def close(self) -> None:
        self.stop_event.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def slow_drip(handler: BaseHTTPRequestHandler, stop: threading.Event) -> None:
    """A plausible length, then one byte every 2 s: no single read ever times out (20 s)."""
    handler.send_response(200)
    handler.send_header("Content-Length", "1000")
    handler.end_headers()
    for _ in range(1000):
        if stop.wait(2):
            return
        handler.wfile.write(b"\0")
        handler.wfile.flush()


def endless_zeros(handler: BaseHTTPRequestHandler, stop: threading.Event) -> None:
    """No length, and zeros as fast as the client takes them, forever."""
    handler.send_response(200)
    handler.end_headers()
    block = b"\0" * 65536
    while not stop.is_set():
        handler.wfile.write(block)


def huge_length(handler: BaseHTTPRequestHandler, stop: threading.Event) -> None:
    """Announces 100 GB."""
    handler.send_response(200)
    handler.send_header("Content-Length", str(100 << 30))
    handler.end_headers()
    handler.wfile.write(b"\0" * 1024)


def silent(handler: BaseHTTPRequestHandler, stop: threading.Event) -> None:
    """Headers, then nothing at all."""
    handler.send_response(200)
    handler.send_header("Content-Length", "1000")
    handler.end_headers()
    handler.wfile.flush()
    stop.wait(30)


@pytest.fixture
def serve() -> Iterator:
    servers: list[Server] = []

    def start(behaviour) -> Server:
        servers.append(Server(behaviour))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


@pytest.mark.parametrize("behaviour", [slow_drip, endless_zeros, huge_length, silent], ids=lambda b: b.__name__)
def test_a_mirror_that_never_finishes_falls_back_to_mnist_mini_in_time(serve, monkeypatch, isolated_env, behaviour):
    server = serve(behaviour)
    monkeypatch.setenv("LGDRAM_MNIST_MIRRORS", server.url)
    monkeypatch.setenv("LGDRAM_DOWNLOAD_DEADLINE", "3")
    assert download_module.TIMEOUT_S >= 20  # the per-read timeout alone would never end these
    started = time.monotonic()
    result: dict = {}

    def fetch() -> None:  # in a thread: a download that hangs fails this test instead of hanging it
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result["digits"] = load_digits("mnist", "train")
        result["warnings"] = [w for w in caught if issubclass(w.category, SourceFallbackWarning)]

    worker = threading.Thread(target=fetch, daemon=True)
    worker.start()
    worker.join(timeout=20)
    elapsed = time.monotonic() - started
    assert not worker.is_alive(), "the download did not give up within 20 s"
    assert result["digits"].source == "mnist-mini"
    assert elapsed < 10, f"took {elapsed:.1f} s"
    assert result["warnings"], "no fallback warning"
    message = str(result["warnings"][0].message)
    assert "mnist-mini" in message
    expected = {"slow_drip": "longer than 3 s", "endless_zeros": "more than", "huge_length": "announces",
                "silent": "longer than 3 s"}[behaviour.__name__]
    assert expected in message, message
    cached = isolated_env / "lgdram" / "mnist"
    assert leftovers(cached) == [] if cached.exists() else True, "no partial or temp file in the cache"


def test_the_size_cap_follows_the_known_file_size(serve, tmp_path):
    """A file a little over its published size is cut off at the cap (size + 1 % + 64 KiB)."""
    body = b"\1" * (300_000)

    def oversized(handler: BaseHTTPRequestHandler, stop: threading.Event) -> None:
        handler.send_response(200)
        handler.end_headers()  # no Content-Length: the cap is enforced on what arrives
        handler.wfile.write(body)

    server = serve(oversized)
    with pytest.raises(download_module.DownloadUnavailable, match="sent more than the 166"):
        download_module.download("x.gz", [server.url], tmp_path / "x.gz", "0" * 32, size=100_000)
    assert leftovers(tmp_path) == []


def test_every_downloaded_file_has_a_known_size():
    assert set(sources.MNIST_SIZES) == set(sources.MNIST_MD5)
    assert set(sources.FASHION_SIZES) == set(sources.FASHION_MD5)
    for path in (Path(__file__).parents[2] / "shared" / "data" / "mnist").glob("*.gz"):
        assert path.stat().st_size == sources.MNIST_SIZES[path.name], path.name


def test_a_bad_deadline_setting_is_one_line(monkeypatch):
    from lgdram_cli.errors import UserError

    monkeypatch.setenv("LGDRAM_DOWNLOAD_DEADLINE", "soon")
    with pytest.raises(UserError, match="LGDRAM_DOWNLOAD_DEADLINE"):
        download_module.deadline_s()
