// Hash router: each page module renders into <main> and may return a cleanup function.
import { ApiError, get, post } from "./api.js";
import { accountPage } from "./pages/account.js";
import { datasetsPage } from "./pages/datasets.js";
import { workbenchPage } from "./pages/workbench.js";
import { trainPage } from "./pages/train.js";
import { jobsPage, jobPage } from "./pages/jobs.js";
import { modelsPage, publishPage } from "./pages/models.js";
import { modelPage } from "./pages/model_page.js";
import { galleryPage } from "./pages/gallery.js";
import { settingsPage } from "./pages/settings.js";
import { adminPage } from "./pages/admin.js";
import { mount, h } from "./dom.js";
import { watchJobs } from "./notify.js";

const routes = [
  [/^#\/sign-in$/, () => accountPage()],
  [/^#\/datasets$/, () => datasetsPage()],
  [/^#\/datasets\/(\w+)$/, (id) => workbenchPage(id)],
  [/^#\/datasets\/(\w+)\/train$/, (id) => trainPage({ datasetId: id })],
  [/^#\/jobs$/, () => jobsPage()],
  [/^#\/jobs\/(\w+)$/, (id) => jobPage(id)],
  [/^#\/jobs\/(\w+)\/retrain$/, (id) => trainPage({ fromJob: id })],
  [/^#\/jobs\/(\w+)\/publish\/(\d+)$/, (id, n) => publishPage(id, Number(n))],
  [/^#\/models$/, () => modelsPage()],
  [/^#\/gallery$/, () => galleryPage()],
  [/^#\/models\/(\w+)$/, (id) => modelPage(id)],
  [/^#\/settings$/, () => settingsPage()],
  [/^#\/admin$/, () => adminPage()],
];

const PUBLIC = [/^#\/models\/\w+$/, /^#\/gallery$/];
let cleanup = null;

async function route() {
  const leaving = cleanup;
  cleanup = null;
  if (leaving) await leaving(); // a page saves what the user typed before the next one is drawn
  const hash = location.hash || "#/datasets";
  const me = await get("/me").catch((error) => error);
  const signedIn = !(me instanceof Error);
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("nav-admin").hidden = !signedIn || me.role !== "admin";
  if (me instanceof ApiError && me.status === 403) { // suspended: the session is valid, the account is not
    mount(h("h1", {}, "Account suspended"), h("p", { class: "error", role: "alert" }, me.message),
      h("p", {}, "Your files are kept. Write to the operators of this server if you think this is a mistake."),
      h("button", { type: "button", class: "secondary", onclick: signOut }, "Sign out"));
    return;
  }
  // a visitor on a public page is one click from an account
  document.getElementById("sign-in").hidden = signedIn || hash === "#/sign-in";
  document.getElementById("visitor-gallery").hidden = signedIn;
  // visitors may open a public model's link; everything else asks them to sign in
  if (!signedIn && hash !== "#/sign-in" && !PUBLIC.some((pattern) => pattern.test(hash))) {
    location.hash = "#/sign-in";
    return;
  }
  if (signedIn) watchJobs();
  for (const [pattern, render] of routes) {
    const match = hash.match(pattern);
    if (!match) continue;
    try {
      cleanup = (await render(...match.slice(1))) || null;
    } catch (error) {
      const message = error instanceof ApiError ? error.message : String(error);
      mount(h("h1", {}, "Something went wrong"), h("p", { class: "error", role: "alert" }, message));
    }
    document.getElementById("main").focus();
    return;
  }
  mount(h("h1", {}, "Page not found"), h("a", { href: "#/datasets" }, "Back to the datasets"));
}

async function signOut() {
  await post("/auth/logout").catch(() => null);
  location.hash = "#/sign-in";
}

document.getElementById("sign-out").addEventListener("click", signOut);
window.addEventListener("hashchange", route);
route();
