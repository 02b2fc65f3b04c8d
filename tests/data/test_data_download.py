"""Download path against a local HTTP server on 127.0.0.1 (no other network)."""

import hashlib
import http.server
import threading
from functools import partial
from pathlib import Path

import pytest
from real_data import REAL_DATA

from measure.data.download import FileEntry, download_file, sha256_of, verify_file
from measure.data.errors import DataError

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "data"
SOURCE = FIXTURES / "pairs_legacy.jsonl"  # any small real file; the shared data is not needed


class _Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/truncated/"):
            body = (Path(self.directory) / self.path.removeprefix("/truncated/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))  # promise all of it ...
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])  # ... and send half
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(FIXTURES)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _entry(url, sha256=None):
    data = SOURCE.read_bytes()
    return FileEntry(dataset="test", path="test/pairs.jsonl", url=url,
                     sha256=sha256 or hashlib.sha256(data).hexdigest(), bytes=len(data), transform=None)


def _leftovers(cache: Path):
    return sorted(p.name for p in cache.rglob("*") if p.is_file())


def test_good_file_is_downloaded_and_verified(server, tmp_path):
    entry = _entry(f"{server}/{SOURCE.name}")
    path = download_file(entry, tmp_path, timeout=10)
    assert path == tmp_path / "test" / "pairs.jsonl" and verify_file(path, entry) is None
    assert sha256_of(path) == entry.sha256 and _leftovers(tmp_path) == ["pairs.jsonl"]
    assert download_file(entry, tmp_path, timeout=10) == path  # already verified: no refetch


def test_wrong_checksum_keeps_nothing(server, tmp_path):
    with pytest.raises(DataError, match="failed verification"):
        download_file(_entry(f"{server}/{SOURCE.name}", sha256="0" * 64), tmp_path, timeout=10)
    assert _leftovers(tmp_path) == []


def test_truncated_file_keeps_nothing(server, tmp_path):
    with pytest.raises(DataError):
        download_file(_entry(f"{server}/truncated/{SOURCE.name}"), tmp_path, timeout=10)
    assert _leftovers(tmp_path) == []


def test_missing_url_keeps_nothing(server, tmp_path):
    with pytest.raises(DataError, match="download of"):
        download_file(_entry(f"{server}/absent.jsonl"), tmp_path, timeout=10)
    assert _leftovers(tmp_path) == []


def test_manifest_matches_the_shared_files():
    from measure.data.download import load_manifest, manifest_entries

    shared = REAL_DATA
    if not shared.is_dir():
        pytest.skip(f"real datasets not found at {shared}")
    manifest = load_manifest()
    for dataset in manifest["datasets"]:
        for entry in manifest_entries(manifest, dataset):
            assert verify_file(shared / entry.path, entry) is None, entry.path
            assert entry.url.startswith("https://")
