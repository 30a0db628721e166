// The admin console (docs/console.md): sign-in, the shell and the hash router. Each section
// renders into <main id="view"> and may return a function that stops its timers and listeners.

import { $, h } from "./admin-dom.js";
import { gql, logIn, logOut, session } from "./admin-api.js";
import { loadCurrentAdmin } from "./admin-roles.js";
import * as live from "./admin-live.js";
import { renderSegments, renderSegment } from "./admin-segments.js";
import { renderEditor } from "./admin-editor.js";
import { renderMembers, renderMember } from "./admin-members.js";
import { renderReview } from "./admin-review.js";
import { renderLeaderboards } from "./admin-boards.js";
import { renderExperiments } from "./admin-experiments.js";

/** [pattern, section, render(view, ...captures)]: the first match renders. */
const ROUTES = [
  [/^\/segments\/new$/, "segments", (view) => renderEditor(view, null)],
  [/^\/segments\/([^/]+)\/edit$/, "segments", (view, key) => renderEditor(view, key)],
  [/^\/segments\/([^/]+)$/, "segments", renderSegment],
  [/^\/segments$/, "segments", renderSegments],
  [/^\/members\/([^/]+)$/, "members", renderMember],
  [/^\/members$/, "members", renderMembers],
  [/^\/review$/, "review", renderReview],
  [/^\/leaderboards$/, "leaderboards", renderLeaderboards],
  [/^\/experiments$/, "experiments", renderExperiments],
  [/^\/live$/, "live", live.renderLive],
];

let cleanup = null;
let navigation = 0; // which route() call is current: an older one's page is never shown

function notify(text) {
  $("notice").textContent = text;
  $("notice").hidden = !text;
}

function stopPage() {
  if (cleanup) cleanup();
  cleanup = null;
}

async function route(event) {
  if (!session.token()) return;
  stopPage();
  const current = ++navigation;
  const path = location.hash.replace(/^#/, "") || "/segments";
  // each navigation renders into a container of its own: a slower, older one fills a detached node
  const page = h("div", { class: "page" });
  $("view").replaceChildren(page);
  const found = ROUTES.find(([pattern]) => pattern.test(path));
  if (!found) {
    page.append(h("p", { class: "error", role: "alert" }, `No page at ${path}.`));
    return;
  }
  const [pattern, name, render] = found;
  for (const link of $("nav").querySelectorAll("a")) {
    if (link.dataset.section === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  let stop = null;
  try {
    stop = await render(page, ...pattern.exec(path).slice(1).map(decodeURIComponent));
  } catch (error) {
    page.append(h("p", { class: "error", role: "alert" }, error.message));
  }
  // after following a link, keyboard and screen-reader users continue at the new page
  if (event && current === navigation && !$("view").contains(document.activeElement)) $("view").focus();
  if (typeof stop !== "function") return;
  if (current === navigation) cleanup = stop;
  else stop(); // navigated away meanwhile
}

function showLogin(reason) {
  stopPage();
  navigation++;
  live.stop();
  $("view").replaceChildren();
  $("view").hidden = $("nav").hidden = $("who").hidden = true;
  $("program-name").textContent = "";
  $("login").hidden = false;
  notify(reason || "");
  $("login-email").focus();
}

async function showConsole() {
  $("login").hidden = true;
  $("view").hidden = $("nav").hidden = $("who").hidden = false;
  const [program, admin] = await Promise.all([gql("{ program { key name } }").catch(() => null), loadCurrentAdmin()]);
  if (!session.token()) return; // refused while loading
  $("program-name").textContent = program ? program.program.name : "";
  $("admin-email").textContent = admin.email || "";
  $("admin-role").textContent = admin.role || "";
  $("admin-role").hidden = !admin.role;
  document.title = program ? `${program.program.name} · Loyalty console` : "Loyalty console";
  live.start((reason) => session.expire(`Signed out: ${reason}`));
  await route();
}

$("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const button = $("login").querySelector("button");
  button.disabled = true;
  notify("");
  try {
    await logIn($("login-email").value.trim(), $("login-password").value, $("login-totp").value.trim());
    $("login-password").value = $("login-totp").value = "";
    await showConsole();
  } catch (error) {
    notify(`Sign-in refused: ${error.message}`);
  } finally {
    button.disabled = false;
  }
});

$("logout").addEventListener("click", async () => {
  await logOut();
  showLogin("You are signed out.");
});

session.onExpired((reason) => showLogin(reason));
window.addEventListener("hashchange", route);

if (session.watch()) showConsole();
else {
  session.clear();
  showLogin("");
}
