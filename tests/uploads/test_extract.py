"""Extraction limits and passage selection."""

import os
import signal
import subprocess
import sys
import time

import pytest

from agentic.uploads.extract import ExtractionFailed, Extractor
from agentic.uploads.passages import best_passages, split_passages
from agentic.uploads.types import classify


async def test_a_slow_extraction_is_killed(tmp_path, monkeypatch):
    path = tmp_path / "big.csv"
    path.write_text("a,b\n" * 10)
    extractor = Extractor(timeout_s=0.001, max_chars=1000, max_pages=10)
    with pytest.raises(ExtractionFailed, match="longer than"):
        await extractor.extract(path, "text")
    extractor.timeout_s = 30
    assert "a | b" in await extractor.extract(path, "text")  # a fresh worker took over
    extractor.close()


async def test_extraction_is_capped(tmp_path):
    path = tmp_path / "long.txt"
    path.write_text("y" * 10_000)
    extractor = Extractor(timeout_s=30, max_chars=100, max_pages=10)
    assert len(await extractor.extract(path, "text")) == 100
    extractor.close()


SERVER_WITH_A_WORKER = """
import asyncio, pathlib, sys
from agentic.uploads.extract import Extractor
path = pathlib.Path(sys.argv[1])
path.write_text("hello")
extractor = Extractor(timeout_s=30, max_chars=100, max_pages=10)
asyncio.run(extractor.extract(path, "text"))
print(*extractor._pool._processes, flush=True)
sys.stdin.read()
"""


def test_the_worker_ends_when_the_server_is_killed(tmp_path):
    server = subprocess.Popen([sys.executable, "-c", SERVER_WITH_A_WORKER, str(tmp_path / "f.txt")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    worker = int(server.stdout.readline())
    os.kill(server.pid, signal.SIGKILL)
    server.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(worker):
        time.sleep(0.1)
    assert not _alive(worker)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_passages_most_relevant_first_within_budget():
    filler = "\n\n".join(f"Paragraph {i} talks about weather and clouds." * 5 for i in range(30))
    texts = {"a.txt": filler + "\n\nThe launch code is stored under the BLUE FLAMINGO vault.\n\n" + filler}
    chosen = best_passages(texts, "where is the flamingo vault?", budget_chars=700)
    assert sum(len(p.text) for p in chosen) <= 700
    assert any("FLAMINGO" in p.text for p in chosen)


def test_split_passages_cover_the_text():
    text = "\n\n".join("word " * 50 for _ in range(10))
    passages = split_passages("f", text)
    assert all(len(p.text) <= 700 for p in passages)
    assert sum(p.text.count("word") for p in passages) == text.count("word")


def test_classify_checks_content_not_just_extension():
    assert classify("a.pdf", b"%PDF-1.7").family == "pdf"
    assert classify("a.pdf", b"hello") is None
    assert classify("a.docx", b"PK\x03\x04").family == "docx"
    assert classify("a.txt", "héllo".encode()).family == "text"
    assert classify("a.txt", b"\x00\x00") is None
    assert classify("a.exe", b"MZ") is None
    assert classify("noext", b"text") is None
