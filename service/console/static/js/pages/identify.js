// Identify: every face of a photo boxed and labelled with the match (or "unknown"), and per face the
// candidates with their distance drawn against the threshold.

import { api } from "../api.js";
import { announce, distanceBar, errorBox, fmt, h, replace, thresholdSource } from "../dom.js";
import { collectionPicker, dropZone, photoWithBoxes } from "../widgets.js";

export async function identifyPage(view, { query, urls, signal }) {
  view.append(h("h1", {}, "Identify"));
  const picker = await collectionPicker("identify-collection", query.get("collection"));
  if (!picker.select) {
    view.append(picker.element);
    return;
  }
  let file = null;
  const topK = h("input", { type: "number", id: "identify-top-k", name: "top_k", min: 1, max: 100, value: "3", inputmode: "numeric" });
  const threshold = h("input", {
    type: "number",
    id: "identify-threshold",
    name: "threshold",
    min: 0,
    max: 4,
    step: "any",
    inputmode: "decimal",
    placeholder: "collection's",
    "aria-describedby": "identify-threshold-hint",
  });
  const submit = h("button", { type: "submit", class: "primary", disabled: true }, "Identify");
  const status = h("div", { id: "identify-status" });
  const results = h("section", { id: "identify-results", "aria-label": "Result" });
  const drop = dropZone({
    id: "identify-photo",
    label: "Photo",
    onFiles: (chosen) => {
      file = chosen[0];
      submit.disabled = false;
      run();
    },
  });
  const form = h(
    "form",
    { class: "panel", id: "identify-form" },
    h(
      "div",
      { class: "fields" },
      picker.element,
      h("div", { class: "field" }, drop.element),
      h("div", { class: "field narrow" }, h("label", { for: "identify-top-k" }, "Candidates"), topK),
      h(
        "div",
        { class: "field narrow" },
        h("label", { for: "identify-threshold" }, "Threshold"),
        threshold,
        h("p", { class: "hint visually-hidden", id: "identify-threshold-hint" }, "Optional squared distance in [0, 4]; empty uses the collection's threshold."),
      ),
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
    if (!file) return;
    const id = ++runId;
    const collection = picker.select.value;
    replace(status, h("p", { class: "loading" }, `Identifying faces in ${file.name}…`));
    results.replaceChildren();
    try {
      const [body, info] = await Promise.all([
        api.identify(collection, file, { top_k: topK.value || undefined, threshold: threshold.value || undefined }),
        api.getCollection(collection, { signal }).catch(() => null),
      ]);
      const names = await subjectNames(collection, body.faces, signal);
      if (id !== runId || signal.aborted) return;
      status.replaceChildren();
      showResult(results, file, body, info, names, threshold.value !== "", urls);
      const known = body.faces.filter((f) => f.match).length;
      announce(`${body.faces.length} face${body.faces.length === 1 ? "" : "s"} found, ${known} recognised.`);
    } catch (err) {
      if (id === runId && !signal.aborted) replace(status, errorBox(err));
    }
  }

  view.append(form, results);
}

/** subject_id → display name (the subject's name, or its id) for every candidate shown. */
async function subjectNames(collection, faces, signal) {
  const ids = new Set();
  for (const face of faces) for (const c of face.candidates) ids.add(c.subject_id);
  const names = new Map();
  await Promise.all(
    [...ids].map(async (subjectId) => {
      try {
        const subject = await api.getSubject(collection, subjectId, { signal });
        names.set(subjectId, subject.name || subjectId);
      } catch {
        names.set(subjectId, subjectId);
      }
    }),
  );
  return names;
}

function showResult(container, file, body, info, names, overridden, urls) {
  const threshold = body.threshold;
  const source = overridden
    ? "set for this request"
    : (info && thresholdSource(info.identify_threshold)) || "the collection's default";
  const faces = body.faces.map((face, i) => ({
    box: face.box,
    matched: Boolean(face.match),
    name: face.match ? names.get(face.match.subject_id) || face.match.subject_id : "unknown",
    index: i + 1,
  }));
  const photo = h(
    "figure",
    { class: "photo" },
    photoWithBoxes(urls.add(file), `${file.name} with ${faces.length} face boxes`, faces),
    h("figcaption", {}, `${file.name}: ${faces.length} face${faces.length === 1 ? "" : "s"}, threshold ${fmt(threshold)} (${source}). Solid box: recognised; dashed box: unknown.`),
  );
  const cards = body.faces.map((face, i) => faceCard(face, i + 1, threshold, names));
  container.replaceChildren(
    h("h2", {}, `${faces.length} face${faces.length === 1 ? "" : "s"} in ${file.name}`),
    h("div", { class: "result-grid" }, photo, h("div", { class: "face-cards" }, cards)),
  );
}

function faceCard(face, number, threshold, names) {
  const name = face.match ? names.get(face.match.subject_id) || face.match.subject_id : "unknown";
  const q = face.quality;
  const rows = face.candidates.map((c, rank) =>
    h(
      "tr",
      {},
      h("td", { class: "num" }, String(rank + 1)),
      h("td", {}, names.get(c.subject_id) || c.subject_id, names.get(c.subject_id) && names.get(c.subject_id) !== c.subject_id ? h("span", { class: "source" }, c.subject_id) : null),
      h("td", { class: "num" }, fmt(c.distance)),
      h("td", {}, distanceBar(c.distance, threshold), h("span", { class: "dbar-legend" }, c.distance <= threshold ? "within threshold" : "over threshold")),
    ),
  );
  return h(
    "article",
    { class: "face-card", dataset: { face: String(number) }, "aria-labelledby": `face-${number}-title` },
    h(
      "h3",
      { id: `face-${number}-title` },
      `Face ${number}: `,
      h("span", { class: `verdict ${face.match ? "match" : "nomatch"}` }, face.match ? `${name} (match, distance ${fmt(face.match.distance)})` : "unknown"),
    ),
    h("p", { class: "quality" }, `${fmt(q.face_size_px, 0)} px, detector ${fmt(q.detector_score, 2)}, sharpness ${fmt(q.sharpness, 1)}${q.passed ? "" : `; low quality: ${q.reasons.join(", ")}`}`),
    rows.length
      ? h(
          "div",
          { class: "table-wrap" },
          h(
          "table",
          { class: "candidates" },
          h("caption", { class: "visually-hidden" }, `Candidates for face ${number}, threshold ${fmt(threshold)}`),
          h("thead", {}, h("tr", {}, h("th", { scope: "col", class: "num" }, "#"), h("th", { scope: "col" }, "Subject"), h("th", { scope: "col", class: "num" }, "Distance"), h("th", { scope: "col" }, `vs threshold ${fmt(threshold)}`))),
          h("tbody", {}, rows),
          ),
        )
      : h("p", {}, "No candidates: the collection is empty."),
  );
}
