// The console's one script (served by the gateway, no inline scripts: CSP script-src 'self').
"use strict";

document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
    return;
  }
  if (form.hasAttribute("data-once")) {
    // a second click sends nothing; the filing's idempotency key makes a resend file once anyway
    if (form.dataset.sent) { event.preventDefault(); return; }
    form.dataset.sent = "1";
    form.querySelectorAll("button[type=submit]").forEach((b) => { b.disabled = true; });
  }
  if (form.hasAttribute("data-verify")) {
    event.preventDefault();
    verify(form);
  }
});

// The case page: ask for its changing part every 2 s; 304 while nothing changed.
const live = document.getElementById("live");
if (live) {
  let etag = live.dataset.etag;
  const refresh = async () => {
    try {
      const answer = await fetch(live.dataset.live, { headers: { "If-None-Match": etag }, credentials: "same-origin" });
      if (answer.status === 200) {
        live.innerHTML = await answer.text();
        etag = answer.headers.get("ETag") || etag;
      }
    } catch (error) { /* the next round tries again */ }
    window.setTimeout(refresh, 2000);
  };
  window.setTimeout(refresh, 2000);
}

async function verify(form) {
  const bar = document.getElementById("verify-progress");
  const verdict = document.getElementById("verify-result");
  const list = document.getElementById("verify-findings");
  form.querySelector("button").disabled = true;
  verdict.textContent = "校验中…";
  verdict.className = "verdict";
  list.replaceChildren();
  const started = await fetch(form.action, { method: "POST", body: new FormData(form), credentials: "same-origin" });
  const { job, total } = await started.json();
  bar.hidden = false;
  bar.max = Math.max(total, 1);
  for (;;) {
    const state = await (await fetch(`/console/audit/verify/${job}`, { credentials: "same-origin" })).json();
    bar.value = state.done;
    if (state.ok !== null) {
      verdict.textContent = state.ok ? `校验通过：${state.done} 条条目全部完好` : "校验未通过：";
      verdict.className = state.ok ? "verdict ok" : "verdict bad";
      for (const finding of state.findings) {
        const item = document.createElement("li");
        item.textContent = finding;
        list.append(item);
      }
      form.querySelector("button").disabled = false;
      return;
    }
    await new Promise((resolve) => window.setTimeout(resolve, 300));
  }
}
