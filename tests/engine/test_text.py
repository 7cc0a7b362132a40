"""Token bytes to streamable text."""

from agentic.engine.text import TokenText


def test_a_character_split_across_tokens_comes_out_whole():
    text = TokenText()
    emoji = "😀".encode()
    assert text.push(b"caf" + "é".encode()[:1]) == "caf"
    assert text.push("é".encode()[1:] + emoji[:2]) == "é"
    assert text.push(emoji[2:]) == "😀"


def test_a_character_unfinished_when_the_reply_stops_is_never_sent():
    text = TokenText()
    pieces = [text.push(p) for p in (b"ok ", "👍".encode()[:3])]
    assert "".join(pieces) == "ok " and "\ufffd" not in "".join(pieces)


def test_bytes_that_can_never_form_a_character_are_skipped():
    text = TokenText()
    assert text.push(b"a\x91b") == "ab"  # a stray continuation byte
    assert text.push(b"\xf0\x9f") + text.push(b"c") == "c"  # a lead whose character never came
