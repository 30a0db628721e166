// #/segments (the list, sizes kept live) and #/segments/KEY (one segment's page).

import { h, table, section, empty, when, number, percent, message, field } from "./admin-dom.js";
import { gql } from "./admin-api.js";
import { can } from "./admin-roles.js";
import { sparkline, historyChart } from "./admin-charts.js";
import { onChange, liveFeed } from "./admin-live.js";

const LIST = `{ segments { key name kind rule appliesTag size history { size } } }`;
const PAGE = `query($key: String!, $after: String, $since: DateTime!) { segment(key: $key) {
  key name kind rule appliesTag size warnings
  history { at size entered left }
  triggers { on action points percentOfLifetimeValue tag template webhookKey reason }
  changes(since: $since, first: 500) { cursor memberExternalId change at }
  members(first: 20, after: $after) { totalCount pageInfo { hasNextPage endCursor }
    edges { node { externalId pointsBalance lifecycle } } } } segments { key } }`;
const MEMBERS = `query($key: String!, $after: String) { segment(key: $key) {
  members(first: 20, after: $after) { totalCount pageInfo { hasNextPage endCursor }
    edges { node { externalId pointsBalance lifecycle } } } } }`;
const ANALYTICS = `query($key: String!, $from: Date!, $to: Date!) {
  segmentAnalytics(key: $key, from: $from, to: $to) { entered left averagePointsBalance purchasesPerMember
    averageTransactionValue conversion { goalEventType days entered converted rate }
    messages { template channel created sent opened clicked converted } } }`;
const OVERLAP = `query($a: String!, $b: String!) { segmentOverlap(a: $a, b: $b) { b both jaccard } }`;
const BREAKDOWN = `query($key: String!, $path: String!) { segmentBreakdown(key: $key, path: $path) { value count share } }`;

export const segmentLink = (key) => h("a", { href: `#/segments/${encodeURIComponent(key)}` }, key);
const memberLink = (id) => h("a", { href: `#/members/${encodeURIComponent(id)}` }, id);
const isoDay = (date) => date.toISOString().slice(0, 10);
/** The entries and exits listed on a segment's page: the period and the most read (the log is oldest first). */
const CHANGES_DAYS = 7;
const MAX_CHANGES = 500;

/** #/segments: every segment with its live size, 30-day sparkline, kind, rule and tag. */
export async function renderSegments(view) {
  const { segments } = await gql(LIST);
  const sizes = new Map();
  const rows = segments.map((segment) => {
    const size = h("span", { class: "size" }, number(segment.size));
    sizes.set(segment.key, { node: size, value: segment.size });
    const trend = segment.history.map((point) => point.size);
    return {
      props: { dataset: { key: segment.key } },
      cells: [
        h("span", null, segmentLink(segment.key), h("br"), h("small", null, segment.name)),
        size,
        sparkline(trend, `${segment.key}: size over the last 30 days, from ${trend[0] ?? 0} to ${trend.at(-1) ?? 0}`),
        segment.kind,
        h("code", { class: "rule" }, segment.rule || "—"),
        segment.appliesTag || "—",
      ],
    };
  });
  const actions = can("editSegments") ? h("p", null, h("a", { class: "button", href: "#/segments/new", id: "new-segment" }, "New segment")) : null;
  view.append(
    section(
      "Segments",
      actions,
      segments.length
        ? table("Segments with their live sizes", ["Segment", "Size", "30 days", "Kind", "Rule", "Tag"], rows, { numeric: [1], id: "segments" })
        : empty("No segments yet."),
    ),
  );
  return onChange((change) => {
    const size = sizes.get(change.segmentKey);
    if (!size) return;
    size.value += change.change === "ENTERED" ? 1 : -1;
    size.node.textContent = number(size.value);
  });
}

function triggerText(t) {
  const what = t.points ?? t.percentOfLifetimeValue ?? t.tag ?? t.template ?? t.webhookKey ?? "";
  return `${t.on}: ${t.action}${what === "" ? "" : ` ${what}`}${t.reason ? ` (${t.reason})` : ""}`;
}

function membersSection(key, first) {
  const holder = h("div");
  let cursors = [null];
  const load = async (after) => {
    show((await gql(MEMBERS, { key, after })).segment.members);
  };
  const show = (members) => {
    const rows = members.edges.map(({ node }) => [memberLink(node.externalId), number(node.pointsBalance), node.lifecycle]);
    const previous = h("button", { type: "button", class: "secondary", disabled: cursors.length < 2 }, "Previous");
    const next = h("button", { type: "button", class: "secondary", disabled: !members.pageInfo.hasNextPage }, "Next");
    previous.addEventListener("click", () => {
      cursors.pop();
      load(cursors.at(-1));
    });
    next.addEventListener("click", () => {
      cursors.push(members.pageInfo.endCursor);
      load(members.pageInfo.endCursor);
    });
    holder.replaceChildren(
      h("p", { class: "muted" }, `${number(members.totalCount)} members, page ${cursors.length}`),
      rows.length ? table("Members", ["Member", "Balance", "Lifecycle"], rows, { numeric: [1], id: "segment-members" }) : empty("No members."),
      h("div", { class: "pager" }, previous, next),
    );
  };
  show(first);
  return holder;
}

function deleteButton(key) {
  const status = h("p", { hidden: true });
  const button = h("button", { type: "button", class: "danger", id: "delete-segment" }, "Delete segment");
  let armed = false;
  button.addEventListener("click", async () => {
    if (!armed) {
      armed = true;
      button.textContent = `Confirm: delete ${key} and its history`;
      return;
    }
    try {
      await gql("mutation($key: String!) { deleteSegment(key: $key) }", { key });
      location.hash = "#/segments";
    } catch (error) {
      message(status, `Not deleted: ${error.message}`, true);
      armed = false;
      button.textContent = "Delete segment";
    }
  });
  return [button, status];
}

async function analyticsSection(key, others) {
  const to = new Date();
  const from = new Date(to.getTime() - 29 * 86400000);
  const [analytics, overlaps] = await Promise.all([
    gql(ANALYTICS, { key, from: isoDay(from), to: isoDay(to) }).then((d) => d.segmentAnalytics),
    Promise.all(others.map((other) => gql(OVERLAP, { a: key, b: other }).then((d) => d.segmentOverlap))),
  ]);
  const c = analytics.conversion;
  const facts = h(
    "dl",
    { class: "facts" },
    h("dt", null, "Entered / left (30 days)"), h("dd", null, `${number(analytics.entered)} / ${number(analytics.left)}`),
    h("dt", null, `Conversion to ${c.goalEventType} within ${c.days} days`), h("dd", null, `${percent(c.rate)} (${number(c.converted)} of ${number(c.entered)})`),
    h("dt", null, "Average balance"), h("dd", null, number(analytics.averagePointsBalance)),
    h("dt", null, "Purchases per member"), h("dd", null, number(analytics.purchasesPerMember)),
    h("dt", null, "Average transaction value"), h("dd", null, analytics.averageTransactionValue ?? "—"),
  );
  const messages = analytics.messages.map((m) => [m.template, m.channel, number(m.sent), number(m.opened), number(m.clicked), number(m.converted)]);
  const overlapRows = overlaps.filter((o) => o.both > 0).map((o) => [segmentLink(o.b), number(o.both), percent(o.jaccard)]);
  const path = h("input", { type: "text", value: "gender", spellcheck: "false" });
  const breakdown = h("div");
  const showBreakdown = async () => {
    try {
      const rows = (await gql(BREAKDOWN, { key, path: path.value.trim() })).segmentBreakdown;
      breakdown.replaceChildren(
        rows.length ? table("Breakdown", ["Value", "Members", "Share"], rows.map((r) => [JSON.stringify(r.value), number(r.count), percent(r.share)]), { numeric: [1, 2] }) : empty("No member has this attribute."),
      );
    } catch (error) {
      breakdown.replaceChildren(h("p", { class: "error", role: "alert" }, error.message));
    }
  };
  const form = h("form", { class: "inline" }, field("Breakdown by attribute", path), h("button", { type: "submit", class: "secondary" }, "Show"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    showBreakdown();
  });
  showBreakdown();
  const analyticsCard = section(
    "Analytics",
    facts,
    h("h3", null, "Messages"),
    messages.length ? table("Messages sent by the segment's triggers", ["Template", "Channel", "Sent", "Opened", "Clicked", "Converted"], messages, { numeric: [2, 3, 4, 5] }) : empty("No messages in the range."),
    h("h3", null, "Overlap with other segments"),
    overlapRows.length ? table("Overlap", ["Segment", "Members in both", "Jaccard"], overlapRows, { numeric: [1, 2], id: "overlaps" }) : empty("No overlap with another segment."),
    h("h3", null, "Breakdown"),
    form,
    breakdown,
  );
  analyticsCard.id = "analytics";
  return analyticsCard;
}

/** #/segments/KEY: chart, entries and exits, members, rule, triggers, analytics, live feed. */
export async function renderSegment(view, key) {
  const since = new Date(Date.now() - CHANGES_DAYS * 86400000).toISOString();
  const data = await gql(PAGE, { key, after: null, since });
  const segment = data.segment;
  if (!segment) {
    view.append(h("p", { class: "error", role: "alert" }, `No segment ${key}.`));
    return null;
  }
  const size = h("strong", { id: "segment-size" }, number(segment.size));
  let current = segment.size;
  const days = segment.history.map((d) => ({ ...d, label: new Date(d.at).toLocaleDateString() }));
  const truncated = segment.changes.length === MAX_CHANGES;
  const changes = [...segment.changes].reverse().map((c) => [when(c.at), memberLink(c.memberExternalId), h("span", { class: c.change.toLowerCase() }, c.change)]);
  const tools = can("editSegments")
    ? h("div", { class: "actions" }, segment.kind === "DYNAMIC" ? h("a", { class: "button", href: `#/segments/${encodeURIComponent(key)}/edit` }, "Edit") : null, ...deleteButton(key))
    : null;
  const [feedTable, stopFeed] = liveFeed(`Changes of ${key} as they commit`, (change) => change.segmentKey === key);
  const stopSize = onChange((change) => {
    if (change.segmentKey !== key) return;
    current += change.change === "ENTERED" ? 1 : -1;
    size.textContent = number(current);
  });
  view.append(
    h(
      "section",
      { class: "card" },
      h("h1", null, segment.name, " ", h("small", null, `${segment.key} · ${segment.kind}`)),
      h("p", null, "Members now: ", size, segment.appliesTag ? ` · tag ${segment.appliesTag}` : ""),
      h("pre", { class: "rule", id: "segment-rule" }, segment.rule || "(static: members are added by import)"),
      segment.warnings.length ? h("ul", { class: "warnings" }, segment.warnings.map((w) => h("li", null, w))) : null,
      tools,
    ),
    section("Size, last 30 days", historyChart(days, `Daily size of ${key} over the last 30 days, from ${days[0]?.size ?? 0} to ${days.at(-1)?.size ?? 0}`), h("p", { class: "legend" }, h("span", { class: "key line" }, "size"), h("span", { class: "key entered" }, "entries"), h("span", { class: "key left" }, "exits"))),
    h("div", { class: "columns" },
      section(
        `Entries and exits, last ${CHANGES_DAYS} days`,
        truncated ? h("p", { class: "muted" }, `The first ${MAX_CHANGES} of the period, newest first; the chart counts them all.`) : null,
        changes.length ? h("div", { class: "tall" }, table("Entries and exits, newest first", ["Time", "Member", "Change"], changes, { id: "segment-changes" })) : empty(`None in ${CHANGES_DAYS} days.`),
      ),
      section("Live changes", h("p", { class: "muted" }, "As they commit."), feedTable),
    ),
    section("Members", membersSection(key, segment.members)),
    section("Triggers", segment.triggers.length ? h("ul", null, segment.triggers.map((t) => h("li", null, triggerText(t)))) : empty("No triggers.")),
  );
  const others = data.segments.map((s) => s.key).filter((k) => k !== key).slice(0, 30);
  view.append(await analyticsSection(key, others).catch((error) => section("Analytics", h("p", { class: "error", role: "alert" }, error.message))));
  return () => {
    stopFeed();
    stopSize();
  };
}
