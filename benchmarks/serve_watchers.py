"""What do many watchers of one run folder cost ``measure serve``? The issue #32 load test.

    PYTHONPATH=. python benchmarks/serve_watchers.py          # 50 watchers of a 373-record run, 20 s
    PYTHONPATH=. python benchmarks/serve_watchers.py --no-saved-metrics --watchers 20 --hold 10

It builds a finished run folder of ``--records`` records (the committed baseline's 280 records,
then as many of them again as needed with renamed problem ids: the default run has 373) with the
``metrics.json`` and ``report.html`` that ``measure run`` writes at its end (``--no-saved-metrics``
leaves them out, so that the server computes the Findings from the records: the worst case), starts
``measure serve`` on it (loopback, a free port, no warm-up), and then:

1. measures the idle server: its RSS and its CPU over 2 s;
2. opens ``--watchers`` streams of ``/api/runs/events`` on the folder, as that many open Watch
   tabs, each reading everything the server sends; notes when each first receives the Findings;
3. for ``--hold`` seconds requests ``GET /`` every 0.1 s (each with a 10 s timeout; a timeout
   counts as 10 s) and samples the server's RSS every 0.25 s;
4. closes every stream and measures how long the server takes to be idle again: the first
   1-second window, after the last watcher left, in which it used under 5% of a core (given up
   after ``--idle-limit`` seconds).

Prints one line per figure: ``GET /`` latency (p50, p95, max, timeouts), RSS before / peak /
after and the peak growth, the seconds from the last watcher leaving to idle, and the seconds
to each watcher's first Findings (median, max). Linux only (it reads /proc); loopback only.
Everything is bounded: at most ``--watchers`` (<= 200) connections, ``--hold`` (<= 120) seconds.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from measure.report.summary import saved_provenance, write_reports

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "reports" / "baselines" / "smollm2"
FOLDER_ID = "bench"
GET_TIMEOUT = 10.0
FINDINGS_MARK = b'data: {"type": "findings"'
TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def make_run_folder(root: Path, records: int, saved_metrics: bool) -> Path:
    """A finished run folder of ``records`` records built from the baseline's."""
    lines = (BASELINE / "samples.jsonl").read_bytes().splitlines()
    out, copy = [], 0
    while len(out) < records:
        for line in lines:
            if len(out) == records:
                break
            record = json.loads(line)
            if copy:
                record["problem_id"] = f"{record['problem_id']}_copy{copy}"
                record["key"] = f"{record['problem_id']}/{record['condition']}/{record['point']}"
            out.append(json.dumps(record, separators=(",", ":")))
        copy += 1
    folder = root / FOLDER_ID
    folder.mkdir(parents=True)
    (folder / "samples.jsonl").write_text("\n".join(out) + "\n", encoding="utf-8")
    shutil.copy(BASELINE / "run.json", folder / "run.json")
    if saved_metrics:  # as `measure run` ends: metrics.json and report.html of all the records
        provenance, skipped, notes = saved_provenance(folder)
        settings = provenance.get("settings") or {}
        write_reports(folder, [json.loads(line) for line in out], provenance, skipped, warnings=notes,
                      alpha=settings.get("alpha", 0.05), seed=settings.get("seed", 0))
    return folder


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def rss_mb(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE / 2**20


def start_server(runs: Path, model: str) -> tuple[subprocess.Popen, str, str | None]:
    """`measure serve` on a free loopback port; (process, base URL, launch token or None)."""
    model_flag = [] if model == "embedded" else ["--model", model]
    process = subprocess.Popen(
        [sys.executable, "-m", "measure.cli", "serve", "--port", "0", "--runs-dir", str(runs), "--no-warm-up",
         *model_flag], cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line and process.poll() is not None:
            break
        match = re.search(r"open (http://127\.0\.0\.1:\d+/)(?:\?token=(\w+))?", line)
        if match:
            threading.Thread(target=lambda: [None for _ in process.stderr], daemon=True).start()
            return process, match.group(1), match.group(2)
    process.kill()
    raise SystemExit("measure serve did not start within 300 s")


class Watcher(threading.Thread):
    """One open Watch tab: a stream of the folder's events, read until told to stop."""

    def __init__(self, address: tuple[str, int], headers: dict, stop: threading.Event, opened: float):
        super().__init__(daemon=True)
        self.address, self.headers, self.stop, self.opened = address, headers, stop, opened
        self.findings_after: float | None = None
        self.error: str | None = None
        self.bytes = 0

    def run(self) -> None:
        # A raw socket: http.client's response cannot be read again after a read timed out.
        try:
            with socket.create_connection(self.address, timeout=30) as sock:
                head = "".join(f"{name}: {value}\r\n" for name, value in self.headers.items())
                sock.sendall(f"GET /api/runs/events?id={FOLDER_ID} HTTP/1.1\r\nHost: {self.address[0]}:"
                             f"{self.address[1]}\r\n{head}\r\n".encode())
                sock.settimeout(0.5)
                seen = b""
                while not self.stop.is_set():
                    try:
                        data = sock.recv(65536)
                    except TimeoutError:
                        continue
                    if not data:
                        self.error = "the server closed the stream"
                        return
                    if not self.bytes and not data.startswith(b"HTTP/1.1 200"):
                        self.error = data[:200].decode(errors="replace")
                        return
                    self.bytes += len(data)
                    seen = seen[-64:] + data
                    if self.findings_after is None and FINDINGS_MARK in seen:
                        self.findings_after = time.monotonic() - self.opened
        except OSError as error:
            self.error = f"{type(error).__name__}: {error}"
        # Leaving the block closed the socket: the tab is closed.


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--watchers", type=int, default=50)
    parser.add_argument("--hold", type=float, default=20.0, help="seconds the watchers stay open")
    parser.add_argument("--records", type=int, default=373)
    parser.add_argument("--model", default="embedded", help="the served model (default the embedded SmolLM2)")
    parser.add_argument("--no-saved-metrics", action="store_true",
                        help="leave metrics.json out: the server computes the Findings from the records")
    parser.add_argument("--idle-limit", type=float, default=90.0, help="seconds to wait for the CPU to go idle")
    args = parser.parse_args()
    if not (1 <= args.watchers <= 200 and 0 < args.hold <= 120 and 1 <= args.records <= 5000):
        parser.error("--watchers 1..200, --hold up to 120 s, --records 1..5000")

    with tempfile.TemporaryDirectory(prefix="serve-watchers-") as tmp:
        runs = Path(tmp)
        make_run_folder(runs, args.records, saved_metrics=not args.no_saved_metrics)
        process, url, token = start_server(runs, args.model)
        try:
            return measure(process, url, token, args)
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def measure(process: subprocess.Popen, url: str, token: str | None, args) -> int:
    pid = process.pid
    parts = urlsplit(url)
    address = (parts.hostname, parts.port)
    headers = {"Authorization": f"token {token}"} if token else {}
    time.sleep(1.0)
    rss_before, cpu_start = rss_mb(pid), cpu_seconds(pid)
    time.sleep(2.0)
    idle_cpu = (cpu_seconds(pid) - cpu_start) / 2.0

    stop = threading.Event()
    opened = time.monotonic()
    watchers = [Watcher(address, headers, stop, opened) for _ in range(args.watchers)]
    for watcher in watchers:
        watcher.start()

    rss_peak, sampling = rss_before, threading.Event()

    def sample_rss():
        nonlocal rss_peak
        while not sampling.is_set():
            rss_peak = max(rss_peak, rss_mb(pid))
            time.sleep(0.25)

    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    latencies, timeouts = [], 0
    end = time.monotonic() + args.hold
    while time.monotonic() < end:
        connection = http.client.HTTPConnection(*address, timeout=GET_TIMEOUT)
        began = time.monotonic()
        try:
            connection.request("GET", "/", headers=headers)
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise SystemExit(f"GET / answered {response.status}")
            latencies.append(time.monotonic() - began)
        except TimeoutError:
            timeouts += 1
            latencies.append(GET_TIMEOUT)
        finally:
            connection.close()
        time.sleep(max(0.0, 0.1 - (time.monotonic() - began)))

    stop.set()
    for watcher in watchers:
        watcher.join(timeout=5)
    left = time.monotonic()
    sampling.set()
    sampler.join()
    # Idle again: the first whole second after the last watcher left using under 5% of a core.
    idle_after, previous, previous_at = None, cpu_seconds(pid), time.monotonic()
    while time.monotonic() - left < args.idle_limit:
        time.sleep(1.0)
        now, now_at = cpu_seconds(pid), time.monotonic()
        if (now - previous) / (now_at - previous_at) < 0.05:
            idle_after = previous_at - left
            break
        previous, previous_at = now, now_at
    rss_after = rss_mb(pid)

    findings = [w.findings_after for w in watchers if w.findings_after is not None]
    errors = [w.error for w in watchers if w.error]
    ms = [1000 * value for value in latencies]
    saved = "without metrics.json" if args.no_saved_metrics else "with the metrics.json the run wrote"
    print(f"run folder: {args.records} records, {saved}; {args.watchers} watchers held {args.hold:g} s; "
          f"model {args.model}")
    print(f"GET /: {len(ms)} requests, p50 {percentile(ms, 0.5):.0f} ms, p95 {percentile(ms, 0.95):.0f} ms, "
          f"max {max(ms):.0f} ms, {timeouts} timed out (> {GET_TIMEOUT:g} s)")
    print(f"server RSS: {rss_before:.0f} MB idle, {rss_peak:.0f} MB peak, {rss_after:.0f} MB after; "
          f"growth {rss_peak - rss_before:.0f} MB")
    print(f"server CPU: {100 * idle_cpu:.0f}% of a core idle before; back under 5% "
          + (f"{idle_after:.1f} s after the last watcher left" if idle_after is not None
             else f"not within {args.idle_limit:g} s after the last watcher left"))
    if findings:
        print(f"Findings reached {len(findings)}/{args.watchers} watchers: median {statistics.median(findings):.1f} s, "
              f"max {max(findings):.1f} s after opening")
    else:
        print(f"Findings reached 0/{args.watchers} watchers within {args.hold:g} s")
    if errors:
        print(f"watcher errors ({len(errors)}): {errors[:3]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
