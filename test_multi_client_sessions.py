"""The usage guide's isolation check, run by hand against a live deployment:
`python test_multi_client_sessions.py [--clients 2 3]` (see tests/test_multi_client_sessions.py)."""

from tests.test_multi_client_sessions import main

if __name__ == "__main__":
    raise SystemExit(main())
