"""`make demo`'s entry point: it comes up, serves the dashboard and a report, prints the
URL, and Ctrl-C (SIGINT) stops everything it started."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from refapp import harness

HEAVY = os.environ.get("TCACHE_APP_SKIP_HEAVY") != "1"


@pytest.mark.skipif(not HEAVY, reason="run once (TCACHE_APP_SKIP_HEAVY=1)")
def test_demo_serves_and_stops_on_ctrl_c() -> None:
    env = dict(os.environ, TCACHE_APP_GEN_DELAY="0.2", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "refapp.demo"], cwd=harness.APP_DIR, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
    lines: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 90
        url = None
        while url is None:
            m = re.search(r"dashboard:\s+(http://127\.0\.0\.1:\d+)/", "".join(lines))
            url = m.group(1) if m else None
            assert proc.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "no URL printed:\n" + "".join(lines)
            time.sleep(0.05)
        dirs = re.findall(r"in (/\S+/tcache-app-(?:pg|srv)-\w+)\)", "".join(lines))
        assert len(dirs) == 2, "".join(lines)
        page = httpx.get(url + "/", timeout=30)
        assert page.status_code == 200 and "race-chart" in page.text
        report = httpx.get(url + "/reports/4", timeout=60)
        assert report.status_code == 200 and report.json()["store_id"] == 4
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, "".join(lines)
        reader.join(10)
        assert "demo: stopping" in "".join(lines)
        with pytest.raises(httpx.TransportError):
            httpx.get(url + "/healthz", timeout=2)
        for d in dirs:
            assert not Path(d).exists(), f"{d} left behind"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
