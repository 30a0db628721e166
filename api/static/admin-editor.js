// #/segments/new and #/segments/KEY/edit: the rule editor with a debounced live preview
// (previewSegment: exact size, 10 sample members, warnings, overlap with existing segments).

import { h, field, section, table, empty, number, message, debounce } from "./admin-dom.js";
import { gql } from "./admin-api.js";
import { segmentLink } from "./admin-segments.js";

const PREVIEW_DELAY_MS = 350;
const PREVIEW = `query($rule: String!) { previewSegment(rule: $rule) {
  rule size warnings sample { externalId pointsBalance lifecycle } overlaps { segmentKey both } } }`;
const LOAD = `query($key: String!) { segment(key: $key) { key name kind rule appliesTag } }`;
const SAVE_FIELDS = "key size";
const COLUMN = /column ([0-9]+):/;

/** Where in the rule an error points: the rule's line, a caret under the column, the message. */
function errorAt(rule, error) {
  const match = COLUMN.exec(error);
  if (!match) return h("p", { class: "error", role: "alert", id: "rule-error" }, error);
  const column = Number(match[1]);
  const before = rule.slice(0, column - 1);
  const lineStart = before.lastIndexOf("\n") + 1;
  const lineEnd = rule.indexOf("\n", lineStart);
  const line = rule.slice(lineStart, lineEnd === -1 ? undefined : lineEnd);
  const caret = `${" ".repeat(column - 1 - lineStart)}^`;
  return h(
    "div",
    { class: "rule-error", role: "alert", id: "rule-error" },
    h("pre", { "aria-hidden": "true" }, line, "\n", h("span", { class: "caret" }, caret)),
    h("p", { class: "error" }, error),
  );
}

function previewView(preview) {
  const sample = preview.sample.map((m) => [h("a", { href: `#/members/${encodeURIComponent(m.externalId)}` }, m.externalId), number(m.pointsBalance), m.lifecycle]);
  const overlaps = preview.overlaps.map((o) => [segmentLink(o.segmentKey), number(o.both), o.both === preview.size ? "contains all" : `${Math.round((o.both / Math.max(1, preview.size)) * 100)} %`]);
  return [
    h("p", { class: "big" }, h("strong", { id: "preview-size" }, String(preview.size)), " members match now"),
    preview.warnings.length ? h("ul", { class: "warnings", id: "preview-warnings" }, preview.warnings.map((w) => h("li", null, w))) : null,
    h("h3", null, "Sample"),
    sample.length ? table("Ten sample members", ["Member", "Balance", "Lifecycle"], sample, { numeric: [1], id: "preview-sample" }) : empty("No member matches."),
    h("h3", null, "Overlap with existing segments"),
    overlaps.length ? table("Overlap with existing segments", ["Segment", "Members in both", "Of this preview"], overlaps, { numeric: [1, 2], id: "preview-overlaps" }) : empty("No overlap."),
  ];
}

/** The editor; `key` null for a new segment. */
export async function renderEditor(view, key) {
  const existing = key ? (await gql(LOAD, { key })).segment : null;
  if (key && !existing) {
    view.append(h("p", { class: "error", role: "alert" }, `No segment ${key}.`));
    return null;
  }
  const keyInput = h("input", { id: "segment-key", required: true, pattern: "[a-z0-9_\\-]+", spellcheck: "false", value: existing ? existing.key : "", readonly: Boolean(existing) });
  const nameInput = h("input", { id: "segment-name", required: true, value: existing ? existing.name : "" });
  const ruleInput = h("textarea", { id: "segment-rule-input", rows: 4, required: true, spellcheck: "false", value: existing ? existing.rule || "" : "" });
  const tagInput = h("input", { id: "segment-tag", spellcheck: "false", value: existing ? existing.appliesTag || "" : "" });
  const previewBox = h("div", { id: "preview", "aria-live": "polite" }, empty("Type a rule to see who it selects."));
  const status = h("p", { hidden: true, id: "save-status" });
  let generation = 0;

  const preview = debounce(async () => {
    const rule = ruleInput.value;
    const mine = ++generation;
    if (!rule.trim()) return previewBox.replaceChildren(empty("Type a rule to see who it selects."));
    previewBox.setAttribute("aria-busy", "true");
    try {
      const result = (await gql(PREVIEW, { rule })).previewSegment;
      if (mine === generation) previewBox.replaceChildren(...previewView(result).filter(Boolean));
      ruleInput.removeAttribute("aria-invalid");
    } catch (error) {
      if (mine !== generation) return;
      ruleInput.setAttribute("aria-invalid", "true");
      previewBox.replaceChildren(errorAt(rule, error.message));
    } finally {
      if (mine === generation) previewBox.removeAttribute("aria-busy");
    }
  }, PREVIEW_DELAY_MS);
  ruleInput.addEventListener("input", preview);

  const form = h(
    "form",
    { id: "segment-form", class: "stack" },
    field("Key", keyInput, existing ? "The key cannot change." : "Lower-case letters, digits, _ and -."),
    field("Name", nameInput),
    field("Rule", ruleInput, "e.g. count(purchase, 30d) >= 2 and attributes.country = \"FR\" — see docs/segments.md"),
    field("Tag members carry while inside (optional)", tagInput),
    h("div", { class: "actions" }, h("button", { type: "submit", id: "save-segment" }, existing ? "Save changes" : "Create segment"), h("a", { href: existing ? `#/segments/${encodeURIComponent(existing.key)}` : "#/segments" }, "Cancel")),
    status,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = { key: keyInput.value.trim(), name: nameInput.value.trim(), kind: "DYNAMIC", rule: ruleInput.value, appliesTag: tagInput.value.trim() || null };
    const mutation = existing ? "updateSegment" : "createSegment";
    try {
      const saved = (await gql(`mutation($input: SegmentInput!) { ${mutation}(input: $input) { ${SAVE_FIELDS} } }`, { input }))[mutation];
      message(status, `Saved: ${saved.size} members.`);
      location.hash = `#/segments/${encodeURIComponent(saved.key)}`;
    } catch (error) {
      message(status, `Not saved: ${error.message}`, true);
    }
  });
  view.append(
    h("div", { class: "columns editor" }, section(existing ? `Edit ${existing.key}` : "New segment", form), section("Live preview", previewBox)),
  );
  if (existing) preview();
  keyInput.focus();
  return () => generation++;
}
