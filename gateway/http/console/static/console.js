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

// The case page: ask for its changing part every 2 s while it is shown (a tab in the
// background asks nothing, and asks at once when shown again); 304 while nothing changed.
const live = document.getElementById("live");
if (live) {
  let etag = live.dataset.etag;
  const ask = async () => {
    try {
      const answer = await fetch(live.dataset.live, { headers: { "If-None-Match": etag }, credentials: "same-origin" });
      if (answer.status === 200) {
        live.innerHTML = await answer.text();
        etag = answer.headers.get("ETag") || etag;
      }
    } catch (error) { /* the next round tries again */ }
  };
  const refresh = async () => {
    if (!document.hidden) await ask();
    window.setTimeout(refresh, 2000);
  };
  document.addEventListener("visibilitychange", () => { if (!document.hidden) ask(); });
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
  bar.hidden = false;
  // one request: the gateway streams a line of progress a few times a second, then the outcome
  let state = { done: 0, total: 1, ok: null, findings: [] };
  try {
    const answer = await fetch(form.action, { method: "POST", body: new FormData(form), credentials: "same-origin" });
    if (!answer.ok || !answer.body) throw new Error(String(answer.status));
    const reader = answer.body.pipeThrough(new TextDecoderStream()).getReader();
    let pending = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      pending += value;
      const lines = pending.split("\n");
      pending = lines.pop();
      for (const line of lines) {
        if (!line) continue;
        state = { ...state, ...JSON.parse(line) };
        bar.max = Math.max(state.total, 1);
        bar.value = state.done;
      }
    }
  } catch (error) {
    state = { ...state, ok: null };
  }
  if (state.ok === null) state = { ...state, ok: false, findings: ["校验未完成：与网关的连接中断，请重试"] };
  verdict.textContent = state.ok ? `校验通过：${state.done} 条条目全部完好` : "校验未通过：";
  verdict.className = state.ok ? "verdict ok" : "verdict bad";
  for (const finding of state.findings || []) {
    const item = document.createElement("li");
    item.textContent = finding;
    list.append(item);
  }
  form.querySelector("button").disabled = false;
}
