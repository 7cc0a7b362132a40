"""Session creation limits: a rate per caller (address plus proxy client id) with Retry-After,
a wider rate per address, and MAX_SESSIONS in all; the WebSocket's automatic creation obeys both."""

from __future__ import annotations

import aiohttp
import pytest

from agentic import keys
from agentic.api.limits import ADDRESS_FACTOR, RateLimiter
from agentic.app import create_app
from tests.conftest import assert_error, make_settings, new_session


async def limited(aiohttp_client, tmp_path, **limits):
    return await aiohttp_client(create_app(make_settings(tmp_path / "d", **limits)))


def test_bucket_refills_at_its_rate():
    clock = [0.0]
    bucket = RateLimiter(per_minute=60, burst=2, clock=lambda: clock[0])
    assert [bucket.take("a"), bucket.take("a")] == [0.0, 0.0]
    assert bucket.take("a") == pytest.approx(1.0)
    assert bucket.take("b") == 0.0  # another caller has its own bucket
    clock[0] += 0.5
    assert bucket.take("a") == pytest.approx(0.5)
    clock[0] += 0.5
    assert bucket.take("a") == 0.0
    clock[0] += 3600
    assert [bucket.take("a"), bucket.take("a"), bucket.take("a") > 0] == [0.0, 0.0, True]  # never more than the burst


async def test_a_loop_of_creates_gets_429_with_retry_after(aiohttp_client, tmp_path):
    client = await limited(aiohttp_client, tmp_path, session_create_rate=6.0, session_create_burst=5)
    statuses = []
    for _ in range(20):
        resp = await client.post("/sessions")
        statuses.append(resp.status)
        if resp.status == 429:
            assert_error(await resp.json(), "rate_limited")
            assert 1 <= int(resp.headers["Retry-After"]) <= 10
    assert statuses == [201] * 5 + [429] * 15
    assert client.app[keys.store_key].stats.total_created == 5
    # another proxy client on the same address has its own allowance...
    assert (await client.post("/sessions", headers={"x-client-id": "client-2"})).status == 201
    # ...and the automatic creation of the WebSocket counts too, refused before the upgrade
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/ws")
    assert refused.value.status == 429
    # using existing sessions is not limited
    sid = next(iter(client.app[keys.store_key].sessions))
    assert (await client.get(f"/sessions/{sid}")).status == 200


async def test_made_up_client_ids_share_their_address_allowance(aiohttp_client, tmp_path):
    client = await limited(aiohttp_client, tmp_path, session_create_rate=6.0, session_create_burst=2)
    created = 0
    for i in range(100):
        resp = await client.post("/sessions", headers={"x-client-id": f"made-up-{i}"})
        created += resp.status == 201
    assert created == 2 * ADDRESS_FACTOR


async def test_max_sessions_caps_the_total(aiohttp_client, tmp_path):
    client = await limited(aiohttp_client, tmp_path, max_sessions=2)
    first = (await new_session(client))["session_id"]
    await new_session(client)
    resp = await client.post("/sessions")
    assert resp.status == 429
    assert_error(await resp.json(), "too_many_sessions")
    ws = await client.ws_connect("/ws")  # the cap is known only after the upgrade: an error frame, then 1013
    frame = await ws.receive_json()
    assert frame == {"type": "error", "code": "too_many_sessions", "message": frame["message"]}
    await ws.receive()
    assert ws.close_code == aiohttp.WSCloseCode.TRY_AGAIN_LATER
    assert (await client.delete(f"/sessions/{first}")).status == 200
    await new_session(client)
