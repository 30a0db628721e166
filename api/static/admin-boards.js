// #/leaderboards: a board's current top and the ranks around a member, per board and period,
// read again every few seconds while the page is open.

import { h, field, section, table, empty, number } from "./admin-dom.js";
import { gql } from "./admin-api.js";

const REFRESH_MS = 5000;
const DEFINITIONS = "{ leaderboardDefinitions { key name periods } }";
const BOARD = `query($key: String!, $period: LeaderboardPeriod!, $member: String!, $around: Boolean!) {
  leaderboard(key: $key, period: $period) { key period periodStart size
    top(first: 10) { rank score member { externalId } }
    around(memberExternalId: $member, radius: 3) @include(if: $around) { rank score member { externalId } } } }`;

const rows = (entries, highlight) =>
  entries.map((e) => ({
    props: e.member.externalId === highlight ? { class: "mine" } : null,
    cells: [String(e.rank), h("a", { href: `#/members/${encodeURIComponent(e.member.externalId)}` }, e.member.externalId), number(e.score)],
  }));

/** #/leaderboards */
export async function renderLeaderboards(view) {
  const { leaderboardDefinitions } = await gql(DEFINITIONS);
  if (!leaderboardDefinitions.length) {
    view.append(section("Leaderboards", empty("No boards.")));
    return null;
  }
  const board = h("select", { id: "board" }, leaderboardDefinitions.map((d) => h("option", { value: d.key }, d.name)));
  const period = h("select", { id: "period" });
  const member = h("input", { id: "board-member", type: "search", spellcheck: "false" });
  const output = h("div", { "aria-live": "polite" });
  const periods = () => {
    const chosen = leaderboardDefinitions.find((d) => d.key === board.value);
    period.replaceChildren(...chosen.periods.map((p) => h("option", { value: p }, p.replace("_", " ").toLowerCase())));
  };
  const show = async () => {
    const who = member.value.trim();
    try {
      const { leaderboard } = await gql(BOARD, { key: board.value, period: period.value, member: who, around: Boolean(who) });
      if (!leaderboard) return output.replaceChildren(empty("No such board."));
      output.replaceChildren(
        h("p", { class: "muted" }, `${number(leaderboard.size)} members on the board${leaderboard.periodStart ? `, period from ${new Date(leaderboard.periodStart).toLocaleDateString()}` : ""}.`),
        h("div", { class: "columns" },
          h("div", null, h("h3", null, "Top 10"), leaderboard.top.length ? table("Top 10", ["Rank", "Member", "Score"], rows(leaderboard.top, who), { numeric: [0, 2], id: "board-top" }) : empty("Nobody yet.")),
          who ? h("div", null, h("h3", null, `Around ${who}`), leaderboard.around.length ? table(`Around ${who}`, ["Rank", "Member", "Score"], rows(leaderboard.around, who), { numeric: [0, 2], id: "board-around" }) : empty(`${who} is not on this board.`)) : null,
        ),
      );
    } catch (error) {
      output.replaceChildren(h("p", { class: "error", role: "alert" }, error.message));
    }
  };
  board.addEventListener("change", () => { periods(); show(); });
  period.addEventListener("change", show);
  const form = h("form", { class: "inline" }, field("Board", board), field("Period", period), field("Around member (externalId)", member), h("button", { type: "submit" }, "Show"));
  form.addEventListener("submit", (event) => { event.preventDefault(); show(); });
  periods();
  view.append(section("Leaderboards", form, output));
  await show();
  const timer = setInterval(show, REFRESH_MS);
  return () => clearInterval(timer);
}
