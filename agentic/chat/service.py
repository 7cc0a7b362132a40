"""Runs chat turns for sessions and fans their frames out to every watcher of the session."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Awaitable, Callable, TypeVar

from agentic.chat.subscribers import Subscriber
from agentic.chat.turns import Turn
from agentic.engine.engine import Engine
from agentic.errors import Busy, Conflict, Invalid, NotFound, SessionGone, TooLarge, Unavailable
from agentic.engine.types import Done, EngineBusy, EngineNotReady, Failed, Queued, Sampling, Token, TurnEvent, TurnRequest
from agentic.sessions.lifecycle import SessionManager
from agentic.sessions.models import Message, SessionRecord
from agentic.uploads.passages import FileContext, Passage, render, sources_json

log = logging.getLogger("agentic.chat")

# The text of a session's files, for its prompts (None: it has none).
FileContextProvider = Callable[[SessionRecord], Awaitable[FileContext | None]]
# Called with each finished turn's usage (metrics count tokens and turns from it).
UsageListener = Callable[[dict[str, Any]], None]
T = TypeVar("T")


@dataclass(frozen=True)
class TurnOptions:
    """What one turn asks for beyond the session's settings; None takes the session's own."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] | None = None


def _pick(asked: T | None, default: T) -> T:
    return default if asked is None else asked


def _stops(options: TurnOptions, record: SessionRecord) -> tuple[str, ...]:
    return _pick(options.stop, record.settings.stop)


def session_gone_frame() -> dict[str, Any]:
    """A turn's last frame when its session was deleted (or expired) before the reply was stored."""
    gone = SessionGone("the session was deleted during its turn")
    return {"type": "error", "code": gone.code, "message": gone.message}


def _side_state(session_id: str) -> str:
    """The engine's name for the model state of a session's side turns (kept apart from its conversation's)."""
    return f"{session_id}-side"


def _attach_files(files: FileContext, stored: list[Message], history: list[dict[str, str]]) -> tuple[list[Passage], list[Passage]]:
    """Give each earlier question the file parts it brought (its reply's usage.files_added)
    and the newest the parts it needs that the conversation lacks: (all parts, those added)."""
    given: list[Passage] = []
    for question, reply, entry in zip(stored, stored[1:], history):
        if question.role == "user" and reply.role == "assistant" and reply.usage:
            parts = files.recall(reply.usage.get("files_added"))
            entry["content"] = _with_files(parts, entry["content"])
            given += parts
    added = files.choose(history[-1]["content"], [p.ref for p in given])
    history[-1]["content"] = _with_files(added, history[-1]["content"])
    return given + added, added


def _with_files(parts: list[Passage], question: str) -> str:
    text = render(parts)
    return f"{text}\n\n{question}" if text else question


@dataclass
class SessionHub:
    subscribers: set[Subscriber] = field(default_factory=set)
    current: Turn | None = None
    last: Turn | None = None


class ChatService:
    def __init__(self, sessions: SessionManager, engine: Engine, max_message_chars: int) -> None:
        self.sessions = sessions
        self.engine = engine
        self.max_message_chars = max_message_chars
        self.file_context: FileContextProvider | None = None
        self._usage_listeners: list[UsageListener] = []
        self._hubs: dict[str, SessionHub] = {}  # by channel: a session's id, or a side turn's own
        self._pending_writes: set[asyncio.Task] = set()
        self._side_turns: dict[str, set[Turn]] = {}
        self._waiting = 0  # side turns and OpenAI requests waiting for their session's running turn

    def on_turn_finished(self, listener: UsageListener) -> None:
        self._usage_listeners.append(listener)

    def hub(self, session_id: str) -> SessionHub:
        hub = self._hubs.get(session_id)
        if hub is None:
            hub = self._hubs[session_id] = SessionHub()
        return hub

    # -- watchers ------------------------------------------------------------------
    def _turn(self, session_id: str, message_id: str) -> Turn | None:
        hub = self._hubs.get(session_id)
        for turn in (hub.current, hub.last) if hub else ():
            if turn is not None and turn.message_id == message_id:
                return turn
        return None

    def can_resume(self, session_id: str, message_id: str) -> bool:
        return self._turn(session_id, message_id) is not None

    def subscribe(self, session_id: str, subscriber: Subscriber, resume: tuple[str, int] | None = None) -> None:
        """Watch a session. With `resume`, first replay what that turn sent after the given seq;
        without, replay the turn in progress (if any) from its start, so a new tab sees all of it."""
        hub = self.hub(session_id)
        if resume is not None:
            turn, after = self._turn(session_id, resume[0]), resume[1]
        else:
            turn, after = hub.current, -1
        for frame in turn.frames_after(after) if turn is not None else ():
            subscriber.send(frame)
        hub.subscribers.add(subscriber)

    def watch(self, turn: Turn, subscriber: Subscriber) -> None:
        """Send one turn's frames from its first (all of them, if it has ended already), then what
        its channel sends live."""
        for frame in turn.frames:
            subscriber.send(frame)
        self.hub(turn.channel).subscribers.add(subscriber)

    def unsubscribe(self, session_id: str, subscriber: Subscriber) -> None:
        hub = self._hubs.get(session_id)
        if hub is None:
            return
        hub.subscribers.discard(subscriber)
        turn = hub.current
        if not hub.subscribers and turn is not None and turn.cancel_when_unwatched and not turn.done:
            log.info("last watcher left, stopping the turn", extra={"session_id": session_id})
            turn.cancel()
        if not hub.subscribers and hub.current is None and (hub.last is None or hub.last.side):
            self._hubs.pop(session_id, None)

    def broadcast(self, session_id: str, frame: dict[str, Any]) -> None:
        hub = self._hubs.get(session_id)
        if hub is not None:
            for subscriber in list(hub.subscribers):
                subscriber.send(frame)

    async def session_changed(self, record: SessionRecord) -> None:
        self.broadcast(record.session_id, {"type": "session", "session": record.to_json(self.sessions.timeout_s)})

    # -- turns ---------------------------------------------------------------------
    def check_message(self, content: Any) -> str:
        if not isinstance(content, str) or not content.strip():
            raise Invalid("invalid_field", "'content' must be a non-empty string")
        if len(content) > self.max_message_chars:
            raise TooLarge("message_too_large", f"message is longer than {self.max_message_chars} characters")
        return content

    async def start_turn(self, record: SessionRecord, content: Any, options: TurnOptions = TurnOptions(), reply_to: str | None = None,
                         cancel_when_unwatched: bool = True) -> Turn:
        """The session's next turn: the message is stored, and the reply streams to every watcher."""
        content = self.check_message(content)

        async def add_question(turn: Turn) -> None:
            await self.sessions.add_message(record, "user", content)
            if record.title == "New chat":
                await self.sessions.update(record, title=content.strip().splitlines()[0][:60])

        return await self._begin(record, add_question, options, reply_to, cancel_when_unwatched)

    async def regenerate(self, record: SessionRecord, options: TurnOptions = TurnOptions(), reply_to: str | None = None,
                         cancel_when_unwatched: bool = True) -> Turn:
        """Answer the last user message again; the reply it replaces becomes an alternative of the new one."""

        async def drop_last_reply(turn: Turn) -> None:
            messages = await self.sessions.messages(record.session_id)
            if len(messages) < 2 or messages[-1].role != "assistant" or messages[-2].role != "user":
                raise Conflict("nothing_to_regenerate", "the conversation does not end with a reply to regenerate")
            turn.replaced = messages[-1]
            turn.alternatives = (*messages[-1].alternatives, messages[-1].content)
            await self.sessions.rewrite_after(record, messages[-2].id)
            self._send_history(turn, messages[:-1])

        return await self._begin(record, drop_last_reply, options, reply_to, cancel_when_unwatched)

    async def edit(self, record: SessionRecord, message_id: Any, content: Any, options: TurnOptions = TurnOptions(),
                   reply_to: str | None = None, cancel_when_unwatched: bool = True) -> Turn:
        """Give a user message new text, drop every message after it, and answer it again."""
        content = self.check_message(content)

        async def rewrite(turn: Turn) -> None:
            messages = await self.sessions.messages(record.session_id)
            at = next((i for i, m in enumerate(messages) if m.id == message_id), None)
            if at is None:
                raise NotFound("message_not_found", "no such message in this session")
            if messages[at].role != "user":
                raise Invalid("not_a_user_message", "only a user message can be edited")
            await self.sessions.rewrite_after(record, messages[at].id, content)
            self._send_history(turn, [*messages[:at], replace(messages[at], content=content)])

        return await self._begin(record, rewrite, options, reply_to, cancel_when_unwatched)

    async def complete(self, record: SessionRecord, messages: list[dict[str, str]], options: TurnOptions, cancel_when_unwatched: bool) -> Turn:
        """A turn on a conversation a client sends whole (the OpenAI API), which is authoritative:
        when it is the stored conversation plus one new user message, it is the session's next
        turn; anything else is a side turn. Either waits for the session's running turn."""
        while True:
            await self._wait_for_session(record.session_id)
            stored = await self.stored_conversation(record)
            if not (len(messages) == len(stored) + 1 and messages[:-1] == stored and messages[-1]["role"] == "user"):
                return await self.side_turn(record, messages, options, cancel_when_unwatched)
            try:
                return await self.start_turn(record, messages[-1]["content"], options, cancel_when_unwatched=cancel_when_unwatched)
            except Conflict:  # another turn started while the conversation was read
                continue

    async def stored_conversation(self, record: SessionRecord) -> list[dict[str, str]]:
        """The session's system prompt and messages, as a client would send them."""
        system = [{"role": "system", "content": record.system_prompt}] if record.system_prompt else []
        return system + [{"role": m.role, "content": m.content} for m in await self.sessions.messages(record.session_id)]

    async def side_turn(self, record: SessionRecord, messages: list[dict[str, str]], options: TurnOptions, cancel_when_unwatched: bool) -> Turn:
        """A turn on `messages` as given that stores nothing and only its caller watches (on the
        channel `turn.channel`). It runs after the session's running turn, in a model state of
        its own, so the session's cached conversation stays as it was."""
        await self._wait_for_session(record.session_id)
        if not self.engine.ready:
            raise Unavailable("model_not_ready", self.engine.error or "the model is still loading")
        turn = Turn(record.session_id, cancel_when_unwatched, _stops(options, record), channel=f"{record.session_id}/{uuid.uuid4()}")
        self.hub(turn.channel).current = turn
        try:
            self._submit(turn, _side_state(record.session_id), messages, options, record)
        except BaseException:
            await self._abandon(turn)
            raise
        self._side_turns.setdefault(record.session_id, set()).add(turn)
        self._send(turn, {"type": "start", "reply_to": None})
        return turn

    async def _wait_for_session(self, session_id: str) -> None:
        """Wait until the session runs no turn; waiters count against the engine's queue limit."""
        while (hub := self._hubs.get(session_id)) is not None and hub.current is not None and not hub.current.done:
            if self._waiting >= self.engine.settings.max_queue:
                raise Busy("busy", f"the server is busy: {self._waiting} turns are already waiting")
            self._waiting += 1
            try:
                await asyncio.shield(hub.current.finished)
            finally:
                self._waiting -= 1

    async def _begin(self, record: SessionRecord, change: Callable[[Turn], Awaitable[None]], options: TurnOptions,
                     reply_to: str | None, cancel_when_unwatched: bool) -> Turn:
        """Claim the session for a turn, let `change` bring the stored conversation to what it
        answers, and submit it."""
        hub = self.hub(record.session_id)
        if hub.current is not None and not hub.current.done:
            raise Conflict("turn_in_progress", "a reply is already being generated for this session; stop it or wait")
        if not self.engine.ready:
            raise Unavailable("model_not_ready", self.engine.error or "the model is still loading")
        turn = Turn(record.session_id, cancel_when_unwatched, _stops(options, record))
        hub.current = turn  # claimed before any await, so a second turn is refused
        self.engine.announce(record.session_id)
        try:
            await change(turn)
            messages = await self._conversation(record, turn)
            if self.sessions.find(record.session_id) is None:  # deleted meanwhile: its engine state is already dropped
                raise SessionGone("the session was deleted before its turn started")
            self._submit(turn, record.session_id, messages, options, record)
        except BaseException:
            self.engine.withdraw(record.session_id)
            await self._abandon(turn)
            raise
        self._send(turn, {"type": "start", "reply_to": reply_to})
        return turn

    def _submit(self, turn: Turn, state_id: str, messages: list[dict[str, str]], options: TurnOptions, record: SessionRecord) -> None:
        settings = record.settings
        turn.request = TurnRequest(
            session_id=state_id, messages=messages,
            max_tokens=self.engine.clamp_max_tokens(options.max_tokens or settings.max_tokens),
            sampling=Sampling(_pick(options.temperature, settings.temperature), _pick(options.top_p, settings.top_p), settings.top_k,
                              _pick(options.seed, settings.seed), settings.ignore_eos),
            emit=lambda event: self._on_engine_event(turn, event),
        )
        try:
            self.engine.submit(turn.request)
        except EngineBusy as exc:
            raise Busy("busy", f"the server is busy: {exc}") from None
        except EngineNotReady as exc:
            raise Unavailable("model_not_ready", str(exc)) from None

    async def _abandon(self, turn: Turn) -> None:
        """A turn that never reached the engine: free its channel and put back a reply it was to replace."""
        hub = self._hubs.get(turn.channel)
        if hub is not None and hub.current is turn:
            hub.current = None
            if turn.side:
                self._hubs.pop(turn.channel, None)
        try:
            await self._restore_replaced(turn)
        finally:
            if not turn.finished.done():
                turn.finished.set_result(None)

    async def _restore_replaced(self, turn: Turn) -> None:
        record = self.sessions.find(turn.session_id)
        if turn.replaced is None or record is None:
            return
        old, turn.replaced = turn.replaced, None
        await self.sessions.add_message(record, old.role, old.content, old.usage, old.id, old.alternatives)
        self._send_history(turn, await self.sessions.messages(turn.session_id))

    def _send_history(self, turn: Turn, messages: list[Message]) -> None:
        """Every watcher redraws the conversation as it now stands (after an edit or a regenerate)."""
        self._send(turn, {"type": "history", "messages": [m.to_json() for m in messages]})

    async def _conversation(self, record: SessionRecord, turn: Turn) -> list[dict[str, str]]:
        """The prompt's messages: the system prompt, then the stored conversation with the file
        parts each question had, the newest with those it adds (after the history, so the
        previous turn's prompt stays a cached prefix of this one)."""
        stored = await self.sessions.messages(record.session_id)
        history = [{"role": m.role, "content": m.content} for m in stored]
        files = await self.file_context(record) if self.file_context is not None and record.files else None
        if files is not None and history and history[-1]["role"] == "user":
            parts, added = await asyncio.to_thread(_attach_files, files, stored, history)
            turn.file_sources, turn.files_added = sources_json(parts), sources_json(added)
        return ([{"role": "system", "content": record.system_prompt}] if record.system_prompt else []) + history

    def _send(self, turn: Turn, body: dict[str, Any]) -> None:
        self.broadcast(turn.channel, turn.frame(body))

    def _on_engine_event(self, turn: Turn, event: TurnEvent) -> None:
        match event:
            case Token(text):
                self._reply(turn, turn.stops.push(text))
                if turn.stops.matched is not None:
                    turn.cancel()  # the engine stops it; _complete reports finish_reason "stop"
            case Queued(position):
                self._send(turn, {"type": "queued", "position": position})
            case Done(usage):
                self._reply(turn, turn.stops.flush())
                self._track(self._complete(turn, usage))
            case Failed(code, message):
                self._send(turn, {"type": "error", "code": code, "message": message})
                self._track(self._complete(turn, None))

    def _reply(self, turn: Turn, text: str) -> None:
        if text:
            turn.parts.append(text)
            self._send(turn, {"type": "token", "text": text})

    def _track(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._pending_writes.add(task)
        task.add_done_callback(self._pending_writes.discard)

    async def _complete(self, turn: Turn, usage: dict[str, Any] | None) -> None:
        """Store the reply (also a partial one), then tell the watchers."""
        hub = self.hub(turn.channel)
        try:
            if usage is not None:
                await self._store_reply(turn, usage)
            elif not turn.side:
                await self._restore_replaced(turn)
        finally:
            if hub.current is turn:
                hub.current = None
            hub.last = turn
            if not turn.finished.done():
                turn.finished.set_result(usage)
            if not hub.subscribers:
                self._hubs.pop(turn.channel, None)
            if turn.side:
                self._side_turn_ended(turn)

    async def _store_reply(self, turn: Turn, usage: dict[str, Any]) -> None:
        usage.setdefault("cached_tokens", 0)
        if turn.stops.matched is not None:
            usage["finish_reason"] = "stop"
        if turn.file_sources:
            usage["files"] = turn.file_sources
        if turn.files_added:
            usage["files_added"] = turn.files_added
        for listener in self._usage_listeners:
            listener(usage)
        record = self.sessions.find(turn.session_id)
        if record is None:  # deleted during the turn (which that stopped): the reply has nowhere to go
            self._send(turn, session_gone_frame())
            return
        message = None
        if not turn.side and (turn.text or usage["finish_reason"] != "cancelled"):
            try:
                message = await self.sessions.add_message(record, "assistant", turn.text, usage, message_id=turn.message_id, alternatives=turn.alternatives)
            except SessionGone:  # deleted while the reply was being stored
                self._send(turn, session_gone_frame())
                return
        elif not turn.side:
            await self._restore_replaced(turn)
        self._send(turn, {"type": "done", "message": None if message is None else message.to_json(), "usage": usage})

    def _side_turn_ended(self, turn: Turn) -> None:
        """The last side turn of a session takes its model state with it."""
        turns = self._side_turns.get(turn.session_id, set())
        turns.discard(turn)
        if not turns:
            self._side_turns.pop(turn.session_id, None)
            self._track(self.engine.drop_session(_side_state(turn.session_id)))

    def stop(self, session_id: str) -> bool:
        hub = self._hubs.get(session_id)
        if hub is None or hub.current is None:
            return False
        hub.current.cancel()
        return True

    async def _stop_and_wait(self, session_id: str) -> None:
        hub = self._hubs.get(session_id)
        turn = hub.current if hub else None
        if turn is not None:
            turn.cancel()
            await asyncio.wait_for(asyncio.shield(turn.finished), timeout=30)

    # -- session-wide actions ------------------------------------------------------
    async def clear(self, record: SessionRecord) -> None:
        await self._stop_and_wait(record.session_id)
        await self.sessions.clear_messages(record)
        hub = self._hubs.get(record.session_id)
        if hub is not None:
            hub.last = None
        await self.engine.drop_session(record.session_id)
        await self.session_changed(record)

    async def session_removed(self, session_id: str) -> None:
        """Removal hook: stop the turn, tell and drop the watchers."""
        for turn in self._side_turns.get(session_id, ()):
            turn.cancel()
        hub = self._hubs.pop(session_id, None)
        if hub is None:
            return
        if hub.current is not None:
            hub.current.cancel()
        for subscriber in list(hub.subscribers):
            subscriber.send({"type": "session_closed", "reason": "deleted or expired"})

    async def shutdown(self) -> None:
        """Stop every turn and store what each had generated."""
        turns = [h.current for h in self._hubs.values() if h.current is not None]
        for turn in turns:
            turn.cancel()
        if turns:
            await asyncio.wait([asyncio.shield(t.finished) for t in turns], timeout=10)
        if self._pending_writes:
            await asyncio.wait(list(self._pending_writes), timeout=10)
