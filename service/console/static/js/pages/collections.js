// Collections: list with counts and the thresholds in force, create, delete (typed confirmation).

import { api, seg } from "../api.js";
import {
  announce,
  COLLECTION_PATTERN,
  confirmDialog,
  errorBox,
  fmtDate,
  h,
  lastCollection,
  messageBox,
  replace,
  thresholdCell,
} from "../dom.js";

export async function collectionsPage(view, { signal, rerender }) {
  const { collections } = await api.listCollections({ signal });
  // Per-collection thresholds are newer than the rest of the API: offer the field only to a server
  // that reports them (or when there is no collection yet to tell).
  const thresholdsSupported = !collections.length || "identify_threshold" in collections[0];
  const status = h("div", { class: "form-status" });

  const nameInput = h("input", {
    type: "text",
    id: "new-collection-name",
    name: "name",
    required: true,
    pattern: COLLECTION_PATTERN,
    maxlength: 64,
    autocomplete: "off",
    "aria-describedby": "new-collection-name-hint",
  });
  const descriptionInput = h("input", { type: "text", id: "new-collection-description", name: "description", maxlength: 1024 });
  const thresholdInput = h("input", {
    type: "number",
    id: "new-collection-threshold",
    name: "identify_threshold",
    min: 0,
    max: 4,
    step: "any",
    inputmode: "decimal",
    "aria-describedby": "new-collection-threshold-hint",
  });
  const form = h(
    "form",
    { class: "panel", id: "create-collection", "aria-labelledby": "create-heading" },
    h("h2", { id: "create-heading" }, "New collection"),
    h(
      "div",
      { class: "fields" },
      h(
        "div",
        { class: "field" },
        h("label", { for: "new-collection-name" }, "Name"),
        nameInput,
        h("p", { class: "hint", id: "new-collection-name-hint" }, "Letters, digits, _ . - (up to 64)."),
      ),
      h("div", { class: "field" }, h("label", { for: "new-collection-description" }, "Description (optional)"), descriptionInput),
      thresholdsSupported
        ? h(
            "div",
            { class: "field" },
            h("label", { for: "new-collection-threshold" }, "Identify threshold (optional)"),
            thresholdInput,
            h("p", { class: "hint", id: "new-collection-threshold-hint" }, "Squared distance in [0, 4]; empty = the default."),
          )
        : null,
    ),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Create collection")),
    status,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { name: nameInput.value.trim() };
    if (descriptionInput.value.trim()) body.description = descriptionInput.value.trim();
    if (thresholdInput.value !== "") body.identify_threshold = Number(thresholdInput.value);
    try {
      await api.createCollection(body);
      lastCollection(body.name);
      announce(`Collection ${body.name} created.`);
      await rerender();
    } catch (err) {
      replace(status, errorBox(err));
    }
  });

  const table = collections.length
    ? h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "cards", id: "collections-table" },
          h("caption", {}, `${collections.length} collection${collections.length === 1 ? "" : "s"}`),
          h(
            "thead",
            {},
            h(
              "tr",
              {},
              h("th", { scope: "col" }, "Name"),
              h("th", { scope: "col", class: "num" }, "Subjects"),
              h("th", { scope: "col", class: "num" }, "Faces"),
              h("th", { scope: "col" }, "Identify threshold"),
              h("th", { scope: "col" }, "Verify threshold"),
              h("th", { scope: "col" }, "Created"),
              h("th", { scope: "col" }, "Actions"),
            ),
          ),
          h("tbody", {}, collections.map((c) => collectionRow(c, rerender))),
        ),
      )
    : messageBox("info", "No collection yet: create one above, then enroll people into it.");

  view.append(h("h1", {}, "Collections"), form, table);
}

function collectionRow(c, rerender) {
  const remove = h("button", { type: "button", class: "danger", "aria-label": `Delete collection ${c.name}` }, "Delete");
  remove.addEventListener("click", async () => {
    const ok = await confirmDialog({
      title: `Delete collection ${c.name}?`,
      message: `Its ${c.subject_count} subjects and ${c.face_count} faces are deleted for good, from the store and the index.`,
      confirmLabel: "Delete collection",
      requireText: c.name,
    });
    if (!ok) return;
    try {
      await api.deleteCollection(c.name);
      announce(`Collection ${c.name} deleted.`);
      await rerender();
    } catch (err) {
      remove.after(errorBox(err));
    }
  });
  const q = `?collection=${seg(c.name)}`;
  return h(
    "tr",
    { dataset: { collection: c.name } },
    h(
      "td",
      { "data-label": "Name" },
      h("a", { href: `#/collections/${seg(c.name)}` }, c.name),
      c.description ? h("span", { class: "source" }, c.description) : null,
    ),
    h("td", { class: "num", "data-label": "Subjects" }, String(c.subject_count)),
    h("td", { class: "num", "data-label": "Faces" }, String(c.face_count)),
    h("td", { "data-label": "Identify threshold" }, thresholdCell(c.identify_threshold)),
    h("td", { "data-label": "Verify threshold" }, thresholdCell(c.verify_threshold)),
    h("td", { "data-label": "Created" }, fmtDate(c.created_at)),
    h(
      "td",
      { "data-label": "Actions" },
      h(
        "div",
        { class: "row-actions" },
        h("a", { class: "button", href: `#/collections/${seg(c.name)}`, "aria-label": `Subjects of ${c.name}` }, "Subjects"),
        h("a", { class: "button", href: `#/enroll${q}`, "aria-label": `Enroll into ${c.name}` }, "Enroll"),
        h("a", { class: "button", href: `#/identify${q}`, "aria-label": `Identify in ${c.name}` }, "Identify"),
        remove,
      ),
    ),
  );
}
