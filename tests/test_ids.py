import uuid

import pytest

from agentic.errors import Malformed
from agentic.ids import new_session_id, parse_session_id
from agentic.web.errors import http_status


def test_new_ids_are_uuid4():
    assert uuid.UUID(new_session_id()).version == 4


@pytest.mark.parametrize("raw", ["", "abc", "../../etc/passwd", "0" * 36, "{12345678-1234-1234-1234-123456789012}",
                                 "12345678123412341234123456789012", "12345678-1234-1234-1234-12345678901\x00", None])
def test_malformed_ids_are_refused(raw):
    with pytest.raises(Malformed) as exc:
        parse_session_id(raw)
    assert http_status(exc.value) == 400


def test_ids_are_canonicalised():
    sid = new_session_id()
    assert parse_session_id(sid.upper()) == sid
