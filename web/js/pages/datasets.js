import { getAll, post, postForm } from "../api.js";
import { field, h, mount, showErrors } from "../dom.js";

export async function datasetsPage() {
  const datasets = await getAll("/datasets");
  const name = h("input", { type: "text", name: "name", required: true, maxlength: 200 });
  const box = h("p", { class: "error", role: "alert" });
  const form = h("form", { class: "card", onsubmit: async (e) => {
    e.preventDefault();
    try {
      const dataset = await post("/datasets", { name: name.value });
      location.hash = `#/datasets/${dataset.id}`;
    } catch (error) {
      showErrors(form, box, error);
    }
  } }, h("div", { class: "row" }, field("New dataset name", name), h("button", { type: "submit" }, "Create dataset")),
  box);
  const archive = h("input", { type: "file", name: "file", accept: ".zip,application/zip", required: true });
  const importName = h("input", { type: "text", name: "name", maxlength: 200 });
  const report = h("div", { role: "status" });
  const importForm = h("form", { class: "card", onsubmit: async (e) => {
    e.preventDefault();
    const body = new FormData();
    body.append("file", archive.files[0]);
    if (importName.value.trim()) body.append("name", importName.value.trim());
    report.replaceChildren(h("progress", {}), " uploading and checking every image…");
    try {
      const answer = await postForm("/datasets/import", body, (sent, total) =>
        report.firstChild.setAttribute("value", String(sent / total)));
      const problems = answer.report.filter((r) => r.status !== "imported" || r.reason);
      report.replaceChildren(h("p", {}, `${answer.imported} images imported into `,
        h("a", { href: `#/datasets/${answer.dataset.id}` }, answer.dataset.name)),
      problems.length ? h("ul", { class: "muted" }, problems.map((r) => h("li", {}, `${r.entry}: ${r.status}` +
        (r.reason ? ` (${r.reason})` : "")))) : null);
    } catch (error) {
      report.replaceChildren(h("p", { class: "error" }, error.message));
    }
  } }, h("h2", {}, "Import a kohya dataset"),
  h("p", { class: "hint" }, "A zip with N_concept folders of images and .txt captions (N = repeats), and an optional " +
    "reg/ folder, as sd-scripts and kohya_ss use them."),
  h("div", { class: "row" }, field("Zip file", archive), field("Dataset name", importName, "Default: the zip's name."),
    h("button", { type: "submit" }, "Import")), report);
  const rows = datasets.map((d) => h("tr", {},
    h("td", {}, h("a", { href: `#/datasets/${d.id}` }, d.name)),
    h("td", {}, `${d.image_count} images`),
    h("td", {}, `${d.default_repeats} repeats`),
    h("td", {}, new Date(d.created_at).toLocaleString())));
  mount(h("h1", {}, "Datasets"), form, importForm,
    datasets.length
      ? h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Images"), h("th", {}, "Repeats"),
                                         h("th", {}, "Created"))), h("tbody", {}, rows))
      : h("p", { class: "muted" }, "No datasets yet: create one, then upload images into it."));
}
