// The operator's console (admins only): users, the moderation queue, every user's jobs, the workers and queues, the
// audit log (each list shows its newest 200; search narrows it).
// Every action asks for a reason, which the audit log keeps (and a suspended user is shown).
import { get, post, put } from "../api.js";
import { clock, duration, field, h, mount, showErrors, tabs } from "../dom.js";

const JOB_STATES = ["", "queued", "scheduled", "running", "interrupted", "succeeded", "failed", "canceled"];

// One reason box per panel: the actions below it send what it says.
function reasonBox(label) {
  const input = h("input", { name: "reason", size: 40, maxlength: 2000 });
  const box = h("p", { class: "error", role: "alert" });
  const said = h("p", { role: "status" });
  const form = h("form", { class: "row", onsubmit: (e) => e.preventDefault() }, field(label, input, "Why: kept in the audit log"));
  // runs an action with the reason; shows its errors beside the fields it names, and a line when it is done
  const act = async (what, done) => {
    try {
      await what(input.value.trim());
      showErrors(form, box, null);
      said.textContent = done;
      input.value = "";
      return true;
    } catch (error) {
      showErrors(form, box, error);
      said.textContent = "";
      return false;
    }
  };
  return { form, box, said, act };
}

function userPanel(user, refresh) {
  const reason = reasonBox("Reason");
  const path = `/admin/users/${user.id}`;
  const amount = h("input", { type: "number", name: "amount", step: 1, value: 100, style: "min-width:6rem" });
  const running = h("input", { type: "number", name: "max_running_jobs", min: 1, value: user.max_running_jobs ?? "",
                               style: "min-width:6rem" });
  const waiting = h("input", { type: "number", name: "max_waiting_jobs", min: 1, value: user.max_waiting_jobs ?? "",
                               style: "min-width:6rem" });
  const number = (input) => (input.value === "" ? null : Number(input.value));
  const suspended = user.suspended_reason !== null;
  return h("section", { class: "card", "aria-label": `Account ${user.email}` },
    h("h2", {}, user.email),
    h("p", {}, `${user.role} · ${user.credits} credits · ${user.running} training, ${user.waiting} waiting · since `,
      clock(user.created_at)),
    suspended ? h("p", { class: "error" }, `Suspended: ${user.suspended_reason}`) : null,
    reason.form,
    h("div", { class: "row" },
      suspended
        ? h("button", { type: "button", onclick: async () => (await reason.act(
          (why) => post(`${path}/restore`, { reason: why }), "Restored.")) && refresh() }, "Restore")
        : h("button", { type: "button", class: "danger", onclick: async () => (await reason.act(
          (why) => post(`${path}/suspend`, { reason: why }), "Suspended: its jobs stop and its models are hidden."))
          && refresh() }, "Suspend")),
    h("div", { class: "row" }, field("Credits to add (negative: take away)", amount),
      h("button", { type: "button", class: "secondary", onclick: async () => (await reason.act(
        (why) => post(`${path}/credits`, { amount: Number(amount.value), reason: why }), "Credits changed."))
        && refresh() }, "Change credits")),
    h("div", { class: "row" }, field("Jobs training at once", running, "Empty: the site's limit"),
      field("Jobs waiting", waiting, "Empty: the site's limit"),
      h("button", { type: "button", class: "secondary", onclick: async () => (await reason.act(
        (why) => put(`${path}/limits`, { max_running_jobs: number(running), max_waiting_jobs: number(waiting),
                                         reason: why }), "Limits set.")) && refresh() }, "Set limits")),
    reason.box, reason.said);
}

function usersPanel() {
  const query = h("input", { type: "search", name: "q" });
  const rows = h("tbody");
  const detail = h("div");
  let chosen = null;
  async function load() {
    const users = await get(`/admin/users?limit=200&q=${encodeURIComponent(query.value)}`);
    rows.replaceChildren(...users.map((u) => h("tr", {},
      h("td", {}, h("button", { type: "button", class: "link", onclick: () => { chosen = u.id; show(u); } }, u.email)),
      h("td", {}, u.role), h("td", {}, String(u.credits)), h("td", {}, `${u.running} / ${u.waiting}`),
      h("td", {}, u.suspended_reason ? `suspended: ${u.suspended_reason}` : "active"))));
    const again = users.find((u) => u.id === chosen);
    if (again) show(again);
  }
  const show = (user) => detail.replaceChildren(userPanel(user, load));
  const panel = h("div", {},
    h("form", { class: "row", role: "search", onsubmit: (e) => { e.preventDefault(); load(); } },
      field("Find users", query, "Part of an email"), h("button", { type: "submit" }, "Search")),
    h("table", {}, h("thead", {}, h("tr", {}, ...["Email", "Role", "Credits", "Training / waiting", "State"]
      .map((t) => h("th", {}, t)))), rows),
    detail);
  return [panel, load];
}

function jobsPanel() {
  const status = h("select", { name: "status" }, ...JOB_STATES.map((s) => h("option", { value: s }, s || "any")));
  const query = h("input", { type: "search", name: "q" });
  const reason = reasonBox("Reason for cancel or re-queue");
  const rows = h("tbody");
  async function load() {
    const params = new URLSearchParams({ limit: 200, q: query.value, ...(status.value ? { status: status.value } : {}) });
    const jobs = await get(`/admin/jobs?${params}`);
    rows.replaceChildren(...jobs.map((j) => h("tr", {},
      h("td", {}, j.name), h("td", {}, j.owner_email), h("td", {}, j.status),
      h("td", {}, j.status === "running" ? `${Math.round(j.progress * 100)}% on ${j.worker}` : ""),
      h("td", {}, j.waiting_because || j.error || ""),
      h("td", {}, j.finished ? null : h("button", { type: "button", class: "secondary", onclick: async () =>
        (await reason.act((why) => post(`/admin/jobs/${j.id}/cancel`, { reason: why }), `${j.name}: canceled.`))
        && load() }, "Cancel"),
      ["failed", "interrupted"].includes(j.status) ? h("button", { type: "button", onclick: async () =>
        (await reason.act((why) => post(`/admin/jobs/${j.id}/requeue`, { reason: why }), `${j.name}: re-queued.`))
        && load() }, "Re-queue") : null))));
  }
  return [h("div", {},
    h("form", { class: "row", role: "search", onsubmit: (e) => { e.preventDefault(); load(); } },
      field("State", status), field("Find", query, "An email or a job name"), h("button", { type: "submit" }, "Show")),
    reason.form, reason.box, reason.said,
    h("table", {}, h("thead", {}, h("tr", {}, ...["Job", "Owner", "State", "Progress", "Why / error", ""]
      .map((t) => h("th", {}, t)))), rows)), load];
}

function workersPanel() {
  const body = h("div", { "aria-live": "polite" }, h("p", {}, "Loading…"));
  async function load() {
    const answer = await get("/admin/workers");
    const queues = Object.entries(answer.queues).map(([q, n]) => `${q}: ${n ?? "?"}`).join(", ");
    body.replaceChildren(...[
      h("p", {}, `${answer.jobs_running} jobs training, ${answer.jobs_queued} queued. Messages waiting: ${queues}.`),
      answer.workers.length ? null : h("p", { class: "error" }, "No worker has reported lately: nothing will train."),
      ...answer.workers.map((w) => h("section", { class: "card", "aria-label": `Worker ${w.name}` },
        h("h3", {}, w.name),
        h("p", {}, `Queues: ${w.queues.join(", ")} · last heard ${duration(w.heartbeat_age_s)} ago · up since `,
          clock(w.started_at)),
        h("p", {}, w.gpus.length ? w.gpus.map((g) => `GPU ${g.index} ${g.name}: ${g.memory_used_mb} of ` +
          `${g.memory_total_mb} MB in use`).join("; ") : "No GPU: it runs on the CPU."),
        h("p", {}, w.jobs.length ? ["Training: ", ...w.jobs.map((id) => h("a", { href: `#/jobs/${id}` }, id))]
          : "Idle.")))].filter(Boolean));
  }
  const timer = setInterval(() => { if (body.isConnected && !body.closest("[hidden]")) load().catch(() => null); }, 5000);
  return [h("div", {}, body), load, () => clearInterval(timer)];
}

function moderationPanel() {
  const reason = reasonBox("Reason for the decision");
  const held = h("div", { class: "cards", "aria-label": "Held images" });
  const reports = h("tbody");
  async function load() {
    const [images, open] = await Promise.all([get("/admin/moderation/screenings?limit=200"),
      get("/admin/moderation/reports?limit=200")]);
    held.replaceChildren(...(images.length ? images.map((s) => h("section", { class: "card", "aria-label": s.name },
      h("img", { src: s.url, alt: s.name, style: "width:100%;max-height:220px;object-fit:contain" }),
      h("p", {}, h("strong", {}, s.name), ` (${s.subject}) by ${s.owner_email}`),
      h("p", { class: "hint" }, s.reason),
      h("div", { class: "row" },
        h("button", { type: "button", onclick: async () => (await reason.act((why) => post(
          `/admin/moderation/screenings/${s.id}`, { decision: "allow", reason: why }), `${s.name}: allowed.`))
          && load() }, "Allow"),
        h("button", { type: "button", class: "danger", onclick: async () => (await reason.act((why) => post(
          `/admin/moderation/screenings/${s.id}`, { decision: "violation", reason: why }),
          `${s.name}: a violation; its owner got a strike.`)) && load() }, "Violation"))))
      : [h("p", { class: "muted" }, "No image is held for review.")]));
    reports.replaceChildren(...(open.length ? [] : [h("tr", {}, h("td", { colspan: 5, class: "muted" },
      "No open report."))]), ...open.map((r) => h("tr", {},
      h("td", {}, h("a", { href: `#/models/${r.model_id}` }, r.model_name)), h("td", {}, r.owner_email),
      h("td", {}, r.reporter_email), h("td", {}, r.reason),
      h("td", {}, h("button", { type: "button", class: "secondary", onclick: async () => (await reason.act((why) =>
        post(`/admin/moderation/reports/${r.id}`, { decision: "dismiss", reason: why }), "Dismissed.")) && load() },
      "Dismiss"), h("button", { type: "button", class: "danger", onclick: async () => (await reason.act((why) =>
        post(`/admin/moderation/reports/${r.id}`, { decision: "uphold", reason: why }),
        "Upheld: the model is hidden and its owner got a strike.")) && load() }, "Uphold")))));
  }
  return [h("div", {}, reason.form, reason.box, reason.said, h("h2", {}, "Held images"), held,
    h("h2", {}, "Reports"), h("table", {}, h("thead", {}, h("tr", {}, ...["Model", "Owner", "Reported by", "Why", ""]
      .map((t) => h("th", {}, t)))), reports)), load];
}

function auditPanel() {
  const rows = h("tbody");
  const load = async () => rows.replaceChildren(...(await get("/admin/audit?limit=200")).map((e) => h("tr", {},
    h("td", {}, clock(e.created_at)), h("td", {}, e.actor_email), h("td", {}, e.action),
    h("td", {}, `${e.target_kind} ${e.target_id}`), h("td", {}, e.reason))));
  return [h("table", {}, h("thead", {}, h("tr", {}, ...["When", "Who", "What", "On", "Why"]
    .map((t) => h("th", {}, t)))), rows), load];
}

export async function adminPage() {
  const me = await get("/me");
  if (me.role !== "admin") {
    mount(h("h1", {}, "Page not found"), h("a", { href: "#/datasets" }, "Back to the datasets"));
    return null;
  }
  // each tab loads what it shows when it is opened
  const [workers, loadWorkers, stopWorkers] = workersPanel();
  mount(h("h1", {}, "Console"),
    tabs("Console", [["Users", ...usersPanel()], ["Moderation", ...moderationPanel()], ["Jobs", ...jobsPanel()],
      ["Workers", workers, loadWorkers], ["Audit log", ...auditPanel()]]));
  return stopWorkers;
}
