"""``lesionprop review`` as a process: killed with SIGKILL between two decisions and started again, it has
lost nothing; SIGTERM and Ctrl-C print the summary and write summary.json; one review per folder."""

from __future__ import annotations

import ast
import json
import re
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from lesionprop.annotations import read_annotations
from test_review import write_review_world

STARTUP_S = 60


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, Path]:
    return write_review_world(tmp_path_factory.mktemp("review_server_world"))


class Server:
    """``lesionprop review`` in a child process; ``url`` once it listens."""

    def __init__(self, data: Path, labels: Path, out: Path, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lesionprop", "review", "--annotations", str(labels), "--data", str(data),
             "--out", str(out), "--port", "0", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        # a thread reads stdout: readline() on the pipe would block once the server waits for requests
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.url = self._wait_for_url()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._queue.put(line)

    def _wait_for_url(self) -> str:
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            self.lines.append(line)
            m = re.search(r"open (http://\S+/) in a browser", line)
            if m:
                return m.group(1)
        self.proc.kill()
        raise AssertionError(f"review did not start: {''.join(self.lines)} {self.proc.stderr.read()}")

    def call(self, path: str, body: dict | None = None) -> tuple[int, object]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path.lstrip("/"), data=data, method="GET" if body is None else "POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def stop(self, sig: int) -> tuple[int, str, str]:
        """Send ``sig``, wait for the exit: (exit status, everything printed, stderr)."""
        self.proc.send_signal(sig)
        err = self.proc.stderr.read()
        self.proc.wait(timeout=60)
        self._reader.join(timeout=60)                   # stdout closed: every line is in the queue
        while not self._queue.empty():
            self.lines.append(self._queue.get_nowait())
        return self.proc.returncode, "".join(self.lines), err


def test_killed_between_two_decisions_nothing_decided_is_lost(world, tmp_path):
    data, labels = world
    out = tmp_path / "review"
    before = labels.read_bytes()
    first = Server(data, labels, out)
    try:
        items = first.call("/api/items")[1]
        a, b = items[0]["id"], items[1]["id"]
        assert first.call(f"/api/items/{a}", {"decision": "reject"}) == (200, {**items[0], "decision": "reject"})
    finally:
        first.stop(signal.SIGKILL)                      # no handler runs: only what is on disk counts
    assert first.proc.returncode == -signal.SIGKILL
    assert not (out / "summary.json").exists()

    second = Server(data, labels, out)
    try:
        assert "1 decided earlier" in "".join(second.lines)
        again = {it["id"]: it["decision"] for it in second.call("/api/items")[1]}
        assert again[a] == "reject" and sum(d is not None for d in again.values()) == 1
        assert second.call(f"/api/items/{b}", {"decision": "edit", "box": [10, 11, 30, 33]})[0] == 200
    finally:
        code, stdout, stderr = second.stop(signal.SIGTERM)
    assert code == 0, stderr
    assert re.search(r"mined\s+\d+\s+0\s+1\s+1\s+\d+\s+0\.500", stdout), stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sources"]["mined"]["rejected"] == 1 and summary["sources"]["mined"]["edited"] == 1
    reviewed = read_annotations(out / "labels_reviewed.csv")
    ann = read_annotations(labels)
    assert len(reviewed) == len(ann) - 1
    assert reviewed.boxes[reviewed.source == "reviewed"].tolist() == [[10.0, 11.0, 30.0, 33.0]]
    assert labels.read_bytes() == before


def test_one_review_per_folder_and_ctrl_c_writes_the_summary(world, tmp_path):
    data, labels = world
    out = tmp_path / "review"
    first = Server(data, labels, out)
    try:
        second = subprocess.run(
            [sys.executable, "-m", "lesionprop", "review", "--annotations", str(labels), "--data", str(data),
             "--out", str(out), "--port", "0"], capture_output=True, text=True, timeout=STARTUP_S)
        assert second.returncode == 2
        assert f"another lesionprop review writes into {out}" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
    finally:
        code, stdout, stderr = first.stop(signal.SIGINT)
    assert code == 0, stderr
    assert "precision" in stdout and (out / "summary.json").is_file()
    nothing = json.loads((out / "summary.json").read_text())["all"]
    assert nothing["undecided"] == nothing["items"] > 0 and nothing["precision"] is None


def test_a_port_in_use_is_a_one_line_error(world, tmp_path):
    data, labels = world
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        run = subprocess.run(
            [sys.executable, "-m", "lesionprop", "review", "--annotations", str(labels), "--data", str(data),
             "--out", str(tmp_path / "review"), "--port", str(port)],
            capture_output=True, text=True, timeout=STARTUP_S)
    assert run.returncode == 2
    assert f"--port {port}: another program listens on 127.0.0.1:{port}" in run.stderr


def test_the_api_example_of_the_docs_runs_as_written(world, tmp_path, capsys):
    data, labels = world
    doc = (Path(__file__).resolve().parents[1] / "docs" / "labels.md").read_text(encoding="utf-8")
    section = doc[doc.index("### The JSON API"):]
    code = re.search(r"^```python\n(.*?)^```$", section, flags=re.S | re.M).group(1)
    assert 'BASE = "http://127.0.0.1:8765"' in code
    server = Server(data, labels, tmp_path / "review")
    try:
        exec(compile(code.replace("http://127.0.0.1:8765", server.url.rstrip("/")), "docs/labels.md", "exec"), {})
        printed = capsys.readouterr().out
        ann = read_annotations(labels)
        expected = int(((ann.source == "mined") & (ann.score >= 0.95)).sum())
        assert expected > 0 and ast.literal_eval(printed.strip())["accepted"] == expected
    finally:
        server.stop(signal.SIGTERM)
