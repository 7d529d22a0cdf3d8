// Sign-in page: a password for a session cookie, then the page the person asked for.
(function () {
  "use strict";
  var S = window.Streamwise;
  var form = S.el("signin-form");
  var error = S.el("signin-error");
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    error.hidden = true;
    var username = S.el("username").value.trim();
    var password = S.el("password").value;
    if (!username || !password) {
      error.textContent = "Enter your user name and password.";
      error.hidden = false;
      return;
    }
    fetch(S.base + "/api/v1/session", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ username: username, password: password })
    }).then(function (response) {
      if (response.ok) { window.location.reload(); return; }
      error.textContent = response.status === 429 ? "Too many attempts: wait a few minutes." :
        response.status === 401 ? "Wrong user name or password." : "Sign-in failed (" + response.status + ").";
      error.hidden = false;
      S.el("password").select();
    }).catch(function () {
      error.textContent = "The web app cannot be reached.";
      error.hidden = false;
    });
  });
})();
