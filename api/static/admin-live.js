// The live stream of segment changes, folded in from /dashboard (docs/dashboard.md): one
// graphql-transport-ws connection for the whole console, resumed with `since` = the highest
// cursor received. The cursor and the latest changes are kept in sessionStorage, so a reload
// resumes where the tab stopped: nothing is missed or shown twice.

import { $, h, table, when, section } from "./admin-dom.js";
import { gql, session } from "./admin-api.js";

const CURSOR_KEY = "loyalty.console.cursor";
const FEED_KEY = "loyalty.console.feed";
const MAX_FEED = 200;
const MAX_DELAY_MS = 30000;
const CLOSE_REFUSED = 4403;
const CLOSE_RESUME = 4008;
const CHANGES = `subscription($since: String) {
  segmentChanges(since: $since) { cursor segmentKey memberExternalId change at } }`;

const listeners = new Set();
let socket = null;
let timer = null;
let attempt = 0;
let onRefused = () => {}; // the session was refused: sign out

function storedFeed() {
  try {
    return JSON.parse(sessionStorage.getItem(FEED_KEY) || "[]");
  } catch {
    return [];
  }
}

/** The latest changes, newest first (at most 200), kept across reloads. */
export const feed = () => storedFeed();

/** Call `listener(change)` for every change as it arrives; returns the unsubscribe function. */
export function onChange(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

function setStatus(state, text) {
  const badge = $("live-status");
  badge.dataset.state = state;
  badge.textContent = text;
}

function received(change) {
  const cursor = sessionStorage.getItem(CURSOR_KEY);
  if (cursor !== null && BigInt(change.cursor) <= BigInt(cursor)) return; // replayed twice
  sessionStorage.setItem(CURSOR_KEY, change.cursor);
  attempt = 0;
  const changes = [change, ...storedFeed()].slice(0, MAX_FEED);
  sessionStorage.setItem(FEED_KEY, JSON.stringify(changes));
  for (const listener of listeners) listener(change);
}

/** Open the stream (once signed in); `refused(reason)` is called when the server refuses the token. */
export function start(refused) {
  onRefused = refused;
  attempt = 0;
  connect();
}

/** Close the stream and forget the cursor and the feed (on sign-out). */
export function stop() {
  clearTimeout(timer);
  timer = null;
  const ws = socket;
  socket = null;
  if (ws) ws.close(1000, "signed out");
  sessionStorage.removeItem(CURSOR_KEY);
  sessionStorage.removeItem(FEED_KEY);
  setStatus("signed-out", "signed out");
}

function connect() {
  clearTimeout(timer);
  timer = null;
  setStatus("connecting", "connecting…");
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const ws = new WebSocket(`${scheme}${location.host}/graphql`, "graphql-transport-ws");
  const send = (message) => ws.send(JSON.stringify(message));
  socket = ws;
  ws.onopen = () => send({ type: "connection_init", payload: { authorization: `Bearer ${session.token()}` } });
  ws.onclose = (event) => closed(ws, event);
  ws.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "connection_ack") {
      const since = sessionStorage.getItem(CURSOR_KEY);
      send({ id: "changes", type: "subscribe", payload: { query: CHANGES, variables: { since } } });
      setStatus("live", "live");
    } else if (message.type === "next") {
      if (message.payload.errors) failed(ws, message.payload.errors);
      else received(message.payload.data.segmentChanges);
    } else if (message.type === "error") {
      failed(ws, message.payload);
    } else if (message.type === "complete") {
      ws.close(1000, "the stream completed");
    } else if (message.type === "ping") {
      send({ type: "pong" });
    }
  };
}

function failed(ws, errors) {
  const codes = errors.map((e) => e.extensions && e.extensions.code);
  if (codes.includes("UNAUTHENTICATED") || codes.includes("FORBIDDEN")) {
    socket = null;
    ws.close(1000, "refused");
    const reason = errors.map((e) => e.message).join("; ");
    setStatus("offline", "not live");
    $("live-status").title = reason;
    // a refused session signs out; a role without segments:read keeps the console, not the stream
    if (codes.includes("UNAUTHENTICATED")) onRefused(reason);
    return;
  }
  sessionStorage.removeItem(CURSOR_KEY); // e.g. too much to replay: carry on from now
  ws.close(1000, "starting over");
}

function closed(ws, event) {
  if (ws !== socket) return;
  socket = null;
  if (event.code === CLOSE_REFUSED) {
    setStatus("offline", "not live");
    $("live-status").title = event.reason;
    // an ended session signs out (gql does on UNAUTHENTICATED); a role without segments:read stays
    gql("{ program { key } }").catch(() => {});
    return;
  }
  if (event.code === CLOSE_RESUME && sessionStorage.getItem(CURSOR_KEY) === null) {
    const resume = /since: "([^"]+)"/.exec(event.reason);
    if (resume) sessionStorage.setItem(CURSOR_KEY, resume[1]);
  }
  const delay = Math.min(MAX_DELAY_MS, 500 * 2 ** attempt++) * (0.5 + Math.random() / 2);
  setStatus("reconnecting", `reconnecting in ${Math.ceil(delay / 1000)} s`);
  timer = setTimeout(connect, delay);
}

window.addEventListener("online", () => timer !== null && connect());

function changeRow(change) {
  return {
    props: { dataset: { segment: change.segmentKey } },
    cells: [
      when(change.at),
      h("a", { href: `#/segments/${encodeURIComponent(change.segmentKey)}` }, change.segmentKey),
      h("a", { href: `#/members/${encodeURIComponent(change.memberExternalId)}` }, change.memberExternalId),
      h("span", { class: change.change.toLowerCase() }, change.change),
    ],
  };
}

/** A feed table of `changes` that grows as changes arrive (filtered by `keep`); returns [node, stop]. */
export function liveFeed(caption, keep = () => true) {
  const rows = feed().filter(keep).map(changeRow);
  const wrapper = table(caption, ["Time", "Segment", "Member", "Change"], rows, { id: "feed" });
  const body = wrapper.querySelector("tbody");
  const stopListening = onChange((change) => {
    if (!keep(change)) return;
    const { props, cells } = changeRow(change);
    body.prepend(h("tr", props, cells.map((cell) => h("td", null, cell))));
    while (body.rows.length > MAX_FEED) body.deleteRow(-1);
  });
  return [wrapper, stopListening];
}

/** #/live: every segment's changes as they commit. */
export function renderLive(view) {
  const [feedTable, stopListening] = liveFeed("Latest segment changes, newest first");
  view.append(
    section(
      "Live segment changes",
      h("p", { class: "muted" }, "Every member entering or leaving a segment, newest first; the list survives a reload and resumes where it stopped."),
      feedTable,
    ),
  );
  return stopListening;
}
