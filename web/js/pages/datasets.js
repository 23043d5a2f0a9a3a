import { get, post } from "../api.js";
import { field, h, mount, showErrors } from "../dom.js";

export async function datasetsPage() {
  const datasets = await get("/datasets");
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
  const rows = datasets.map((d) => h("tr", {},
    h("td", {}, h("a", { href: `#/datasets/${d.id}` }, d.name)),
    h("td", {}, `${d.image_count} images`),
    h("td", {}, `${d.default_repeats} repeats`),
    h("td", {}, new Date(d.created_at).toLocaleString())));
  mount(h("h1", {}, "Datasets"), form,
    datasets.length
      ? h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Images"), h("th", {}, "Repeats"),
                                         h("th", {}, "Created"))), h("tbody", {}, rows))
      : h("p", { class: "muted" }, "No datasets yet: create one, then upload images into it."));
}
