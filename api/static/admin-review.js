// #/review: accruals held for fraud review, with their findings; approve, or reject with a
// reason. Decisions need a recent TOTP check: the step-up dialog asks for it when needed.

import { h, section, empty, when, number, message, field } from "./admin-dom.js";
import { gql } from "./admin-api.js";
import { can } from "./admin-roles.js";
import { withStepUp } from "./admin-stepup.js";

const QUEUE = `{ reviewQueue(first: 100) { id memberExternalId eventExternalId points createdAt findings { rule verdict detail } } }`;
const APPROVE = "mutation($id: ID!) { approveAccrual(id: $id) { id status } }";
const REJECT = "mutation($id: ID!, $reason: String!) { rejectAccrual(id: $id, reason: $reason) { id status } }";

function item(review, decided) {
  const status = h("p", { hidden: true });
  const reason = h("input", { id: `reject-reason-${review.id}`, required: true });
  const approve = h("button", { type: "button", class: "approve" }, "Approve");
  const reject = h("button", { type: "submit", class: "danger" }, "Reject");
  const decide = async (operation, variables, verb) => {
    try {
      await withStepUp(() => gql(operation, variables));
      decided(card, `${verb}: ${review.points} points for ${review.memberExternalId}.`);
    } catch (error) {
      message(status, `Not ${verb.toLowerCase()}: ${error.message}`, true);
    }
  };
  approve.addEventListener("click", () => decide(APPROVE, { id: review.id }, "Approved"));
  const rejectForm = h("form", { class: "inline" }, field("Reason to reject", reason), reject);
  rejectForm.addEventListener("submit", (event) => {
    event.preventDefault();
    decide(REJECT, { id: review.id, reason: reason.value.trim() }, "Rejected");
  });
  const card = h(
    "article",
    { class: "card review", dataset: { id: review.id } },
    h("h2", null, `${number(review.points)} points · `, h("a", { href: `#/members/${encodeURIComponent(review.memberExternalId)}` }, review.memberExternalId)),
    h("p", { class: "muted" }, `Event ${review.eventExternalId}, held ${when(review.createdAt)}`),
    h("ul", { class: "findings" }, review.findings.map((f) => h("li", null, h("strong", null, `${f.rule} (${f.verdict})`), `: ${f.detail}`))),
    can("review") ? h("div", { class: "actions" }, approve, rejectForm) : null,
    status,
  );
  return card;
}

/** #/review: the queue, oldest first. */
export async function renderReview(view) {
  const { reviewQueue } = await gql(QUEUE);
  const done = h("p", { hidden: true, id: "review-status" });
  const decided = (card, text) => {
    card.remove();
    message(done, text);
  };
  view.append(
    section("Review queue", h("p", { class: "muted" }, "Accruals held by the fraud rules, oldest first. Deciding needs a TOTP check within the last 10 minutes."), done, reviewQueue.length ? null : empty("Nothing to review.")),
    ...reviewQueue.map((review) => item(review, decided)),
  );
}
