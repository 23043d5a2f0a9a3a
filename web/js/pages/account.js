import { api, post } from "../api.js";
import { field, h, mount, showErrors } from "../dom.js";

export function accountPage() {
  const email = h("input", { type: "email", name: "email", required: true, autocomplete: "username" });
  const password = h("input", { type: "password", name: "password", required: true, minlength: 8,
                                autocomplete: "current-password" });
  const box = h("p", { class: "error", role: "alert" });
  const signIn = async () => {
    const form = new URLSearchParams({ username: email.value, password: password.value });
    await api("POST", "/auth/login", form, { form: true });
    location.hash = "#/datasets";
  };
  const form = h("form", { class: "card", onsubmit: async (e) => {
    e.preventDefault();
    const creating = e.submitter && e.submitter.value === "register";
    try {
      if (creating) await post("/auth/register", { email: email.value, password: password.value });
      await signIn();
    } catch (error) {
      showErrors(form, box, error);
    }
  } },
  field("Email", email),
  field("Password", password, "At least 8 characters."),
  h("div", { class: "row" },
    h("button", { type: "submit", value: "login" }, "Sign in"),
    h("button", { type: "submit", value: "register", class: "secondary" }, "Create account")),
  box);
  mount(h("h1", {}, "Sign in to lorabake"), form);
}
