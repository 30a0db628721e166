// #/members (search by externalId) and #/members/ID (one member's page and timeline).

import { h, field, section, table, empty, when, day, number, percent, message } from "./admin-dom.js";
import { gql } from "./admin-api.js";
import { can } from "./admin-roles.js";
import { withStepUp } from "./admin-stepup.js";
import { segmentLink } from "./admin-segments.js";
import { onChange } from "./admin-live.js";

/** Each of the timeline's three lists reads this many of its latest items. */
const TIMELINE_EACH = 40;
const MEMBER = `query($id: String!, $first: Int!) { member(externalId: $id) {
  externalId kind joinedAt pointsBalance pendingPoints lifecycle churnRisk7d abcClass
  rfm { r f m label }
  tier { tier { key name threshold } since qualifyingValue next { name threshold } toNext keptUntil }
  tags { key source since }
  segments { key name }
  expiringPoints(withinDays: 90) { points expiresAt }
  ledger(first: $first) { edges { node { id points status kind reason actor createdAt eventExternalId } } }
  events(first: $first) { externalId type occurredAt amount status pointsAwarded }
  segmentChanges(first: $first) { segmentKey change at }
} }`;
const LIST = `query($after: String) { members(first: 25, after: $after) { totalCount pageInfo { hasNextPage endCursor }
  edges { node { externalId pointsBalance lifecycle joinedAt } } } }`;
const ADJUST = `mutation($id: String!, $points: Int!, $reason: String!, $key: String!) {
  adjustPoints(memberExternalId: $id, points: $points, reason: $reason, idempotencyKey: $key) { id points } }`;

const memberHref = (id) => `#/members/${encodeURIComponent(id)}`;

/** #/members: find a member by externalId, or browse them in creation order. */
export async function renderMembers(view) {
  const input = h("input", { id: "member-search", type: "search", required: true, spellcheck: "false", autocomplete: "off" });
  const form = h("form", { class: "inline", role: "search" }, field("Member externalId", input), h("button", { type: "submit" }, "Open"));
  const status = h("p", { hidden: true });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const id = input.value.trim();
    if (!id) return;
    const found = await gql("query($id: String!) { member(externalId: $id) { externalId } }", { id }).catch((error) => ({ error }));
    if (found.error) message(status, found.error.message, true);
    else if (!found.member) message(status, `No member ${id}.`, true);
    else location.hash = memberHref(id);
  });
  const list = h("div");
  const cursors = [null];
  const load = async (after) => {
    const { members } = await gql(LIST, { after });
    const rows = members.edges.map(({ node }) => [h("a", { href: memberHref(node.externalId) }, node.externalId), number(node.pointsBalance), node.lifecycle, day(node.joinedAt)]);
    const previous = h("button", { type: "button", class: "secondary", disabled: cursors.length < 2 }, "Previous");
    const next = h("button", { type: "button", class: "secondary", disabled: !members.pageInfo.hasNextPage }, "Next");
    previous.addEventListener("click", () => { cursors.pop(); load(cursors.at(-1)); });
    next.addEventListener("click", () => { cursors.push(members.pageInfo.endCursor); load(members.pageInfo.endCursor); });
    list.replaceChildren(
      h("p", { class: "muted" }, `${number(members.totalCount)} members`),
      rows.length ? table("Members in creation order", ["Member", "Balance", "Lifecycle", "Joined"], rows, { numeric: [1] }) : empty("No members yet."),
      h("div", { class: "pager" }, previous, next),
    );
  };
  await load(null);
  view.append(section("Find a member", form, status), section("All members", list));
  input.focus();
}

function tierView(tier) {
  if (!tier) return empty("No tier ladder.");
  const reached = Number(tier.qualifyingValue);
  const next = tier.next ? Number(tier.next.threshold) : null;
  const progress = next ? Math.min(1, reached / next) : 1;
  return h(
    "div",
    null,
    h("p", null, h("strong", null, tier.tier.name), ` since ${day(tier.since)}`, tier.keptUntil ? ` · kept until ${day(tier.keptUntil)}` : ""),
    h("progress", { max: 100, value: Math.round(progress * 100), "aria-label": "Progress to the next tier" }),
    h("p", { class: "muted" }, tier.next ? `${tier.qualifyingValue} of ${tier.next.threshold}: ${tier.toNext} to ${tier.next.name}` : `${tier.qualifyingValue}: the top tier`),
  );
}

/** Events, ledger entries and segment changes as one list, newest first. A list that was cut at
 * TIMELINE_EACH ends the timeline where it ends, so the merged list has no gap in time. */
function timeline(member) {
  const lists = [member.events.map((e) => e.occurredAt), member.ledger.edges.map((e) => e.node.createdAt), member.segmentChanges.map((c) => c.at)];
  const cut = Math.max(-Infinity, ...lists.filter((l) => l.length === TIMELINE_EACH).map((l) => Math.min(...l.map(Date.parse))));
  const items = [
    ...member.events.map((e) => ({ at: e.occurredAt, kind: "event", what: `${e.type}${e.amount ? ` ${e.amount}` : ""}`, detail: `${e.status}${e.pointsAwarded ? `, +${e.pointsAwarded} points` : ""} · ${e.externalId}` })),
    ...member.ledger.edges.map(({ node }) => ({ at: node.createdAt, kind: "points", what: `${node.points > 0 ? "+" : ""}${node.points} ${node.kind}`, detail: `${node.status}${node.reason ? ` · ${node.reason}` : ""}${node.actor ? ` · by ${node.actor}` : ""}` })),
    ...member.segmentChanges.map((c) => ({ at: c.at, kind: "segment", what: h("span", null, h("span", { class: c.change.toLowerCase() }, c.change), " ", segmentLink(c.segmentKey)), detail: "" })),
  ];
  items.sort((a, b) => Date.parse(b.at) - Date.parse(a.at));
  return items.filter((item) => Date.parse(item.at) >= cut).map((item) => ({ props: { dataset: { kind: item.kind } }, cells: [when(item.at), item.kind, item.what, item.detail] }));
}

function adjustForm(id, reload, notice) {
  const points = h("input", { id: "adjust-points", type: "number", required: true, step: 1 });
  const reason = h("input", { id: "adjust-reason", required: true, value: "goodwill" });
  const status = h("p", { hidden: true, id: "adjust-status" });
  if (notice) message(status, notice);
  const form = h("form", { class: "inline", id: "adjust-form" }, field("Points (+ credit, - correction)", points), field("Reason", reason), h("button", { type: "submit" }, "Adjust"), status);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const variables = { id, points: Number(points.value), reason: reason.value.trim(), key: crypto.randomUUID() };
    try {
      const entry = (await withStepUp(() => gql(ADJUST, variables))).adjustPoints;
      await reload(`Adjusted by ${entry.points}.`);
    } catch (error) {
      message(status, `Not adjusted: ${error.message}`, true);
    }
  });
  return form;
}

function privacyTools(id) {
  const status = h("p", { hidden: true, id: "privacy-status" });
  const tools = [];
  if (can("exportMembers")) {
    const exportButton = h("button", { type: "button", class: "secondary", id: "export-member" }, "Export (JSON)");
    exportButton.addEventListener("click", async () => {
      try {
        const data = (await gql("query($id: String!) { exportMember(externalId: $id) }", { id })).exportMember;
        const blob = new Blob([JSON.stringify(data, null, 2)], { type: "application/json" });
        const link = h("a", { href: URL.createObjectURL(blob), download: `member-${id}.json` }, `Download member-${id}.json`);
        status.replaceChildren(link);
        status.className = "ok";
        status.hidden = false;
      } catch (error) {
        message(status, `Not exported: ${error.message}`, true);
      }
    });
    tools.push(exportButton);
  }
  if (can("eraseMembers")) {
    const eraseButton = h("button", { type: "button", class: "danger", id: "erase-member" }, "Erase member");
    let armed = false;
    eraseButton.addEventListener("click", async () => {
      if (!armed) {
        armed = true;
        eraseButton.textContent = `Confirm: erase ${id} for good`;
        return;
      }
      try {
        await withStepUp(() => gql("mutation($id: String!) { eraseMember(externalId: $id) }", { id }));
        message(status, `${id} was erased.`);
      } catch (error) {
        message(status, `Not erased: ${error.message}`, true);
      }
      armed = false;
      eraseButton.textContent = "Erase member";
    });
    tools.push(eraseButton);
  }
  return tools.length ? section("Privacy", h("div", { class: "actions" }, tools), status) : null;
}

/** #/members/ID: balance, tier, tags, segments, scores, expiring points, timeline, actions. */
export async function renderMember(view, id) {
  const draw = async (notice) => {
    const { member } = await gql(MEMBER, { id, first: TIMELINE_EACH });
    if (!member) return view.replaceChildren(h("p", { class: "error", role: "alert" }, `No member ${id}.`));
    const facts = h(
      "dl",
      { class: "facts", id: "member-facts" },
      h("dt", null, "Balance"), h("dd", { id: "member-balance" }, number(member.pointsBalance)),
      h("dt", null, "Pending review"), h("dd", null, number(member.pendingPoints)),
      h("dt", null, "Lifecycle"), h("dd", null, member.lifecycle),
      h("dt", null, "RFM"), h("dd", null, member.rfm ? `${member.rfm.r}-${member.rfm.f}-${member.rfm.m} ${member.rfm.label}` : "—"),
      h("dt", null, "ABC class"), h("dd", null, member.abcClass ?? "—"),
      h("dt", null, "Churn risk (7 days)"), h("dd", null, percent(member.churnRisk7d)),
      h("dt", null, "Joined"), h("dd", null, day(member.joinedAt)),
    );
    const expiring = member.expiringPoints.map((lot) => [day(lot.expiresAt), number(lot.points)]);
    view.replaceChildren(
      h("section", { class: "card" }, h("h1", null, member.externalId, " ", h("small", null, member.kind)), facts),
      h(
        "div",
        { class: "columns" },
        section("Tier", tierView(member.tier)),
        section("Tags", member.tags.length ? h("p", { id: "member-tags" }, member.tags.map((t) => h("span", { class: "tag" }, t.key, h("small", null, t.source)))) : empty("No tags.")),
        section("Segments", member.segments.length ? h("ul", { id: "member-segments" }, member.segments.map((s) => h("li", null, segmentLink(s.key), ` ${s.name}`))) : h("p", { class: "muted", id: "member-segments" }, "In no segment.")),
        section("Points expiring in 90 days", expiring.length ? table("Expiring points", ["Expires", "Points"], expiring, { numeric: [1] }) : empty("None.")),
      ),
      can("adjustPoints") ? section("Goodwill adjustment", adjustForm(id, draw, notice)) : null,
      privacyTools(id),
      section("Timeline", h("div", { class: "tall" }, table("Events, points and segment changes, newest first", ["Time", "Kind", "What", "Detail"], timeline(member), { id: "timeline" }))),
    );
  };
  await draw(null);
  let pending = null;
  const stop = onChange((change) => {
    if (change.memberExternalId !== id || pending) return;
    pending = setTimeout(() => {
      pending = null;
      draw(null);
    }, 250);
  });
  return () => {
    stop();
    clearTimeout(pending);
  };
}
