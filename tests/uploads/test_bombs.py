"""Zip bombs uploaded over HTTP beside another session's innocent upload (real worker processes)."""

import asyncio
import logging

import pytest

from agentic.app import create_app
from agentic.config import UploadSettings
from tests.conftest import assert_error, make_settings, new_session, upload
from tests.uploads.bombs import MIB, docx_bomb, xlsx_bomb

INNOCENT = b"Minutes of the meeting on Tuesday: the budget for the new library wing is approved. " * 3


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    """The two bombs of the report: 0.9 MB inflating to 300 MB, 8 MB inflating to 1 GB."""
    return {"report.docx": docx_bomb(300 * MIB), "figures.xlsx": xlsx_bomb(1024 * MIB)}


def worker_peaks(caplog, name: str) -> list[int]:
    return [r.worker_peak_rss_bytes for r in caplog.records if hasattr(r, "worker_peak_rss_bytes") and name in r.getMessage()]


async def test_bombs_are_refused_and_another_sessions_upload_is_read(client, settings, bombs, caplog):
    caplog.set_level(logging.INFO, logger="agentic.uploads")
    attacker = (await new_session(client))["session_id"]
    victim = (await new_session(client))["session_id"]
    *refused, innocent = await asyncio.gather(
        *(upload(client, attacker, (name, content)) for name, content in bombs.items()),
        upload(client, victim, ("minutes.txt", INNOCENT)),
    )
    for resp, name in zip(refused, bombs):
        body = await resp.json()
        assert resp.status == 413, body
        assert_error(body, "archive_too_large")
        assert body["error"]["message"].startswith(f"{name!r} was refused as a zip bomb: it would unzip to")
        peaks = worker_peaks(caplog, name)
        assert peaks and 0 < max(peaks) < 200 * MIB  # the worker never inflated it (it once took 5.8 GB)
    assert innocent.status == 201, await innocent.text()
    entry = (await innocent.json())["files"][0]
    assert entry["status"] == "ok" and entry["extracted_chars"] == len(INNOCENT)
    assert (await (await client.get(f"/sessions/{attacker}/files")).json())["files"] == []
    assert list((settings.uploads_dir / f"session_{attacker}").iterdir()) == []
    assert not list((settings.data_dir / "extracted").glob(f"session_{attacker}/*"))


async def test_a_document_too_big_for_the_workers_memory_is_kept_and_explained(aiohttp_client, tmp_path, caplog):
    """With the zip caps lifted, the address-space limit is what stops the bomb."""
    caplog.set_level(logging.INFO, logger="agentic.uploads")
    limits = UploadSettings(extract_memory_bytes=384 * MIB, max_unzipped_bytes=1 << 40, max_zip_ratio=1 << 20)
    client = await aiohttp_client(create_app(make_settings(tmp_path / "data", uploads=limits)))
    attacker = (await new_session(client))["session_id"]
    victim = (await new_session(client))["session_id"]
    bomb, innocent = await asyncio.gather(
        upload(client, attacker, ("huge.docx", docx_bomb(30 * MIB))),
        upload(client, victim, ("minutes.txt", INNOCENT)),
    )
    assert bomb.status == 201, await bomb.text()
    entry = (await bomb.json())["files"][0]
    assert entry["status"] == "unreadable" and entry["extracted_chars"] == 0
    assert entry["note"] == "reading it needs more than the 384 MiB of memory a worker may use"
    assert 0 < max(worker_peaks(caplog, "huge.docx")) < 384 * MIB
    assert (await innocent.json())["files"][0]["extracted_chars"] == len(INNOCENT)
