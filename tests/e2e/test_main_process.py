"""The main server as a real process: restart, kill -9, expiry during downtime."""

from __future__ import annotations

import time

import pytest

from tests.e2e.deployment import Deployment, free_port, http


def test_everything_acknowledged_survives_kill_9_and_restart(deployment):
    out = deployment.deploy("main").stdout
    assert "http://localhost:" in out and "/docs" in out
    status, session = http("POST", f"{deployment.url}/sessions", {"client_id": "durable", "system_prompt": "Be brief."})
    assert status == 201
    sid = session["session_id"]
    status, reply = http("POST", f"{deployment.url}/sessions/{sid}/messages", {"content": "Hello there", "max_tokens": 6})
    assert status == 200, reply
    status, _ = http("PATCH", f"{deployment.url}/sessions/{sid}", {"title": "Kept", "settings": {"temperature": 0.3}})
    assert status == 200
    deployment.kill9()  # no chance to flush anything

    deployment.deploy("main")
    status, again = http("GET", f"{deployment.url}/sessions/{sid}")
    assert status == 200
    assert again["title"] == "Kept" and again["settings"]["temperature"] == 0.3 and again["system_prompt"] == "Be brief."
    _, messages = http("GET", f"{deployment.url}/sessions/{sid}/messages")
    assert [m["content"] for m in messages["messages"]] == ["Hello there", reply["message"]["content"]]

    deployment.deploy("stop", "main")  # graceful this time
    deployment.deploy("main")
    _, listing = http("GET", f"{deployment.url}/sessions")
    assert listing["stats"]["total_created"] == 1 and listing["stats"]["total_messages"] == 2
    status, _ = http("POST", f"{deployment.url}/sessions/{sid}/messages", {"content": "Still there?", "max_tokens": 4})
    assert status == 200


def test_sessions_that_expire_while_the_server_is_down_are_cleaned_up(tmp_path):
    deployment = Deployment(tmp_path / "data", free_port(), SESSION_TIMEOUT="0.02")  # 1.2 s
    try:
        deployment.deploy("main")
        _, session = http("POST", f"{deployment.url}/sessions", {})
        sid = session["session_id"]
        folder = deployment.data_dir / "uploads" / f"session_{sid}"
        folder.mkdir(parents=True)
        (folder / "left.txt").write_text("x")
        deployment.deploy("stop", "main")
        time.sleep(1.5)
        deployment.deploy("main")
        status, body = http("GET", f"{deployment.url}/sessions/{sid}")
        assert status == 404 and body["error"]["code"] == "session_not_found"
        for _ in range(50):
            if not folder.exists():
                break
            time.sleep(0.1)
        assert not folder.exists()
        _, listing = http("GET", f"{deployment.url}/sessions")
        assert listing["stats"]["expired"] == 1
    finally:
        deployment.stop_all()
