"""Uploads over HTTP: every type, isolation, hostile names, limits, malformed files."""

import asyncio
import logging

import aiohttp
import pytest

from agentic import keys
from agentic.app import create_app
from agentic.config import UploadSettings
from tests.conftest import assert_error, form, make_settings, new_session, upload
from tests.uploads.documents import docx_bytes, pdf_bytes, pptx_bytes, xlsx_bytes


@pytest.fixture
async def small_limits(aiohttp_client, tmp_path):
    limits = UploadSettings(max_file_bytes=1000, max_session_bytes=2500, max_files_per_session=4, max_files_per_upload=3)
    return await aiohttp_client(create_app(make_settings(tmp_path / "d", uploads=limits)))


async def test_each_type_is_stored_and_extracted(client, settings):
    sid = (await new_session(client))["session_id"]
    files = [
        ("notes.txt", "plain ZEBRAFISH text".encode()),
        ("readme.md", b"# Title\nMARKDOWNWORD"),
        ("main.py", b"def KANGAROO():\n    return 1\n"),
        ("data.csv", b"name,animal\nann,OCELOT\n"),
        ("conf.json", b'{"animal": "NARWHAL"}'),
        ("paper.pdf", pdf_bytes("The PANGOLIN is here")),
        ("sheet.xlsx", xlsx_bytes({"Zoo": [["animal", "count"], ["AXOLOTL", 3]], "Other": [["QUOKKA"]]})),
        ("deck.pptx", pptx_bytes(["First slide TAPIR", "Second slide"])),
        ("letter.docx", docx_bytes(["Dear OKAPI", "Regards"])),
    ]
    resp = await upload(client, sid, *files[:5])
    assert resp.status == 201, await resp.text()
    resp = await upload(client, sid, *files[5:])
    assert resp.status == 201, await resp.text()
    listing = {f["name"]: f for f in (await (await client.get(f"/sessions/{sid}/files")).json())["files"]}
    assert set(listing) == {name for name, _ in files}
    for name, content in files:
        entry = listing[name]
        assert entry["size"] == len(content) and entry["extracted_chars"] > 0 and entry["status"] == "ok", entry
        assert (settings.uploads_dir / f"session_{sid}" / name).read_bytes() == content
    uploads = client.app[keys.uploads_key]
    record = client.app[keys.store_key].sessions[sid]
    context, _ = await uploads.context_for(record, "animals")
    for word in ("ZEBRAFISH", "KANGAROO", "OCELOT", "NARWHAL", "PANGOLIN", "AXOLOTL", "QUOKKA", "TAPIR", "OKAPI"):
        assert word in context, word
    assert "[sheet Zoo]" in context and "[slide 1]" in context


async def test_download_is_an_attachment_with_nosniff(client):
    sid = (await new_session(client))["session_id"]
    await upload(client, sid, ("page.html", b"<script>alert(1)</script>"))
    resp = await client.get(f"/sessions/{sid}/files/page.html")
    assert resp.status == 200
    assert resp.headers["Content-Disposition"].startswith("attachment")
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Content-Type"].startswith("text/plain")
    assert await resp.read() == b"<script>alert(1)</script>"


async def test_sessions_cannot_reach_each_others_files(client):
    a = (await new_session(client))["session_id"]
    b = (await new_session(client))["session_id"]
    await upload(client, a, ("secret.txt", b"A's secret"))
    assert (await (await client.get(f"/sessions/{b}/files")).json())["files"] == []
    assert (await client.get(f"/sessions/{b}/files/secret.txt")).status == 404
    assert (await client.delete(f"/sessions/{b}/files/secret.txt")).status == 404
    for path in (f"/sessions/{b}/files/..%2Fsession_{a}%2Fsecret.txt", f"/sessions/{b}/files/%2E%2E"):
        resp = await client.get(path)
        assert resp.status in (400, 404)
        assert_error(await resp.json())
    resp = await client.get(f"/sessions/{a}/files/secret.txt", headers={"x-session-id": b})
    assert resp.status == 403
    assert (await client.get(f"/sessions/{a}/files/secret.txt")).status == 200


async def test_hostile_names_stay_inside_the_session_folder(client, settings):
    sid = (await new_session(client))["session_id"]
    folder = settings.uploads_dir / f"session_{sid}"
    hostile = ["../../etc/passwd.txt", "a/b.txt", "..secret.txt", "nul\x00byte.txt", "x" * 300 + ".txt", "ｅｖｉｌ.txt", "..\\..\\win.txt", ".bashrc.txt"]
    for name in hostile:
        resp = await upload(client, sid, (name, b"content"))
        assert resp.status == 201, (name, await resp.text())
    stored = sorted(p.name for p in folder.iterdir())
    assert len(stored) == len(hostile)
    for name in stored:
        assert "/" not in name and "\x00" not in name and not name.startswith(".") and len(name.encode()) <= 120
    assert not (settings.data_dir / "etc").exists() and not (settings.uploads_dir / "etc").exists()
    listing = (await (await client.get(f"/sessions/{sid}/files")).json())["files"]
    assert sorted(f["name"] for f in listing) == stored


async def test_same_name_is_renamed_not_overwritten(client):
    sid = (await new_session(client))["session_id"]
    await upload(client, sid, ("a.txt", b"one"))
    resp = await upload(client, sid, ("a.txt", b"two"))
    assert (await resp.json())["files"][0]["name"] == "a (2).txt"
    assert await (await client.get(f"/sessions/{sid}/files/a.txt")).read() == b"one"


async def test_same_name_uploads_at_once_each_keep_their_file(client):
    """Uploads of one name running together (each extracted before it is recorded) get a name each."""
    sid = (await new_session(client))["session_id"]
    contents = [f"upload number {i}".encode() for i in range(4)]
    responses = await asyncio.gather(*(upload(client, sid, ("a.txt", content)) for content in contents))
    names = [(await resp.json())["files"][0]["name"] for resp in responses]
    assert sorted(names) == ["a (2).txt", "a (3).txt", "a (4).txt", "a.txt"]
    for name, content in zip(names, contents):
        assert await (await client.get(f"/sessions/{sid}/files/{name}")).read() == content
    listed = (await (await client.get(f"/sessions/{sid}/files")).json())["files"]
    assert sorted(f["name"] for f in listed) == sorted(names)


async def test_refused_types(client):
    sid = (await new_session(client))["session_id"]
    for name, content in (("run.exe", b"MZ\x90\x00"), ("fake.pdf", b"not a pdf"), ("bin.txt", b"\x00\x01\x02binary"), ("fake.xlsx", b"plain text")):
        resp = await upload(client, sid, (name, content))
        assert resp.status == 415, name
        assert_error(await resp.json(), "file_type_refused")
    assert (await (await client.get(f"/sessions/{sid}/files")).json())["files"] == []


async def test_limits_give_413_and_leave_nothing_behind(small_limits):
    client = small_limits
    settings = client.app[keys.settings_key]
    sid = (await new_session(client))["session_id"]
    folder = settings.uploads_dir / f"session_{sid}"
    resp = await upload(client, sid, ("big.txt", b"x" * 1001))
    assert resp.status == 413
    assert_error(await resp.json(), "file_too_large")
    assert list(folder.iterdir()) == []
    resp = await upload(client, sid, *[(f"f{i}.txt", b"x") for i in range(4)])
    assert resp.status == 413 and (await resp.json())["error"]["code"] == "too_many_files"
    assert list(folder.iterdir()) == []  # all or nothing
    for i in range(2):
        assert (await upload(client, sid, (f"ok{i}.txt", b"y" * 1000))).status == 201
    resp = await upload(client, sid, ("over.txt", b"z" * 600))
    assert resp.status == 413 and "upload space" in (await resp.json())["error"]["message"]
    assert sorted(p.name for p in folder.iterdir()) == ["ok0.txt", "ok1.txt"]


async def test_an_upload_counts_its_own_files_once(small_limits):
    """Three files into an empty session that holds four, 1,800 bytes into 2,500 of space."""
    client = small_limits
    sid = (await new_session(client))["session_id"]
    assert (await upload(client, sid, ("a.txt", b"a" * 10), ("b.txt", b"b" * 10), ("c.txt", b"c" * 10))).status == 201
    other = (await new_session(client))["session_id"]
    assert (await upload(client, other, ("a.txt", b"a" * 900), ("b.txt", b"b" * 900))).status == 201


async def test_uploads_at_once_share_the_session_limits(small_limits):
    """Uploads running together count each other's files: no more than the session's space
    (2,500 bytes: two files of 1,000) and its number of files (four) are ever stored."""
    client = small_limits
    sid = (await new_session(client))["session_id"]
    responses = await asyncio.gather(*(upload(client, sid, (f"big{i}.txt", bytes([97 + i]) * 1000)) for i in range(4)))
    assert sorted(r.status for r in responses) == [201, 201, 413, 413]
    listed = (await (await client.get(f"/sessions/{sid}/files")).json())["files"]
    assert sum(f["size"] for f in listed) == 2000
    other = (await new_session(client))["session_id"]
    responses = await asyncio.gather(*(upload(client, other, (f"small{i}.txt", f"file {i}".encode())) for i in range(6)))
    assert sorted(r.status for r in responses) == [201] * 4 + [413] * 2
    assert len((await (await client.get(f"/sessions/{other}/files")).json())["files"]) == 4
    third = (await new_session(client))["session_id"]
    assert (await upload(client, third, *[(f"first{i}.txt", b"x") for i in range(3)])).status == 201
    responses = await asyncio.gather(*(upload(client, third, (f"last{i}.txt", b"y")) for i in range(2)))
    assert sorted(r.status for r in responses) == [201, 413]  # one room left, two uploads for it


async def test_a_refused_upload_frees_its_share_at_once(aiohttp_client, tmp_path):
    """Uploads streaming together until one passes the session's space: that one is refused
    and the others, which fit without it, are stored."""
    limits = UploadSettings(max_file_bytes=200_000, max_session_bytes=500_000)
    client = await aiohttp_client(create_app(make_settings(tmp_path / "d", uploads=limits)))
    sid = (await new_session(client))["session_id"]
    responses = await asyncio.gather(*(upload(client, sid, (f"part{i}.txt", bytes([97 + i]) * 150_000)) for i in range(4)))
    assert sorted(r.status for r in responses) == [201, 201, 201, 413]
    listed = (await (await client.get(f"/sessions/{sid}/files")).json())["files"]
    assert sum(f["size"] for f in listed) == 450_000


async def test_uploads_into_a_session_deleted_meanwhile_end_clearly(client):
    sid = (await new_session(client))["session_id"]
    uploads = [asyncio.create_task(upload(client, sid, (f"big{i}.txt", b"x" * 10_000_000))) for i in range(3)]
    await asyncio.sleep(0.05)
    assert (await client.delete(f"/sessions/{sid}")).status == 200
    for resp in await asyncio.gather(*uploads):
        assert resp.status in (201, 404), await resp.text()
        if resp.status == 404:
            assert_error(await resp.json(), "session_not_found")


async def test_a_dropped_upload_leaves_nothing_and_is_no_error(served_main, caplog):
    """A caller that hangs up halfway through its body: the server logs that it went away (no
    error traceback), keeps no file, and serves the next request."""
    caplog.set_level(logging.INFO)
    host, port = served_main
    async with aiohttp.ClientSession(f"http://{host}:{port}") as http:
        sid = (await (await http.post("/sessions", json={})).json())["session_id"]
        body, content_type = form(("half.txt", b"y" * 400_000))
        _, writer = await asyncio.open_connection(host, port)
        writer.write(f"POST /sessions/{sid}/files HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:200_000])
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()
        async with asyncio.timeout(5):
            while "client went away" not in caplog.text:
                await asyncio.sleep(0.02)
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
        assert (await (await http.get(f"/sessions/{sid}/files")).json())["files"] == []


async def test_an_upload_whose_session_is_deleted_as_it_is_recorded_leaves_nothing(client, settings, monkeypatch):
    """The delete lands after the file is in the session's folder and before it is recorded:
    the upload ends with 404 session_not_found and neither the file nor its text stays."""
    sid = (await new_session(client))["session_id"]
    sessions = client.app[keys.uploads_key].sessions
    record_file = sessions.add_file

    async def deleted_first(record, file):
        await sessions.remove(record.session_id)
        await record_file(record, file)

    monkeypatch.setattr(sessions, "add_file", deleted_first)
    resp = await upload(client, sid, ("late.txt", b"some late text"))
    assert resp.status == 404, await resp.text()
    assert_error(await resp.json(), "session_not_found")
    data = settings.data_dir
    assert not list(data.glob(f"**/*{sid}*")), list(data.glob(f"**/*{sid}*"))


async def test_non_multipart_and_empty_uploads(client):
    sid = (await new_session(client))["session_id"]
    resp = await client.post(f"/sessions/{sid}/files", data=b"raw bytes")
    assert resp.status == 415
    import aiohttp

    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("note", "no file here")
    resp = await client.post(f"/sessions/{sid}/files", data=form)
    assert resp.status == 422


async def test_malformed_pdf_is_kept_and_explained(client):
    sid = (await new_session(client))["session_id"]
    resp = await upload(client, sid, ("broken.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 9 0 R >> garbage"))
    assert resp.status == 201
    entry = (await resp.json())["files"][0]
    assert entry["status"] == "unreadable" and entry["note"] and entry["extracted_chars"] == 0
    assert (await client.get(f"/sessions/{sid}/files/broken.pdf")).status == 200


async def test_delete_file_and_session_removes_files(client, settings):
    sid = (await new_session(client))["session_id"]
    await upload(client, sid, ("a.txt", b"A"), ("b.txt", b"B"))
    resp = await client.delete(f"/sessions/{sid}/files/a.txt")
    assert resp.status == 200 and await resp.json() == {"deleted": "a.txt"}
    folder = settings.uploads_dir / f"session_{sid}"
    assert [p.name for p in folder.iterdir()] == ["b.txt"]
    assert (await client.delete(f"/sessions/{sid}/files/a.txt")).status == 404
    await client.delete(f"/sessions/{sid}")
    assert not folder.exists()


async def test_file_frames_keep_tabs_in_sync(client):
    sid = (await new_session(client))["session_id"]
    ws = await client.ws_connect("/ws", params={"session_id": sid})
    assert (await ws.receive_json())["type"] == "session"
    await upload(client, sid, ("a.txt", b"A"))
    frame = await asyncio.wait_for(ws.receive_json(), 5)
    assert frame["type"] == "files" and [f["name"] for f in frame["files"]] == ["a.txt"]
    await client.delete(f"/sessions/{sid}/files/a.txt")
    frame = await asyncio.wait_for(ws.receive_json(), 5)
    assert frame == {"type": "files", "files": []}
    await ws.close()
