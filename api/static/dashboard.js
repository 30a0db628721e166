// The live dashboard (docs/dashboard.md): the program's segments with their sizes, kept
// current by segmentChanges over graphql-transport-ws on /graphql. Server text only ever
// reaches the page through textContent.
"use strict";

(() => {
  const TOKEN_KEY = "loyalty.dashboard.token";
  const MAX_ROWS = 200;
  const MAX_DELAY_MS = 30000;
  const CLOSE_REFUSED = 4403;
  const CLOSE_RESUME = 4008; // fell behind, or the server missed changes: resume from a cursor
  const SEGMENTS = "query { segments { key name kind size } }";
  const CHANGES = `subscription($since: String) {
    segmentChanges(since: $since) { cursor segmentKey memberExternalId change at } }`;

  const $ = (id) => document.getElementById(id);
  const sizes = new Map(); // segment key -> {cell, size}; size null when unknown
  let socket = null; // the current WebSocket; null while signed out or waiting to reconnect
  let cursor = null; // the highest change received: where a reconnect resumes
  let loaded = false; // sizes were read and `cursor` continues from them
  let attempt = 0;
  let timer = null;

  const token = () => sessionStorage.getItem(TOKEN_KEY);

  function setStatus(state, text) {
    $("status").dataset.state = state;
    $("status").textContent = text;
  }

  function notify(text) {
    $("notice").textContent = text;
    $("notice").hidden = !text;
  }

  function addCell(row, text, className) {
    const cell = row.insertCell();
    cell.textContent = text;
    if (className) cell.className = className;
    return cell;
  }

  function addSegment(key, name, kind, size) {
    const row = $("segments").tBodies[0].insertRow();
    row.dataset.key = key;
    addCell(row, key);
    addCell(row, name);
    addCell(row, kind);
    const cell = addCell(row, size === null ? "?" : String(size), "num size");
    if (size === null) cell.title = "created after the page loaded: reload for its size";
    sizes.set(key, { cell, size });
  }

  function showSegments(segments) {
    $("segments").tBodies[0].replaceChildren();
    sizes.clear();
    for (const s of segments) addSegment(s.key, s.name, s.kind, s.size);
    loaded = true;
  }

  function showChange(change) {
    // a late commit can carry a lower cursor than one already shown: resume after the highest
    if (cursor === null || BigInt(change.cursor) > BigInt(cursor)) cursor = change.cursor;
    attempt = 0;
    if (!sizes.has(change.segmentKey)) addSegment(change.segmentKey, "", "", null);
    const segment = sizes.get(change.segmentKey);
    if (segment.size !== null) {
      segment.size += change.change === "ENTERED" ? 1 : -1;
      segment.cell.textContent = String(segment.size);
    }
    const body = $("changes").tBodies[0];
    const row = body.insertRow(0);
    addCell(row, new Date(change.at).toLocaleString()).title = change.at;
    addCell(row, change.segmentKey);
    addCell(row, change.memberExternalId);
    addCell(row, change.change, change.change.toLowerCase());
    while (body.rows.length > MAX_ROWS) body.deleteRow(-1);
  }

  function connect() {
    clearTimeout(timer);
    timer = null;
    setStatus("connecting", "connecting…");
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(scheme + location.host + "/graphql", "graphql-transport-ws");
    const send = (message) => ws.send(JSON.stringify(message));
    const subscribe = () => {
      send({ id: "changes", type: "subscribe", payload: { query: CHANGES, variables: { since: cursor } } });
      setStatus("live", "live");
    };
    socket = ws;
    ws.onopen = () => send({ type: "connection_init", payload: { authorization: `Bearer ${token()}` } });
    ws.onclose = (event) => closed(ws, event);
    ws.onmessage = (event) => {
      const message = JSON.parse(event.data);
      switch (message.type) {
        case "connection_ack":
          if (loaded) {
            attempt = 0; // resumed: the backoff starts over (a stream that keeps failing was not loaded)
            subscribe();
          } else send({ id: "segments", type: "subscribe", payload: { query: SEGMENTS } });
          break;
        case "next":
          if (message.payload.errors) failed(ws, message.payload.errors);
          else if (message.id === "changes") showChange(message.payload.data.segmentChanges);
          else {
            showSegments(message.payload.data.segments);
            subscribe();
          }
          break;
        case "error":
          failed(ws, message.payload);
          break;
        case "complete":
          if (message.id === "changes") ws.close(1000, "the stream completed");
          break;
        case "ping":
          send({ type: "pong" });
          break;
      }
    };
  }

  function failed(ws, errors) {
    const codes = errors.map((e) => e.extensions && e.extensions.code);
    const text = errors.map((e) => e.message).join("; ");
    if (codes.includes("UNAUTHENTICATED") || codes.includes("FORBIDDEN")) {
      return signOut(`The server refused the token: ${text}`);
    }
    notify(`${text} (the sizes are read again)`);
    loaded = false; // e.g. too much happened after `cursor` to replay: start over from fresh sizes
    cursor = null;
    ws.close(1000, "starting over");
  }

  function closed(ws, event) {
    if (ws !== socket) return; // signed out, or replaced
    socket = null;
    if (event.code === CLOSE_REFUSED) {
      return signOut(`The server refused the token: ${event.reason || "no reason given"}`);
    }
    if (event.code === CLOSE_RESUME) {
      notify("The live stream was interrupted; it resumes where it stopped.");
      const resume = /since: "([^"]+)"/.exec(event.reason);
      if (cursor === null && resume) cursor = resume[1];
      if (cursor === null) loaded = false;
    }
    const delay = Math.min(MAX_DELAY_MS, 500 * 2 ** attempt++) * (0.5 + Math.random() / 2);
    setStatus("reconnecting", `reconnecting in ${Math.ceil(delay / 1000)} s`);
    timer = setTimeout(connect, delay);
  }

  function signIn(value) {
    sessionStorage.setItem(TOKEN_KEY, value);
    $("login").hidden = true;
    $("board").hidden = $("logout").hidden = false;
    loaded = false;
    cursor = null;
    attempt = 0;
    connect();
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    clearTimeout(timer);
    timer = null;
    const ws = socket;
    socket = null;
    if (ws) ws.close(1000, "signed out");
    sizes.clear();
    $("segments").tBodies[0].replaceChildren();
    $("changes").tBodies[0].replaceChildren();
    $("board").hidden = $("logout").hidden = true;
    $("login").hidden = false;
    setStatus("signed-out", "signed out");
    notify(message);
  }

  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token").value.trim().replace(/^Bearer\s+/i, "");
    $("token").value = "";
    notify("");
    if (value) signIn(value);
  });
  $("logout").addEventListener("click", () => signOut(""));
  window.addEventListener("online", () => timer !== null && connect());
  if (token()) signIn(token());
})();
