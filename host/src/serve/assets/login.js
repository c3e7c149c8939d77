// The login page: trade the token (typed, or from the link's #token=
// fragment, which the browser never sends to the server) for the
// HttpOnly cookie, then load the control room.
"use strict";
async function login(token) {
  const status = document.getElementById("login-status");
  const r = await fetch("/api/session", {
    method: "POST",
    headers: { "Authorization": "Bearer " + token, "X-Vivarium-Action": "1" },
    credentials: "same-origin",
  });
  if (r.ok) {
    history.replaceState(null, "", "/");
    location.replace("/");
  } else {
    status.textContent = "That token was refused.";
    status.className = "error";
  }
}
// A link with the token, opened anew or pasted over this page.
function fromLink() {
  const m = location.hash.match(/^#token=([^&]+)/);
  if (m) {
    history.replaceState(null, "", "/");
    login(decodeURIComponent(m[1]));
  }
}
window.addEventListener("hashchange", fromLink);
document.addEventListener("DOMContentLoaded", () => {
  fromLink();
  document.getElementById("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    login(document.getElementById("token").value.trim());
  });
});
