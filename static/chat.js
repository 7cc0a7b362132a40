// The chat page: one WebSocket per tab, resumable streams, the session sidebar, uploads,
// search, edit and regenerate, keyboard shortcuts.
"use strict";

(function () {
  const API = document.body.dataset.apiBase || "";
  const CLIENT = document.body.dataset.clientId || "";
  const SCOPE = CLIENT || "main";
  const KEY_CURRENT = "agentic:" + SCOPE + ":current";
  const KEY_SESSIONS = "agentic:" + SCOPE + ":sessions";
  const $ = (id) => document.getElementById(id);

  const state = {
    session: null,          // the Session object of api.md
    ws: null,
    turn: null,             // {messageId, seq, element, text, usage}
    generating: false,
    reconnectDelay: 500,
    reconnectTimer: null,
    gone: false,            // the session was deleted or expired
    messages: [],
    follow: true,           // keep the conversation scrolled to its end while a reply streams
  };

  // -- HTTP ----------------------------------------------------------------------------------
  async function api(method, path, body, extraHeaders) {
    const headers = Object.assign({}, extraHeaders || {});
    if (state.session && path.startsWith("/sessions/" + state.session.session_id)) headers["x-session-id"] = state.session.session_id;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(API + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: "same-origin" });
    } catch (err) {
      showBanner("The server cannot be reached. Retrying…");
      throw err;
    }
    let data = null;
    try { data = await response.json(); } catch (_) { data = null; }
    if (response.status === 502 || response.status === 503) showBanner((data && data.error && data.error.message) || "The server is not available right now.");
    else hideBanner();
    if (!response.ok) {
      const error = new Error((data && data.error && data.error.message) || response.statusText);
      error.status = response.status;
      error.code = data && data.error && data.error.code;
      throw error;
    }
    return data;
  }

  function showBanner(text) { const b = $("banner"); b.textContent = text; b.hidden = false; }
  function hideBanner() { $("banner").hidden = true; }
  function setStatus(text) { $("status").textContent = text; }

  // -- sessions ------------------------------------------------------------------------------
  function knownSessions() {
    try { return JSON.parse(localStorage.getItem(KEY_SESSIONS)) || []; } catch (_) { return []; }
  }
  function remember(session) {
    const list = knownSessions().filter((s) => s.id !== session.session_id);
    list.unshift({ id: session.session_id, title: session.title });
    localStorage.setItem(KEY_SESSIONS, JSON.stringify(list.slice(0, 30)));
    localStorage.setItem(KEY_CURRENT, session.session_id);
    renderKnownSessions();
  }
  function forget(id) {
    localStorage.setItem(KEY_SESSIONS, JSON.stringify(knownSessions().filter((s) => s.id !== id)));
    if (localStorage.getItem(KEY_CURRENT) === id) localStorage.removeItem(KEY_CURRENT);
    renderKnownSessions();
  }

  async function fetchSession(id) {
    try {
      return await fetch(API + "/sessions/" + id, { headers: { "x-session-id": id }, credentials: "same-origin" }).then((r) => (r.ok ? r.json() : null));
    } catch (_) { return null; }
  }

  async function pickInitialSession() {
    const saved = localStorage.getItem(KEY_CURRENT);
    if (saved) {
      const session = await fetchSession(saved);
      if (session) return session;
      forget(saved);
    }
    const listing = await api("GET", "/sessions");
    if (listing.session_id) {
      const session = await fetchSession(listing.session_id);
      if (session) return session;
    }
    return api("POST", "/sessions", {});
  }

  async function openSession(session) {
    state.session = session;
    state.gone = false;
    state.turn = null;
    $("notice").hidden = true;
    remember(session);
    renderSession();
    const data = await api("GET", "/sessions/" + session.session_id + "/messages");
    state.messages = data.messages;
    renderMessages();
    connect(null);
  }

  async function newSession() {
    const session = await api("POST", "/sessions", {});
    await openSession(session);
    $("input").focus();
  }

  // -- WebSocket -------------------------------------------------------------------------------
  function socketUrl(resume) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    let url = scheme + "//" + location.host + API + "/ws?session_id=" + encodeURIComponent(state.session.session_id);
    if (resume) url += "&resume=" + encodeURIComponent(resume);
    return url;
  }

  function connect(resume) {
    if (state.ws) { state.ws.onclose = null; state.ws.close(); }
    clearTimeout(state.reconnectTimer);
    setStatus(resume ? "reconnecting…" : "connecting…");
    const ws = new WebSocket(socketUrl(resume));
    state.ws = ws;
    ws.onopen = () => { state.reconnectDelay = 500; hideBanner(); setStatus(state.generating ? "generating…" : "connected"); };
    ws.onmessage = (event) => { try { onFrame(JSON.parse(event.data)); } catch (err) { console.error(err); } };
    ws.onclose = (event) => {
      if (ws !== state.ws) return;
      if (event.code === 4404 || event.code === 4400) { sessionGone(); return; }
      setStatus("disconnected");
      if (event.code !== 1000) showBanner("Connection lost. Reconnecting…");
      scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    clearTimeout(state.reconnectTimer);
    const delay = state.reconnectDelay;
    state.reconnectDelay = Math.min(state.reconnectDelay * 2, 10000);
    state.reconnectTimer = setTimeout(async () => {
      if (!state.session || state.gone) return;
      const turn = state.turn;
      if (turn) { connect(turn.messageId + ":" + turn.seq); return; }
      try {  // nothing in flight: reload the history in case something happened meanwhile
        const data = await api("GET", "/sessions/" + state.session.session_id + "/messages");
        state.messages = data.messages;
        renderMessages();
        connect(null);
      } catch (err) {
        if (err.status === 404) sessionGone(); else scheduleReconnect();
      }
    }, delay + Math.random() * 250);
  }

  function send(frame) {
    if (state.ws && state.ws.readyState === WebSocket.OPEN) { state.ws.send(JSON.stringify(frame)); return true; }
    return false;
  }

  function onFrame(frame) {
    switch (frame.type) {
      case "session": onSessionFrame(frame); break;
      case "start": onStart(frame); break;
      case "queued": track(frame); setStatus("waiting for the model (position " + frame.position + ")"); break;
      case "token": onToken(frame); break;
      case "done": onDone(frame); break;
      case "error": onError(frame); break;
      case "files": state.session.files = frame.files; renderFiles(); break;
      case "history": onHistory(frame); break;
      case "session_closed": sessionGone(); break;
      case "pong": break;
    }
  }

  function track(frame) {
    // Frames of one turn carry message_id and seq; a resumed or second socket may see some twice.
    if (!frame.message_id) return true;
    if (!state.turn || state.turn.messageId !== frame.message_id) {
      state.turn = { messageId: frame.message_id, seq: -1, text: "", element: null };
    }
    if (frame.seq <= state.turn.seq) return false;
    state.turn.seq = frame.seq;
    return true;
  }

  function onSessionFrame(frame) {
    state.session = frame.session;
    remember(frame.session);
    renderSession();
    if (frame.resumed === false) {  // the turn we were following is gone (server restarted): resync
      state.turn = null;
      setGenerating(false);
      api("GET", "/sessions/" + frame.session.session_id + "/messages").then((data) => { state.messages = data.messages; renderMessages(); }).catch(() => {});
    }
  }

  function onStart(frame) {
    if (!track(frame)) return;
    const last = state.messages[state.messages.length - 1];
    if (!pendingUser && (!last || last.role !== "user")) {
      // started in another tab: show its question too
      api("GET", "/sessions/" + state.session.session_id + "/messages").then((data) => {
        state.messages = data.messages; renderMessages(); ensureTurnElement();
      }).catch(() => {});
    }
    pendingUser = null;
    setGenerating(true);
    ensureTurnElement();
  }

  function ensureTurnElement() {
    if (!state.turn) return;
    if (!state.turn.element || !state.turn.element.isConnected) {
      state.turn.element = appendMessage({ role: "assistant", content: "", id: state.turn.messageId }, true);
      state.turn.view = new window.agenticMarkdown.StreamView(state.turn.element.querySelector(".body"), copyText, followEnd);
      state.turn.view.set(state.turn.text);
    }
  }

  function onToken(frame) {
    if (!track(frame)) return;
    ensureTurnElement();
    state.turn.text += frame.text;
    state.turn.view.set(state.turn.text);
    setStatus("generating…");
  }

  // An edit or a regenerate: the conversation as it now stands, before the new reply.
  function onHistory(frame) {
    state.messages = frame.messages;
    pendingUser = null;
    renderMessages();
    setGenerating(true);
  }

  function onDone(frame) {
    if (frame.message_id && !track(frame)) return;
    setGenerating(false);
    if (frame.message) {
      ensureTurnElement();
      const message = Object.assign({}, frame.message, { usage: frame.usage || frame.message.usage });
      state.messages.push(message);
      fillMessage(state.turn.element, message);
      markLastReply();
    } else if (state.turn && state.turn.element) {
      state.turn.element.remove();
    }
    state.turn = null;
    setStatus("connected");
    refreshSession();
    reloadHistory();  // the stored ids of the turn's messages, which Edit needs
  }

  async function reloadHistory() {
    const id = state.session.session_id;
    const data = await api("GET", "/sessions/" + id + "/messages").catch(() => null);
    if (!data || state.generating || pendingUser || !state.session || state.session.session_id !== id) return;
    const same = data.messages.length === state.messages.length && data.messages.every((m, i) => m.id === state.messages[i].id);
    state.messages = data.messages;
    if (!same) renderMessages();  // a rendering of the same messages would only lose what the reader opened
  }

  function onError(frame) {
    if (frame.message_id && !track(frame)) return;
    if (frame.message_id) { setGenerating(false); state.turn = null; }
    if (pendingUser && !frame.message_id) restoreInput();
    else if (!frame.message_id && !state.turn) setGenerating(false);  // a refused edit or regenerate
    const note = document.createElement("li");
    note.className = "message error-message";
    note.setAttribute("role", "alert");
    note.textContent = frame.message || frame.code;
    $("messages").appendChild(note);
    scrollToEnd();
    if (frame.code === "session_not_found") sessionGone();
  }

  function sessionGone() {
    state.gone = true;
    setGenerating(false);
    clearTimeout(state.reconnectTimer);
    if (state.session) forget(state.session.session_id);
    $("notice-text").textContent = "This session was deleted or has expired. Its conversation and files are gone.";
    $("notice").hidden = false;
    setStatus("session closed");
  }

  // -- sending -----------------------------------------------------------------------------------
  let pendingUser = null;

  function submit(event) {
    if (event) event.preventDefault();
    const input = $("input");
    const content = input.value;
    if (!content.trim() || state.generating || state.gone) return;
    if (!send({ type: "chat", content, id: "u" + Date.now() })) { showBanner("Not connected yet. Try again in a moment."); return; }
    pendingUser = content;
    const message = { role: "user", content, id: "local" };
    state.messages.push(message);
    appendMessage(message, false);
    input.value = "";
    setGenerating(true);
    markLastReply();
  }

  function regenerate() {
    const last = state.messages[state.messages.length - 1];
    if (state.generating || state.gone || !last || last.role !== "assistant") return;
    if (!send({ type: "regenerate" })) { showBanner("Not connected yet. Try again in a moment."); return; }
    setGenerating(true);
  }

  function sendEdit(message, content) {
    if (state.generating || state.gone || !content.trim()) return;
    if (!send({ type: "edit", message_id: message.id, content })) { showBanner("Not connected yet. Try again in a moment."); return; }
    setGenerating(true);
  }

  function restoreInput() {
    state.messages.pop();
    const list = $("messages");
    if (list.lastElementChild) list.lastElementChild.remove();
    $("input").value = pendingUser;
    pendingUser = null;
    setGenerating(false);
  }

  function setGenerating(on) {
    state.generating = on;
    $("send").hidden = on;
    $("stop").hidden = !on;
    document.body.classList.toggle("generating", on);
    for (const button of document.querySelectorAll(".message-tools .action")) button.disabled = on;
    if (on) setStatus("generating…");
  }

  // -- rendering ---------------------------------------------------------------------------------
  function renderSession() {
    const s = state.session;
    $("session-id").textContent = s.session_id.slice(0, 8) + "…";
    $("session-id").dataset.full = s.session_id;
    $("client-id").textContent = s.client_id || "–";
    $("created-at").textContent = formatTime(s.created_at);
    $("last-activity").textContent = relative(s.last_activity);
    $("expires-at").textContent = formatTime(s.expires_at);
    $("chat-title").textContent = s.title;
    document.title = s.title + " – agentic";
    if (document.activeElement !== $("title-input")) $("title-input").value = s.title;
    renderFiles();
  }

  function renderKnownSessions() {
    const list = $("my-sessions");
    list.replaceChildren();
    for (const known of knownSessions()) {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.className = "link";
      button.textContent = (known.title || "Untitled") + " · " + known.id.slice(0, 8);
      if (state.session && known.id === state.session.session_id) button.setAttribute("aria-current", "true");
      button.addEventListener("click", () => switchTo(known.id));
      item.appendChild(button);
      list.appendChild(item);
    }
  }

  async function switchTo(id) {
    const session = await fetchSession(id);
    if (!session) { forget(id); return; }
    await openSession(session);
  }

  function renderMessages() {
    const list = $("messages");
    list.replaceChildren();
    for (const message of state.messages) appendMessage(message, false);
    markLastReply();
    scrollToEnd();
  }

  function appendMessage(message, streaming) {
    const item = document.createElement("li");
    item.className = "message " + message.role + (streaming ? " streaming" : "");
    const who = document.createElement("div");
    who.className = "who";
    who.textContent = message.role === "user" ? "You" : "Assistant";
    const body = document.createElement("div");
    body.className = "body";
    item.append(who, body);
    item.dataset.id = message.id || "";
    if (!streaming) fillMessage(item, message);
    $("messages").appendChild(item);
    scrollToEnd();
    return item;
  }

  // The body, figures, sources and buttons of a finished message.
  function fillMessage(item, message) {
    item.classList.remove("streaming");
    item.dataset.id = message.id || "";
    setBody(item, message.content);
    for (const old of item.querySelectorAll(".figures, .sources, .message-tools")) old.remove();
    setFigures(item, message.usage);
    setSources(item, message.usage);
    setTools(item, message);
  }

  function setBody(item, text) {
    const body = item.querySelector(".body");
    if (item.classList.contains("user")) { body.textContent = text; return; }
    body.innerHTML = window.agenticMarkdown.render(text);  // raw HTML off: only markdown-it's own tags
    window.agenticMarkdown.decorate(body, copyText);
  }

  function setFigures(item, usage) {
    if (!usage) return;
    const figures = document.createElement("div");
    figures.className = "figures";
    const parts = [usage.completion_tokens + " tokens"];
    if (usage.tokens_per_s) parts.push(usage.tokens_per_s.toFixed(1) + " tok/s");
    if (usage.ttft_ms !== undefined) parts.push("first token " + Math.round(usage.ttft_ms) + " ms");
    if (usage.finish_reason === "cancelled") parts.push("stopped");
    if (usage.finish_reason === "length") parts.push("length limit");
    figures.textContent = parts.join(" · ");
    item.appendChild(figures);
  }

  // Which uploaded files (and which of their passages) the reply was given.
  function setSources(item, usage) {
    const files = (usage && usage.files) || [];
    if (!files.length) return;
    const details = document.createElement("details");
    details.className = "sources";
    const summary = document.createElement("summary");
    summary.textContent = "Sources: " + files.map((f) => f.name).join(", ");
    const list = document.createElement("ul");
    for (const file of files) {
      const entry = document.createElement("li");
      const link = document.createElement("a");
      link.href = API + "/sessions/" + state.session.session_id + "/files/" + encodeURIComponent(file.name);
      link.setAttribute("download", "");
      link.textContent = file.name;
      const used = file.passages === "all" ? "the whole file" : (file.passages.length === 1 ? "passage " : "passages ") + file.passages.map((i) => "#" + (i + 1)).join(", ");
      entry.append(link, " · " + used);
      list.appendChild(entry);
    }
    details.append(summary, list);
    item.appendChild(details);
  }

  function setTools(item, message) {
    if (!message.id || message.id === "local") return;
    const tools = document.createElement("div");
    tools.className = "message-tools";
    if (message.role === "user") tools.appendChild(toolButton("Edit", "action", () => startEdit(item, message)));
    if (message.role === "assistant") {
      if ((message.alternatives || []).length) tools.appendChild(alternativesNav(item, message));
      const again = toolButton("Regenerate", "action regenerate", regenerate);
      again.setAttribute("aria-keyshortcuts", "Alt+Shift+R");
      tools.appendChild(again);
    }
    item.appendChild(tools);
  }

  function toolButton(text, className, onClick) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = className;
    button.textContent = text;
    button.disabled = state.generating;
    button.addEventListener("click", onClick);
    return button;
  }

  // "‹ 2/3 ›": the earlier replies to the same question (oldest first), the current one last.
  function alternativesNav(item, message) {
    const versions = message.alternatives.concat([message.content]);
    let shown = versions.length - 1;
    const nav = document.createElement("span");
    nav.className = "alternatives";
    nav.setAttribute("role", "group");
    nav.setAttribute("aria-label", "Replies");
    const counter = document.createElement("span");
    counter.setAttribute("aria-live", "polite");
    const previous = toolButton("‹", "previous", () => show(shown - 1));
    const next = toolButton("›", "next", () => show(shown + 1));
    previous.setAttribute("aria-label", "Previous reply");
    next.setAttribute("aria-label", "Next reply");
    function show(index) {
      shown = index;
      setBody(item, versions[index]);
      counter.textContent = index + 1 + "/" + versions.length;
      previous.disabled = index === 0;
      next.disabled = index === versions.length - 1;
    }
    nav.append(previous, counter, next);
    show(shown);
    return nav;
  }

  // Only the last reply of the conversation can be regenerated.
  function markLastReply() {
    const messages = $("messages").querySelectorAll(".message.user, .message.assistant");
    const last = messages[messages.length - 1];
    for (const button of $("messages").querySelectorAll(".regenerate")) button.hidden = button.closest(".message") !== last;
  }

  function startEdit(item, message) {
    if (state.generating) return;
    const form = document.createElement("form");
    form.className = "edit-form";
    const label = document.createElement("label");
    label.className = "visually-hidden";
    label.htmlFor = "edit-" + message.id;
    label.textContent = "Edit your message";
    const area = document.createElement("textarea");
    area.id = "edit-" + message.id;
    area.value = message.content;
    area.rows = Math.min(10, message.content.split("\n").length + 1);
    const row = document.createElement("div");
    row.className = "actions-row";
    const save = toolButton("Send", "", () => {});
    save.type = "submit";
    const cancel = toolButton("Cancel", "", () => fillMessage(item, message));
    row.append(save, cancel);
    form.append(label, area, row);
    form.addEventListener("submit", (e) => { e.preventDefault(); sendEdit(message, area.value); });
    area.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); sendEdit(message, area.value); }
      if (e.key === "Escape") { e.stopPropagation(); fillMessage(item, message); }
    });
    item.querySelector(".body").replaceChildren(form);
    for (const old of item.querySelectorAll(".message-tools")) old.remove();
    area.focus();
  }

  function renderFiles() {
    const list = $("file-list");
    list.replaceChildren();
    for (const file of (state.session && state.session.files) || []) {
      const item = document.createElement("li");
      const link = document.createElement("a");
      link.href = API + "/sessions/" + state.session.session_id + "/files/" + encodeURIComponent(file.name);
      link.textContent = file.name;  // never HTML
      link.setAttribute("download", "");
      const meta = document.createElement("span");
      meta.className = "small";
      meta.textContent = " " + formatBytes(file.size) + (file.status !== "ok" ? " · " + (file.note || file.status) : " · " + file.extracted_chars + " chars");
      const remove = document.createElement("button");
      remove.className = "icon";
      remove.textContent = "✕";
      remove.setAttribute("aria-label", "Delete " + file.name);
      remove.addEventListener("click", () => deleteFile(file.name));
      item.append(link, meta, remove);
      list.appendChild(item);
    }
  }

  function scrollToEnd() { const list = $("messages"); list.scrollTop = list.scrollHeight; state.follow = true; }
  function followEnd() { if (state.follow) scrollToEnd(); }

  // -- files ---------------------------------------------------------------------------------------
  function uploadFiles(files) {
    if (!files.length || !state.session) return;
    const form = new FormData();
    for (const file of files) form.append("file", file, file.name);
    const xhr = new XMLHttpRequest();
    const progress = $("upload-progress");
    $("file-error").hidden = true;
    progress.hidden = false;
    progress.value = 0;
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) progress.value = Math.round((e.loaded / e.total) * 100); };
    xhr.onload = () => {
      progress.hidden = true;
      if (xhr.status === 201) { refreshSession(); return; }
      let message = "Upload failed (" + xhr.status + ")";
      try { message = JSON.parse(xhr.responseText).error.message; } catch (_) { /* keep the generic text */ }
      $("file-error").textContent = message;
      $("file-error").hidden = false;
    };
    xhr.onerror = () => { progress.hidden = true; $("file-error").textContent = "Upload failed: the server cannot be reached."; $("file-error").hidden = false; };
    xhr.open("POST", API + "/sessions/" + state.session.session_id + "/files");
    xhr.setRequestHeader("x-session-id", state.session.session_id);
    xhr.send(form);
  }

  async function deleteFile(name) {
    await api("DELETE", "/sessions/" + state.session.session_id + "/files/" + encodeURIComponent(name));
    refreshSession();
  }

  async function refreshSession() {
    if (!state.session || state.gone) return;
    try { state.session = await api("GET", "/sessions/" + state.session.session_id); remember(state.session); renderSession(); }
    catch (err) { if (err.status === 404) sessionGone(); }
  }

  // -- actions ----------------------------------------------------------------------------------------
  async function clearSession() {
    state.session = await api("POST", "/sessions/" + state.session.session_id + "/clear");
    state.messages = [];
    state.turn = null;
    setGenerating(false);
    renderMessages();
    renderSession();
  }

  async function deleteSession() {
    const dialog = $("confirm-dialog");
    dialog.returnValue = "";
    dialog.showModal();
    dialog.addEventListener("close", async function once() {
      dialog.removeEventListener("close", once);
      if (dialog.returnValue !== "yes") return;
      const id = state.session.session_id;
      await api("DELETE", "/sessions/" + id);
      forget(id);
      sessionGone();
    });
  }

  function showDetails() {
    $("details-body").textContent = JSON.stringify(state.session, null, 2);
    $("details-dialog").showModal();
  }

  async function listSessions(event) {
    if (event) event.preventDefault();
    const token = $("admin-token").value.trim();
    const headers = token ? { Authorization: "Bearer " + token } : {};
    const data = await api("GET", "/sessions", undefined, headers);
    const body = $("sessions-body");
    body.replaceChildren();
    for (const s of data.sessions) {
      const row = document.createElement("tr");
      for (const value of [s.session_id, s.client_id || "–", s.title, String(s.message_count), relative(s.last_activity)]) {
        const cell = document.createElement("td");
        cell.textContent = value;
        row.appendChild(cell);
      }
      body.appendChild(row);
    }
    const st = data.stats;
    $("sessions-stats").textContent = st.active_sessions + " active · " + st.total_created + " created · " + st.expired + " expired · " +
      st.connected_websockets + " sockets · " + st.total_messages + " messages" + (data.admin ? " · admin view (full ids)" : " · ids truncated");
    if (!$("sessions-dialog").open) $("sessions-dialog").showModal();
  }

  function openSettings() {
    const s = state.session;
    $("system-prompt").value = s.system_prompt;
    $("temperature").value = s.settings.temperature;
    $("top-p").value = s.settings.top_p;
    $("max-tokens").value = s.settings.max_tokens ?? "";
    $("seed").value = s.settings.seed ?? "";
    $("settings-error").hidden = true;
    $("settings-dialog").showModal();
  }

  async function saveSettings(event) {
    event.preventDefault();
    const numberOrNull = (v) => (v === "" ? null : Number(v));
    try {
      state.session = await api("PATCH", "/sessions/" + state.session.session_id, {
        system_prompt: $("system-prompt").value,
        settings: { temperature: Number($("temperature").value), top_p: Number($("top-p").value), max_tokens: numberOrNull($("max-tokens").value), seed: numberOrNull($("seed").value) },
      });
      renderSession();
      $("settings-dialog").close();
    } catch (err) {
      $("settings-error").textContent = err.message;
      $("settings-error").hidden = false;
    }
  }

  async function rename() {
    const title = $("title-input").value.trim();
    if (!title || title === state.session.title) return;
    state.session = await api("PATCH", "/sessions/" + state.session.session_id, { title });
    remember(state.session);
    renderSession();
  }

  function exportConversation(kind) {
    const s = state.session;
    let text;
    if (kind === "json") text = JSON.stringify({ session: s, messages: state.messages }, null, 2);
    else text = "# " + s.title + "\n\n" + state.messages.map((m) => "**" + (m.role === "user" ? "You" : "Assistant") + "** (" + m.created_at + ")\n\n" + m.content).join("\n\n---\n\n") + "\n";
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([text], { type: kind === "json" ? "application/json" : "text/markdown" }));
    link.download = "agentic-" + s.session_id.slice(0, 8) + (kind === "json" ? ".json" : ".md");
    document.body.appendChild(link);
    link.click();
    link.remove();
  }

  // -- search ------------------------------------------------------------------------------------------
  // The server searches only the sessions named here: those this browser holds the ids of.
  let searchTimer = null;
  let searchRound = 0;

  function scheduleSearch() {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(run(search), 250);
  }

  async function search(event) {
    if (event) event.preventDefault();
    const q = $("search-input").value.trim();
    const round = ++searchRound;
    if (!/[\p{L}\p{N}_]/u.test(q)) { $("search-results").replaceChildren(); $("search-status").textContent = ""; return; }  // no word yet
    let data;
    try {
      data = await api("POST", "/search", { q, session_ids: knownSessions().map((s) => s.id) });
    } catch (err) {
      if (round === searchRound) $("search-status").textContent = "Search failed: " + err.message;
      return;
    }
    if (round !== searchRound) return;
    const list = $("search-results");
    list.replaceChildren();
    for (const hit of data.hits) {
      const item = document.createElement("li");
      item.dataset.sessionId = hit.session_id;
      item.dataset.kind = hit.kind;
      const button = document.createElement("button");
      button.type = "button";
      button.className = "link";
      const title = document.createElement("strong");
      title.textContent = hit.title + " · " + (hit.kind === "message" ? (hit.role === "user" ? "you" : "assistant") : hit.kind);
      const snippet = document.createElement("span");
      snippet.className = "snippet";
      for (const part of hit.parts) {
        const piece = part.match ? document.createElement("mark") : document.createTextNode("");
        piece.textContent = part.text;
        snippet.appendChild(piece);
      }
      button.append(title, snippet);
      button.addEventListener("click", run(() => openHit(hit)));
      item.appendChild(button);
      list.appendChild(item);
    }
    $("search-status").textContent = data.hits.length ? data.hits.length + (data.hits.length === 1 ? " match" : " matches") : "No matches";
  }

  async function openHit(hit) {
    if (!state.session || state.session.session_id !== hit.session_id) await switchTo(hit.session_id);
    document.body.classList.remove("sidebar-open");
    const item = hit.message_id && $("messages").querySelector('.message[data-id="' + CSS.escape(hit.message_id) + '"]');
    if (!item) return;
    for (const old of $("messages").querySelectorAll(".message.highlight")) old.classList.remove("highlight");
    item.classList.add("highlight");
    item.tabIndex = -1;
    item.scrollIntoView({ block: "center" });
    item.focus({ preventScroll: true });
    state.follow = false;
  }

  function focusSearch() {
    document.body.classList.add("sidebar-open");
    $("search-input").focus();
    $("search-input").select();
  }

  // -- keyboard ------------------------------------------------------------------------------------------
  function onShortcut(e) {
    const typing = e.target instanceof Element && e.target.closest("input, textarea, select, [contenteditable]");
    const dialogOpen = document.querySelector("dialog[open]") !== null;
    const code = e.altKey && e.shiftKey && !e.ctrlKey && !e.metaKey ? e.code : "";
    let action = null;
    if (code === "KeyN") action = run(newSession);
    else if (code === "KeyR") action = regenerate;
    else if (e.key === "Escape" && e.shiftKey) action = () => $("input").focus();
    else if (e.key === "Escape" && state.generating && !dialogOpen) action = () => send({ type: "stop" });
    else if ((e.ctrlKey || e.metaKey) && !e.altKey && e.key.toLowerCase() === "k") action = focusSearch;
    else if (!typing && !dialogOpen && e.key === "/") action = focusSearch;
    else if (!typing && !dialogOpen && e.key === "?") action = () => $("help-dialog").showModal();
    if (!action) return;
    e.preventDefault();
    action();
  }

  // -- helpers -----------------------------------------------------------------------------------------
  function formatTime(iso) { return iso ? new Date(iso).toLocaleString() : "–"; }
  function relative(iso) {
    if (!iso) return "–";
    const seconds = Math.max(0, Math.round((Date.now() - new Date(iso).getTime()) / 1000));
    if (seconds < 60) return seconds + " s ago";
    if (seconds < 3600) return Math.round(seconds / 60) + " min ago";
    return Math.round(seconds / 3600) + " h ago";
  }
  function formatBytes(n) { return n < 1024 ? n + " B" : n < 1048576 ? (n / 1024).toFixed(1) + " KB" : (n / 1048576).toFixed(1) + " MB"; }
  function copyText(text, button) {
    const done = () => { const old = button.textContent; button.textContent = "Copied"; setTimeout(() => { button.textContent = old; }, 1200); };
    if (navigator.clipboard) navigator.clipboard.writeText(text).then(done, () => {});
  }
  function run(fn) { return (...args) => Promise.resolve(fn(...args)).catch((err) => showBanner(err.message || String(err))); }

  // -- wiring ------------------------------------------------------------------------------------------
  function wire() {
    $("composer").addEventListener("submit", submit);
    $("input").addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey && !e.isComposing) submit(e); });
    $("stop").addEventListener("click", () => send({ type: "stop" }));
    $("new-session").addEventListener("click", run(newSession));
    $("notice-new-session").addEventListener("click", run(newSession));
    $("clear-session").addEventListener("click", run(clearSession));
    $("delete-session").addEventListener("click", run(deleteSession));
    $("details-button").addEventListener("click", showDetails);
    $("list-sessions").addEventListener("click", run(listSessions));
    $("admin-form").addEventListener("submit", run(listSessions));
    $("settings-button").addEventListener("click", openSettings);
    $("settings-form").addEventListener("submit", run(saveSettings));
    $("settings-cancel").addEventListener("click", () => $("settings-dialog").close());
    $("export-md").addEventListener("click", () => exportConversation("md"));
    $("export-json").addEventListener("click", () => exportConversation("json"));
    $("title-input").addEventListener("change", run(rename));
    $("session-id").addEventListener("click", () => copyText(state.session.session_id, $("session-id")));
    $("file-input").addEventListener("change", (e) => { uploadFiles([...e.target.files]); e.target.value = ""; });
    $("dropzone").addEventListener("click", () => $("file-input").click());
    for (const zone of [$("dropzone"), document.querySelector(".chat")]) {
      zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
      zone.addEventListener("dragleave", () => zone.classList.remove("over"));
      zone.addEventListener("drop", (e) => { e.preventDefault(); zone.classList.remove("over"); uploadFiles([...e.dataTransfer.files]); });
    }
    $("messages").addEventListener("scroll", () => { const l = $("messages"); state.follow = l.scrollHeight - l.scrollTop - l.clientHeight < 60; });
    $("search-form").addEventListener("submit", run(search));
    $("search-input").addEventListener("input", scheduleSearch);
    $("theme").value = window.agenticTheme.chosen();
    $("theme").addEventListener("change", () => window.agenticTheme.choose($("theme").value));
    $("help-button").addEventListener("click", () => $("help-dialog").showModal());
    $("shortcuts-button").addEventListener("click", () => $("help-dialog").showModal());
    document.addEventListener("keydown", onShortcut);
    $("open-sidebar").addEventListener("click", () => document.body.classList.add("sidebar-open"));
    $("close-sidebar").addEventListener("click", () => document.body.classList.remove("sidebar-open"));
    setInterval(() => { if (state.session) $("last-activity").textContent = relative(state.session.last_activity); }, 5000);
    setInterval(() => send({ type: "ping" }), 25000);
  }

  async function start() {
    wire();
    renderKnownSessions();
    for (let delay = 1000; ; delay = Math.min(delay * 2, 10000)) {
      try { await openSession(await pickInitialSession()); return; }
      catch (err) { showBanner("The server cannot be reached. Retrying…"); await new Promise((r) => setTimeout(r, delay)); }
    }
  }

  window.agenticChat = { state };  // for debugging and browser tests
  start();
})();
