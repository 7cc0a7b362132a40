"""Stop strings across token boundaries and multi-byte characters (the matcher alone)."""

import pytest

from agentic.engine.stops import StopMatcher
from agentic.engine.text import TokenText
from agentic.errors import Invalid
from agentic.sessions.models import MAX_STOPS, ChatSettings, checked_stops


def feed(matcher: StopMatcher, pieces: list[str]) -> list[str]:
    return [matcher.push(piece) for piece in pieces]


def test_a_stop_inside_one_piece_ends_the_reply_before_it():
    m = StopMatcher(["STOP"])
    assert feed(m, ["Hello STOP world", "more"]) == ["Hello ", ""]
    assert m.matched == "STOP" and m.flush() == ""


def test_a_stop_across_pieces_is_held_back_never_sent():
    m = StopMatcher(["STOP"])
    assert feed(m, ["Hel", "lo S", "TO", "P!", "after"]) == ["Hel", "lo ", "", "", ""]
    assert m.matched == "STOP"


def test_held_text_that_turns_out_no_stop_is_sent_whole_and_in_order():
    m = StopMatcher(["STOP"])
    out = feed(m, ["ab S", "T", "x", "y ST"])
    assert out == ["ab ", "", "STx", "y "]
    assert m.matched is None
    assert "".join(out) + m.flush() == "ab STxy ST"


def test_overlapping_starts_find_the_first_occurrence():
    m = StopMatcher(["aab"])
    assert feed(m, ["a", "a", "ab"]) == ["", "", "a"]
    assert m.matched == "aab"


def test_the_earliest_of_several_stops_wins():
    m = StopMatcher(["world", "lo w"])
    assert feed(m, ["hello world"]) == ["hel"]
    assert m.matched == "lo w"


def test_multi_byte_characters_split_across_tokens():
    """Token pieces are bytes; TokenText makes whole characters of them before the matcher sees them."""
    reply = "Voilà 🙂✓ fin"
    data = reply.encode()
    text, m = TokenText(), StopMatcher(["🙂✓"])
    shown = [m.push(text.push(data[i:i + 1])) for i in range(len(data))]  # one byte per token
    assert "".join(shown) == "Voilà "
    assert m.matched == "🙂✓"
    for piece in shown:
        piece.encode()  # never half a character


def test_a_multi_byte_stop_that_does_not_complete_is_released():
    text, m = TokenText(), StopMatcher(["é!"])
    data = "café au lait".encode()
    shown = "".join(m.push(text.push(data[i:i + 2])) for i in range(0, len(data), 2)) + m.flush()
    assert shown == "café au lait" and m.matched is None


def test_no_stops_passes_everything():
    m = StopMatcher([])
    assert feed(m, ["a", "b"]) == ["a", "b"] and m.flush() == ""


def test_checked_stops_accepts_a_string_or_a_list():
    assert checked_stops(None) == ()
    assert checked_stops("###") == ("###",)
    assert checked_stops(["a", "b", "a"]) == ("a", "b")
    for bad in (5, [""], ["x" * 201], [1], ["s"] * (MAX_STOPS + 1), {"a": 1}):
        with pytest.raises(Invalid):
            checked_stops(bad)


def test_session_settings_keep_stop_strings():
    settings = ChatSettings().updated({"stop": ["User:", "###"]})
    assert settings.stop == ("User:", "###")
    assert ChatSettings(**settings.to_json()).stop == ("User:", "###")
    assert ChatSettings(**{**settings.to_json(), "stop": ["x"]}).stop == ("x",)  # as read back from JSON
