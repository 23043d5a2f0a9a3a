// The public gallery: anyone, visitors included, browses public models by their covers, newest or most downloaded,
// by family, or by words of a name or tag; a page at a time ("More").
import { get } from "../api.js";
import { field, h, mount } from "../dom.js";

const PAGE = 24;

function card(m) {
  return h("a", { class: "gallery-card", href: `#/models/${m.id}`, "aria-label": m.name },
    h("img", { src: m.cover_url, alt: "", loading: "lazy" }),
    h("strong", {}, m.name),
    h("span", { class: "muted" }, `${m.family} · by ${m.owner} · ${m.downloads} download${m.downloads === 1 ? "" : "s"}`),
    m.tags.length ? h("span", { class: "muted" }, m.tags.join(", ")) : null);
}

export async function galleryPage() {
  const families = await get("/families").catch(() => []);
  const sort = h("select", { name: "sort" }, h("option", { value: "newest" }, "newest"),
    h("option", { value: "downloads" }, "most downloaded"));
  const family = h("select", { name: "family" }, h("option", { value: "" }, "every family"),
    ...families.map((f) => h("option", { value: f.name }, f.label)));
  const query = h("input", { type: "search", name: "q" });
  const grid = h("div", { class: "gallery", role: "list", "aria-label": "Models" });
  const more = h("button", { type: "button", class: "secondary", hidden: true }, "More");
  const said = h("p", { class: "muted", role: "status" });
  let offset = 0;
  async function load(reset) {
    if (reset) offset = 0;
    const params = new URLSearchParams({ sort: sort.value, q: query.value, limit: PAGE, offset });
    if (family.value) params.set("family", family.value);
    const cards = await get(`/gallery?${params}`);
    const items = cards.map((m) => h("div", { role: "listitem" }, card(m)));
    if (reset) grid.replaceChildren(...items);
    else grid.append(...items);
    offset += cards.length;
    more.hidden = cards.length < PAGE;
    said.textContent = offset ? "" : "No public model matches yet.";
  }
  more.addEventListener("click", () => load(false));
  for (const control of [sort, family]) control.addEventListener("change", () => load(true));
  mount(h("h1", {}, "Gallery"),
    h("form", { class: "row", role: "search", onsubmit: (e) => { e.preventDefault(); load(true); } },
      field("Sort", sort), field("Family", family), field("Find", query, "A name or a tag"), h("button", { type: "submit" }, "Search")),
    said, grid, more);
  await load(true);
}
