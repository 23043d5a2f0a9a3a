// The user's own settings: notifications (in this browser, and a webhook for their tools), their limits and credits.
import { get, post, put } from "../api.js";
import { clock, field, h, mount, showErrors } from "../dom.js";
import { notifyToggle } from "../notify.js";

export function limitsLine(limits) {
  return `Your jobs: ${limits.running} of ${limits.max_running} training at once, ` +
    `${limits.waiting} of ${limits.max_waiting} waiting to start.`;
}

function webhookForm(hook) {
  const url = h("input", { type: "url", name: "url", size: 50, value: hook.url || "" });
  const secret = h("code", { class: "snippet" }, hook.secret || "made when you save a URL");
  const box = h("p", { class: "error", role: "alert" });
  const said = h("p", { role: "status" });
  const save = async (newSecret) => {
    try {
      const saved = await put("/me/webhook", { url: url.value || null, new_secret: newSecret });
      showErrors(form, box, null);
      secret.textContent = saved.secret || "made when you save a URL";
      said.textContent = saved.url ? "Saved: finished and failed jobs are posted there." : "Removed: nothing is posted.";
    } catch (error) { showErrors(form, box, error); }
  };
  const form = h("form", { class: "card", "aria-label": "Webhook", onsubmit: (e) => { e.preventDefault(); save(false); } },
    h("h2", {}, "Webhook"),
    h("p", { class: "hint" }, "When a job succeeds or fails, lorabake posts JSON to this address ",
      "(events job.succeeded and job.failed), tried again with growing pauses until it answers 2xx. ",
      "X-Lorabake-Signature is sha256= and the HMAC-SHA256, with the secret below, of the X-Lorabake-Timestamp ",
      "header, a dot and the body."),
    field("Webhook URL", url, "An https:// address; empty: no webhook."),
    h("p", {}, "Signing secret: ", secret),
    h("div", { class: "row" }, h("button", { type: "submit" }, "Save webhook"),
      h("button", { type: "button", class: "secondary", onclick: () => save(true) }, "New secret"),
      h("button", { type: "button", class: "secondary", onclick: async () => {
        said.textContent = "Sending a test…";
        try {
          const answer = await post("/me/webhook/test");
          said.textContent = `${answer.delivered ? "Delivered" : "Not delivered"}: ${answer.message}`;
        } catch (error) { said.textContent = error.message; }
      } }, "Send a test")),
    box, said);
  return form;
}

const MOVES = { grant: "monthly grant", top_up: "from the operators", hold: "held for a job",
                charge: "paid", release: "given back" };

function creditsCard(credits, moves) {
  if (!credits.priced && !moves.length) {
    return h("section", { class: "card", "aria-label": "Credits" }, h("h2", {}, "Credits"),
      h("p", {}, "Training is free on this server."));
  }
  return h("section", { class: "card", "aria-label": "Credits" }, h("h2", {}, "Credits"),
    h("p", {}, `Balance: ${credits.balance} credits to spend; ${credits.held} held by jobs that have not finished.`),
    h("p", { class: "hint" }, "A job's price is held when it is queued; each finished epoch is paid from it, and ",
      "what it does not train (canceled, failed) comes back.",
      credits.monthly_grant ? ` Every month adds ${credits.monthly_grant} credits.` : ""),
    moves.length ? h("table", {}, h("thead", {}, h("tr", {}, ...["When", "What", "Credits", "Balance after"]
      .map((t) => h("th", {}, t)))), h("tbody", {}, ...moves.map((m) => h("tr", {},
      h("td", {}, clock(m.created_at)),
      h("td", {}, `${MOVES[m.kind] || m.kind}${m.note ? ` (${m.note})` : ""}`, m.job_id ? " " : null,
        m.job_id ? h("a", { href: `#/jobs/${m.job_id}` }, "job") : null),
      h("td", {}, String(["hold", "charge"].includes(m.kind) || m.amount < 0 ? -Math.abs(m.amount) : m.amount)),
      h("td", {}, String(m.balance)))))) : h("p", {}, "No moves yet."));
}

export async function settingsPage() {
  const [hook, limits, credits, moves] = await Promise.all([get("/me/webhook"), get("/me/limits"),
    get("/me/credits"), get("/me/credits/moves?limit=50")]);
  mount(h("h1", {}, "Settings"),
    h("section", { class: "card", "aria-label": "Notifications" }, h("h2", {}, "Notifications"), notifyToggle()),
    webhookForm(hook),
    h("section", { class: "card", "aria-label": "Limits" }, h("h2", {}, "Limits"), h("p", {}, limitsLine(limits)),
      h("p", { class: "hint" }, "More jobs than may train at once wait in the queue; past the waiting limit new jobs are refused until one starts.")),
    creditsCard(credits, moves));
}
