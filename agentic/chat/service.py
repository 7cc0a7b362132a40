"""Runs chat turns for sessions and fans their frames out to every watcher of the session."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from agentic.chat.subscribers import Subscriber
from agentic.chat.turns import Turn
from agentic.engine.engine import Engine
from agentic.errors import Busy, Conflict, Invalid, TooLarge, Unavailable
from agentic.engine.types import Done, EngineBusy, EngineNotReady, Failed, Queued, Sampling, Token, TurnEvent, TurnRequest
from agentic.sessions.lifecycle import SessionManager
from agentic.sessions.models import SessionRecord

log = logging.getLogger("agentic.chat")

# (session, question) -> (text to add to the system prompt, the files/passages used)
ContextProvider = Callable[[SessionRecord, str], Awaitable[tuple[str, list[dict[str, Any]]]]]
# Called with each finished turn's usage (metrics count tokens and turns from it).
UsageListener = Callable[[dict[str, Any]], None]


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
        self.context_provider: ContextProvider | None = None
        self._usage_listeners: list[UsageListener] = []
        self._hubs: dict[str, SessionHub] = {}
        self._pending_writes: set[asyncio.Task] = set()

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

    def unsubscribe(self, session_id: str, subscriber: Subscriber) -> None:
        hub = self._hubs.get(session_id)
        if hub is None:
            return
        hub.subscribers.discard(subscriber)
        turn = hub.current
        if not hub.subscribers and turn is not None and turn.cancel_when_unwatched and not turn.done:
            log.info("last watcher left, stopping the turn", extra={"session_id": session_id})
            turn.cancel()
        if not hub.subscribers and hub.current is None and hub.last is None:
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

    async def start_turn(self, record: SessionRecord, content: Any, max_tokens: int | None = None, reply_to: str | None = None, cancel_when_unwatched: bool = True) -> Turn:
        content = self.check_message(content)
        hub = self.hub(record.session_id)
        if hub.current is not None and not hub.current.done:
            raise Conflict("turn_in_progress", "a reply is already being generated for this session; stop it or wait")
        if not self.engine.ready:
            raise Unavailable("model_not_ready", self.engine.error or "the model is still loading")
        turn = Turn(record.session_id, cancel_when_unwatched)
        hub.current = turn  # claimed before any await, so a second turn is refused
        try:
            await self.sessions.add_message(record, "user", content)
            if record.title == "New chat":
                await self.sessions.update(record, title=content.strip().splitlines()[0][:60])
            messages = await self._conversation(record, content, turn)
            turn.request = TurnRequest(
                session_id=record.session_id, messages=messages,
                max_tokens=self.engine.clamp_max_tokens(max_tokens or record.settings.max_tokens),
                sampling=Sampling(record.settings.temperature, record.settings.top_p, record.settings.top_k, record.settings.seed, record.settings.ignore_eos),
                emit=lambda event: self._on_engine_event(turn, event),
            )
            self.engine.submit(turn.request)
        except EngineBusy as exc:
            self._abandon(hub, turn)
            raise Busy("busy", f"the server is busy: {exc}") from None
        except EngineNotReady as exc:
            self._abandon(hub, turn)
            raise Unavailable("model_not_ready", str(exc)) from None
        except BaseException:
            self._abandon(hub, turn)
            raise
        self._send(turn, {"type": "start", "reply_to": reply_to})
        return turn

    def _abandon(self, hub: SessionHub, turn: Turn) -> None:
        if hub.current is turn:
            hub.current = None
        if not turn.finished.done():
            turn.finished.set_result(None)

    async def _conversation(self, record: SessionRecord, question: str, turn: Turn) -> list[dict[str, str]]:
        system = record.system_prompt
        if self.context_provider is not None and record.files:
            extra, turn.file_sources = await self.context_provider(record, question)
            if extra:
                system = f"{system}\n\n{extra}".strip()
        history = [{"role": m.role, "content": m.content} for m in await self.sessions.messages(record.session_id)]
        return ([{"role": "system", "content": system}] if system else []) + history

    def _send(self, turn: Turn, body: dict[str, Any]) -> None:
        self.broadcast(turn.session_id, turn.frame(body))

    def _on_engine_event(self, turn: Turn, event: TurnEvent) -> None:
        match event:
            case Token(text):
                turn.parts.append(text)
                self._send(turn, {"type": "token", "text": text})
            case Queued(position):
                self._send(turn, {"type": "queued", "position": position})
            case Done(usage):
                self._track(self._complete(turn, usage))
            case Failed(code, message):
                self._send(turn, {"type": "error", "code": code, "message": message})
                self._track(self._complete(turn, None))

    def _track(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._pending_writes.add(task)
        task.add_done_callback(self._pending_writes.discard)

    async def _complete(self, turn: Turn, usage: dict[str, Any] | None) -> None:
        """Store the reply (also a partial one), then tell the watchers."""
        hub = self.hub(turn.session_id)
        try:
            record = self.sessions.find(turn.session_id)
            if usage is not None:
                if turn.file_sources:
                    usage["files"] = turn.file_sources
                for listener in self._usage_listeners:
                    listener(usage)
                if record is not None and (turn.text or usage["finish_reason"] != "cancelled"):
                    message = await self.sessions.add_message(record, "assistant", turn.text, usage, message_id=turn.message_id)
                    self._send(turn, {"type": "done", "message": message.to_json(), "usage": usage})
                else:
                    self._send(turn, {"type": "done", "message": None, "usage": usage})
        finally:
            if hub.current is turn:
                hub.current = None
            hub.last = turn
            if not turn.finished.done():
                turn.finished.set_result(usage)
            if not hub.subscribers:
                self._hubs.pop(turn.session_id, None)

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
