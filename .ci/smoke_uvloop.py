"""The ``uvloop`` extra is enough for the production setup the docs recommend:
``hypercorn -k uvloop`` serves the example app, its jobs fire on uvloop's loop and the
REST API answers. Run by .ci/extras.sh in a venv that has only ``quart-sched[uvloop]``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    port = free_port()
    hypercorn = Path(sys.executable).with_name("hypercorn")
    server = subprocess.Popen(
        [str(hypercorn), "-k", "uvloop", "-b", f"127.0.0.1:{port}", "run:app"],
        cwd=EXAMPLES,
        env={**os.environ, "EXAMPLE_INTERVAL": "0.3"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        info = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/scheduler/jobs") as reply:
                    info = json.load(reply)
                break
            except OSError:
                time.sleep(0.2)
        assert info is not None, "hypercorn -k uvloop never answered"
        assert sorted(job["id"] for job in info) == ["job1", "tick"], info
        time.sleep(1.5)  # about five fires of each job
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=30)
    lines = output.splitlines()
    assert lines.count("3") >= 2 and lines.count("tick") >= 2, output
    print("smoke uvloop: hypercorn -k uvloop ran the example's jobs and answered")


if __name__ == "__main__":
    main()
