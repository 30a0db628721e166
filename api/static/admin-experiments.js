// #/experiments: each experiment's results per arm, the conversion rate with its interval as a
// chart, and the uplift and p-value in a table.

import { h, section, table, empty, number, percent } from "./admin-dom.js";
import { gql } from "./admin-api.js";
import { intervalChart } from "./admin-charts.js";

const LIST = "{ experiments { key name segmentKey goalEventType conversionDays holdoutPercent controlVariant } }";
const RESULTS = `query($key: String!) { experimentResults(key: $key) {
  variant isControl exposed converted conversionRate upliftVsControl ciLow ciHigh pValue } }`;

const pValue = (p) => (p === null ? "—" : p < 0.001 ? "< 0.001" : p.toFixed(3));

/** #/experiments */
export async function renderExperiments(view) {
  const { experiments } = await gql(LIST);
  if (!experiments.length) {
    view.append(section("Experiments", empty("No experiments.")));
    return;
  }
  const results = await Promise.all(experiments.map((e) => gql(RESULTS, { key: e.key }).then((d) => d.experimentResults)));
  experiments.forEach((experiment, i) => {
    const arms = results[i];
    const rows = arms.map((a) => [a.isControl ? `${a.variant} (control)` : a.variant, number(a.exposed), number(a.converted), percent(a.conversionRate), a.ciLow === null ? "—" : `${percent(a.ciLow)} – ${percent(a.ciHigh)}`, percent(a.upliftVsControl), pValue(a.pValue)]);
    view.append(
      h(
        "section",
        { class: "card experiment", dataset: { key: experiment.key } },
        h("h2", null, experiment.name, " ", h("small", null, experiment.key)),
        h("p", { class: "muted" }, `Members of ${experiment.segmentKey}; goal: ${experiment.goalEventType} within ${experiment.conversionDays} days; holdout ${experiment.holdoutPercent} %.`),
        arms.length ? intervalChart(arms, `${experiment.key}: conversion rate per arm with its 95 % interval`) : empty("Nobody exposed yet."),
        table(`${experiment.key} results per arm`, ["Arm", "Exposed", "Converted", "Rate", "95 % interval", "Uplift", "p-value"], rows, { numeric: [1, 2, 3, 5, 6] }),
      ),
    );
  });
}
