"use strict";
// The console's sign-in: POST the key once; the server answers with an HttpOnly session cookie.
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("login-form");
  const error = document.getElementById("login-error");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    const key = document.getElementById("login-key").value.trim();
    if (!key) return;
    try {
      const r = await fetch("/v1/session", {
        method: "POST", credentials: "same-origin",
        headers: {"content-type": "application/json"}, body: JSON.stringify({key}),
      });
      if (r.ok) {
        const next = location.hash && location.hash.startsWith("#/") ? location.hash : "#/playground";
        if (location.pathname === "/") location.reload();  // the same page, now signed in
        else location.replace("/" + next);
        return;
      }
      const body = await r.json().catch(() => ({}));
      error.textContent = r.status === 429 ? "Too many failed attempts; wait a few minutes."
        : (body.detail || "Sign-in failed.");
    } catch (e) {
      error.textContent = "The server did not answer.";
    }
  });
});
