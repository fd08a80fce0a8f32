// docstream desk: the login form. Opens a desk session (which gets a CSRF token) and goes on.
(() => {
  "use strict";
  const MESSAGES = JSON.parse(document.getElementById("login-messages").textContent);
  const __ = (t) => MESSAGES[t] || t;
  const form = document.getElementById("login-form");
  const error = document.getElementById("login-error");
  const submit = form.querySelector("button[type=submit]");
  const target = () => {
    const t = new URLSearchParams(location.search).get("redirect-to") || "/app";
    // Only this site's desk: never an open redirect.
    return /^\/app(\/|\?|$)/.test(t) && !t.includes("//") ? t : "/app";
  };
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    error.hidden = true;
    const usr = form.usr.value.trim();
    const pwd = form.pwd.value;
    if (!usr || !pwd) {
      error.textContent = __("Enter your user name and password.");
      error.hidden = false;
      return;
    }
    const label = submit.textContent;
    submit.disabled = true;
    submit.textContent = submit.dataset.busy;
    try {
      const r = await fetch("/api/method/login", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ usr, pwd, device: "desk" }),
      });
      if (r.ok) {
        location.href = target();
        return;
      }
      const body = await r.json().catch(() => ({}));
      error.textContent = r.status === 429 ? __("Too many failed logins: wait a few minutes and try again.")
        : r.status === 401 ? __("Wrong user name or password.")
        : (body.exception || __("Login failed.")).replace(/^frappe\.exceptions\.\w+: /, "");
    } catch (_) {
      error.textContent = __("The site did not answer. Try again.");
    }
    error.hidden = false;
    submit.disabled = false;
    submit.textContent = label;
  });
})();
