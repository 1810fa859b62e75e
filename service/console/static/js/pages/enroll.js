// Enroll: several photos of one subject (drag and drop or pick), one result per photo with the
// rejection reason and the quality figures.

import { api, ApiError, seg } from "../api.js";
import { announce, errorBox, errorText, fmt, h, messageBox, replace, SUBJECT_PATTERN } from "../dom.js";
import { collectionPicker, dropZone, IMAGE_TYPES } from "../widgets.js";

const REASONS = {
  no_face: "no face found",
  multiple_faces: "more than one face (choose “largest face” to take the biggest)",
  low_quality: "face below the quality gate",
  invalid_image: "not a readable image",
  unsupported_media_type: "not a JPEG, PNG or WebP file",
  image_too_many_pixels: "too many pixels",
  payload_too_large: "file too large",
};

export async function enrollPage(view, { query, urls }) {
  view.append(h("h1", {}, "Enroll photos"));
  const picker = await collectionPicker("enroll-collection", query.get("collection"));
  if (!picker.select) {
    view.append(picker.element);
    return;
  }
  let files = [];
  const subjectInput = h("input", {
    type: "text",
    id: "enroll-subject",
    name: "subject_id",
    required: true,
    pattern: SUBJECT_PATTERN,
    maxlength: 128,
    autocomplete: "off",
    value: query.get("subject") || "",
    "aria-describedby": "enroll-subject-hint",
  });
  const nameInput = h("input", { type: "text", id: "enroll-name", name: "name", maxlength: 256, autocomplete: "off" });
  const selection = h(
    "select",
    { id: "enroll-selection", name: "face_selection" },
    h("option", { value: "strict" }, "Exactly one face per photo"),
    h("option", { value: "largest" }, "Largest face of each photo"),
  );
  const fileList = h("ul", { class: "file-list", id: "enroll-files", "aria-label": "Chosen photos" });
  const submit = h("button", { type: "submit", class: "primary", disabled: true }, "Enroll");
  const status = h("div", { id: "enroll-status" });
  const results = h("div", { id: "enroll-results" });

  const showFiles = () => {
    fileList.replaceChildren(
      ...files.map((file, i) =>
        h(
          "li",
          {},
          h("img", { src: urls.add(file), alt: "" }),
          h("span", {}, file.name),
          h(
            "button",
            {
              type: "button",
              class: "link-button",
              "aria-label": `Remove ${file.name}`,
              onclick: () => {
                files.splice(i, 1);
                showFiles();
              },
            },
            "remove",
          ),
        ),
      ),
    );
    submit.disabled = files.length === 0;
    submit.textContent = files.length ? `Enroll ${files.length} photo${files.length === 1 ? "" : "s"}` : "Enroll";
  };
  const drop = dropZone({
    id: "enroll-photos",
    label: "Photos",
    multiple: true,
    onFiles: (chosen) => {
      const images = chosen.filter((f) => IMAGE_TYPES.includes(f.type) || !f.type);
      const skipped = chosen.length - images.length;
      files = files.concat(images);
      showFiles();
      announce(`${files.length} photo${files.length === 1 ? "" : "s"} chosen${skipped ? `, ${skipped} non-image file(s) skipped` : ""}.`);
      drop.input.value = "";
    },
  });

  const form = h(
    "form",
    { class: "panel", id: "enroll-form" },
    h(
      "div",
      { class: "fields" },
      picker.element,
      h(
        "div",
        { class: "field" },
        h("label", { for: "enroll-subject" }, "Subject id"),
        subjectInput,
        h("p", { class: "hint", id: "enroll-subject-hint" }, "Created if new. Letters, digits, _ . @ : + -"),
      ),
      h("div", { class: "field" }, h("label", { for: "enroll-name" }, "Display name (new subjects, optional)"), nameInput),
      h("div", { class: "field" }, h("label", { for: "enroll-selection" }, "Faces per photo"), selection),
    ),
    h("div", { class: "fields" }, h("div", { class: "field" }, drop.element, fileList)),
    h("div", { class: "actions" }, submit),
    status,
  );

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!files.length) return;
    const collection = picker.select.value;
    const subjectId = subjectInput.value.trim();
    const batch = files;
    files = [];
    showFiles();
    submit.disabled = true;
    try {
      await ensureSubject(collection, subjectId, nameInput.value.trim());
    } catch (err) {
      replace(status, errorBox(err));
      return;
    }
    await enrollAll(collection, subjectId, selection.value, batch, { status, results, urls });
    // A new subject: the collection's count in the picker goes up (best effort, the results stand).
    await picker.refresh().catch(() => {});
  });

  view.append(form, results);
}

async function ensureSubject(collection, subjectId, name) {
  try {
    await api.getSubject(collection, subjectId);
  } catch (err) {
    if (!(err instanceof ApiError && err.code === "subject_not_found")) throw err;
    await api.createSubject(collection, name ? { subject_id: subjectId, name } : { subject_id: subjectId });
  }
}

/** One request per photo: a result row fills in as soon as its photo is done. */
async function enrollAll(collection, subjectId, faceSelection, batch, { status, results, urls }) {
  const progress = h("progress", { max: batch.length, value: 0, id: "enroll-progress", "aria-label": "Photos processed" });
  const progressText = h("span", {}, `0 of ${batch.length}`);
  replace(status, h("p", {}, progress, " ", progressText));
  const rows = batch.map((file) => {
    const row = h(
      "tr",
      { dataset: { file: file.name } },
      h("td", { "data-label": "Photo" }, h("img", { class: "preview", src: urls.add(file), alt: "" }), " ", file.name),
      h("td", { "data-label": "Result", class: "result status-pending" }, "waiting"),
      h("td", { "data-label": "Quality", class: "quality-cell" }, ""),
    );
    return row;
  });
  const table = h(
    "table",
    { class: "cards", id: "enroll-table" },
    h("caption", {}, `Photos of ${subjectId} in ${collection}`),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Photo"), h("th", { scope: "col" }, "Result"), h("th", { scope: "col" }, "Quality"))),
    h("tbody", {}, rows),
  );
  replace(results, h("div", { class: "table-wrap" }, table));

  let enrolled = 0;
  for (const [i, file] of batch.entries()) {
    const resultCell = rows[i].children[1];
    const qualityCell = rows[i].children[2];
    resultCell.textContent = "uploading…";
    let result;
    try {
      const body = await api.enroll(collection, subjectId, [file], { face_selection: faceSelection });
      result = body.results[0];
    } catch (err) {
      // All photos of a request rejected: a 422 problem that still carries the per-image results.
      const fromProblem = err instanceof ApiError && Array.isArray(err.problem.results) ? err.problem.results[0] : null;
      result = fromProblem || { status: "rejected", error: { code: err.code || "error", detail: errorText(err) } };
    }
    showResult(result, resultCell, qualityCell);
    if (result.status === "enrolled") enrolled += 1;
    progress.value = i + 1;
    progressText.textContent = `${i + 1} of ${batch.length}`;
  }
  const rejected = batch.length - enrolled;
  const text = `${enrolled} enrolled, ${rejected} rejected.`;
  replace(
    status,
    messageBox(rejected ? "info" : "success", text, " ", h("a", { href: `#/collections/${seg(collection)}` }, `See the subjects of ${collection}`)),
  );
  announce(text);
}

function showResult(result, resultCell, qualityCell) {
  resultCell.classList.remove("status-pending");
  if (result.status === "enrolled") {
    resultCell.className = "result";
    replace(resultCell, h("span", { class: "status-enrolled" }, "Enrolled"), h("span", { class: "source" }, `face ${result.face_id}`));
  } else {
    const code = result.error ? result.error.code : "rejected";
    const reason = REASONS[code] || code;
    resultCell.className = "result";
    replace(
      resultCell,
      h("span", { class: "status-rejected" }, "Rejected"),
      h("span", { class: "reason" }, `: ${reason}`),
      h("span", { class: "source" }, `${code}${result.error && result.error.detail ? ` — ${result.error.detail}` : ""}`),
    );
  }
  const q = result.quality;
  if (q) {
    replace(
      qualityCell,
      h(
        "span",
        {},
        `${fmt(q.face_size_px, 0)} px face, detector ${fmt(q.detector_score, 2)}, sharpness ${fmt(q.sharpness, 1)}`,
        h("span", { class: "source" }, q.passed ? "passes the quality gate" : `fails: ${q.reasons.join(", ")}`),
      ),
    );
  } else {
    qualityCell.textContent = result.faces_detected ? `${result.faces_detected} faces detected` : "—";
  }
}
