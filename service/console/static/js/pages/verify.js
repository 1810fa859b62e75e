// Verify: two photos side by side, their distance against the threshold, same person or not.

import { api } from "../api.js";
import { announce, distanceBar, errorBox, fmt, h, replace } from "../dom.js";
import { dropZone, photoWithBoxes } from "../widgets.js";

export async function verifyPage(view, { urls }) {
  const chosen = { a: null, b: null };
  const previews = { a: h("div", { class: "preview-slot", id: "verify-preview-a" }), b: h("div", { class: "preview-slot", id: "verify-preview-b" }) };
  const threshold = h("input", {
    type: "number",
    id: "verify-threshold",
    name: "threshold",
    min: 0,
    max: 4,
    step: "any",
    inputmode: "decimal",
    placeholder: "server's",
  });
  const submit = h("button", { type: "submit", class: "primary", disabled: true }, "Compare");
  const status = h("div", { id: "verify-status" });
  const result = h("section", { id: "verify-result", class: "verify-result", "aria-label": "Result" });

  const side = (key, label) => {
    const drop = dropZone({
      id: `verify-photo-${key}`,
      label,
      onFiles: (files) => {
        chosen[key] = files[0];
        replace(previews[key], photoWithBoxes(urls.add(files[0]), `${label}: ${files[0].name}`, []));
        submit.disabled = !(chosen.a && chosen.b);
        if (chosen.a && chosen.b) run();
      },
    });
    return h("div", { class: "side" }, drop.element, h("figure", { class: "photo" }, previews[key]));
  };

  const form = h(
    "form",
    { class: "panel", id: "verify-form" },
    h("div", { class: "pair" }, side("a", "Photo A"), side("b", "Photo B")),
    h(
      "div",
      { class: "fields" },
      h("div", { class: "field narrow" }, h("label", { for: "verify-threshold" }, "Threshold (optional)"), threshold),
      h("div", { class: "row-actions" }, submit),
    ),
    status,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run();
  });

  let runId = 0;
  async function run() {
    if (!(chosen.a && chosen.b)) return;
    const id = ++runId;
    replace(status, h("p", { class: "loading" }, "Comparing…"));
    result.replaceChildren();
    try {
      const body = await api.verify(chosen.a, chosen.b, { threshold: threshold.value || undefined });
      if (id !== runId) return;
      status.replaceChildren();
      // Redraw both photos with the face that was compared.
      for (const [key, box] of [["a", body.box_a], ["b", body.box_b]]) {
        const face = { box, matched: true, name: `face ${key.toUpperCase()}` };
        if (box) replace(previews[key], photoWithBoxes(urls.add(chosen[key]), chosen[key].name, [face], { numbered: false }));
      }
      const verdict = body.match ? "Same person" : "Different people";
      replace(
        result,
        h("h2", {}, "Result"),
        h("p", { class: "big" }, h("span", { class: `verdict ${body.match ? "match" : "nomatch"}`, id: "verify-verdict" }, verdict)),
        h(
          "dl",
          { class: "figures" },
          h("dt", {}, "Distance"),
          h("dd", { id: "verify-distance" }, fmt(body.distance)),
          h("dt", {}, "Threshold"),
          h("dd", { id: "verify-threshold-value" }, `${fmt(body.threshold)} ${threshold.value ? "(set for this request)" : "(server's verification threshold)"}`),
          h("dt", {}, "Similarity"),
          h("dd", {}, fmt(body.similarity)),
          h("dt", {}, "Match"),
          h("dd", { id: "verify-match" }, body.match ? "yes: distance ≤ threshold" : "no: distance > threshold"),
        ),
        h("div", { class: "verify-bar" }, distanceBar(body.distance, body.threshold), h("span", { class: "dbar-legend" }, `bar: distance on a 0–${fmt(Math.min(4, Math.max(2, body.threshold * 1.5)), 1)} scale; tick: threshold`)),
      );
      announce(`${verdict}: distance ${fmt(body.distance)}, threshold ${fmt(body.threshold)}.`);
    } catch (err) {
      if (id === runId) replace(status, errorBox(err));
    }
  }

  view.append(h("h1", {}, "Verify"), h("p", {}, "Are these two photos the same person? The largest face of each is compared."), form, result);
}
