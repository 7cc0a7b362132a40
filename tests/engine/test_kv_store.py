"""Saved KV state: RAM first, disk written and read by the store's own thread."""

import threading

from agentic.engine.kv_store import KvStore


def loaded_signal(store: KvStore) -> threading.Event:
    event = threading.Event()
    store.on_loaded = lambda _sid: event.set()
    return event


def test_a_state_is_in_ram_at_once_and_on_disk_after_the_write(tmp_path):
    store = KvStore(tmp_path, "model-a")
    store.put("s1", [1, 2, 3], b"state-bytes")
    assert store.in_ram("s1") and store.ready("s1")
    store.flush()
    on_disk = store.read("s1")
    assert on_disk.tokens == [1, 2, 3] and on_disk.state == b"state-bytes"
    taken = store.take("s1")
    assert taken.state == b"state-bytes" and not store.in_ram("s1") and store.take("s1") is None
    store.close()


def test_beyond_the_ram_budget_written_states_leave_ram_and_come_back_off_thread(tmp_path):
    store = KvStore(tmp_path, "model-a", ram_budget_bytes=10)
    loaded = loaded_signal(store)
    store.put("s1", [1], b"x" * 8)
    store.put("s2", [2], b"y" * 8)
    store.flush()
    assert not store.in_ram("s1") and store.in_ram("s2")  # the older one left RAM once written
    assert store.ready("s1") is False  # a read has started
    assert loaded.wait(5) and store.ready("s1")  # read back for a turn: it stays, whatever the budget
    store.put("s3", [3], b"z" * 8)
    store.flush()
    assert store.in_ram("s1") and store.take("s1").state == b"x" * 8
    assert store.ready("never-saved")  # nothing to wait for
    store.close()


def test_a_state_from_another_model_or_a_dropped_session_is_not_used(tmp_path):
    store = KvStore(tmp_path, "model-a")
    store.put("s1", [1], b"a")
    store.put("s2", [2], b"b")
    store.drop("s2")
    store.close()
    again = KvStore(tmp_path, "model-a")
    assert again.read("s1").tokens == [1] and again.read("s2") is None and again.ready("s2")
    again.close()
    other = KvStore(tmp_path, "model-b")
    assert other.read("s1") is None
    loaded = loaded_signal(other)
    assert other.ready("s1") is False and loaded.wait(5) and other.ready("s1") and other.take("s1") is None
    other.close()


def test_a_drop_then_a_new_state_keeps_the_new_one(tmp_path):
    store = KvStore(tmp_path, "model-a")
    store.put("s1", [1], b"old")
    store.drop("s1")
    store.put("s1", [2], b"new")
    store.flush()
    assert store.read("s1").state == b"new"
    store.close()

