"""What one client process holds open and how long it waits: nothing it forwards can hang it."""

from __future__ import annotations

import aiohttp

HTTP_POOL = 256  # connections to the main server for plain HTTP, shared by the proxy and page ports
WEBSOCKET_POOL = 4096  # relayed WebSockets at once, on their own pool so they never starve HTTP
SOCKETS_PER_SESSION = 16  # relayed WebSockets of one session at once (a person's open tabs)
CONNECT_WAIT_S = 10.0  # for a free pooled connection and its TCP connect together

# No total timeout for what is forwarded: streams (server-sent events, long replies) last as
# long as they last. Small exchanges the proxy reads itself (listing, create, liveness) have one.
FORWARD_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=CONNECT_WAIT_S, sock_connect=5.0)
EXCHANGE_TIMEOUT = aiohttp.ClientTimeout(total=30.0, connect=CONNECT_WAIT_S, sock_connect=5.0)
