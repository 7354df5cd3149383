// The status page: polls api/status every 2 s and redraws. Text goes in with textContent
// only (names come from the store, which anyone with write access to it controls).
"use strict";

const POLL_MS = 2000;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = String(v);
    else node.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(typeof c === "string" ? document.createTextNode(c) : c);
  }
  return node;
}

function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

function fmtKey(k) {
  if (!k) return "identity";
  let s = k.provider;
  if (k.key) s += ":" + k.key;
  if (k.keyId) s += " (key id " + k.keyId + ")";
  return s;
}

function age(seconds) {
  if (seconds < 1) return "just now";
  if (seconds < 90) return Math.round(seconds) + " s ago";
  if (seconds < 5400) return Math.round(seconds / 60) + " min ago";
  return Math.round(seconds / 3600) + " h ago";
}

const KINDS = [
  ["current", "On the write key"],
  ["stale", "Stale (older key)"],
  ["plaintext", "Plaintext"],
  ["undecryptable", "Undecryptable"],
];

function resourceItem(r) {
  const bar = el("div", { class: "bar", role: "img" });
  const parts = [];
  for (const [kind, label] of KINDS) {
    const n = r[kind];
    if (n > 0) {
      const seg = el("span", { class: kind, "data-segment": kind });
      seg.style.flexGrow = String(n);
      bar.append(seg);
      parts.push(n + " " + label.toLowerCase());
    }
  }
  bar.setAttribute("aria-label", r.resource + ": " + (parts.length ? parts.join(", ") : "no objects"));
  const counts = el("dl", { class: "counts" });
  counts.append(el("dt", { text: "Objects" }), el("dd", { "data-count": "objects", text: r.objects }));
  for (const [kind, label] of KINDS) {
    const alert = kind !== "current" && r[kind] > 0;
    counts.append(el("dt", { text: label }), el("dd", { "data-count": kind, class: alert ? "alert" : null, text: r[kind] }));
  }
  const problems = [];
  if (r.stale > 0) problems.push(r.stale + " stale");
  if (r.plaintext > 0) problems.push(r.plaintext + " plaintext");
  if (r.undecryptable > 0) problems.push(r.undecryptable + " undecryptable");
  const verdict = problems.length
    ? el("p", { class: "problem", "data-verdict": "needs-work", text: "Needs work: " + problems.join(", ") + (r.undecryptable > 0 ? " (the configuration has no key that opens them)" : " — `atrest reencrypt` rewrites them") })
    : el("p", { class: "ok", "data-verdict": "up-to-date", text: r.objects > 0 ? "Every object encrypted with the write key" : "No objects yet" });
  const li = el("li", { "data-resource": r.resource },
    el("h3", { text: r.resource }),
    el("p", { class: "write" }, "write key ", el("code", { "data-write-key": "", text: fmtKey(r.writeKey) })),
    bar, counts, verdict);
  if (r.undecryptableKeys && r.undecryptableKeys.length) {
    const list = el("ul", { class: "plain-list" });
    for (const u of r.undecryptableKeys) list.append(el("li", {}, el("code", { text: u.key }), el("br"), u.reason));
    const shown = r.undecryptableKeys.length < r.undecryptable ? " (first " + r.undecryptableKeys.length + ")" : "";
    li.append(el("details", { class: "unreadable" }, el("summary", { text: "Which objects cannot be read, and why" + shown }), list));
  }
  return li;
}

function drawResources(audit) {
  const list = clear(document.getElementById("resources"));
  const uncovered = clear(document.getElementById("uncovered"));
  let nUncovered = 0;
  for (const r of audit.resources) {
    if (r.covered) list.append(resourceItem(r));
    else {
      nUncovered++;
      uncovered.append(el("li", { "data-resource": r.resource }, el("strong", { text: r.resource }), " — ", el("span", { "data-count": "objects", text: r.objects }), " objects, stored as written"));
    }
  }
  if (list.children.length === 0) list.append(el("li", { class: "note", text: "No object of a covered resource in the store yet." }));
  document.getElementById("uncovered-block").hidden = nUncovered === 0;
}

function drawKeys(keys) {
  const body = clear(document.querySelector("#keys tbody"));
  for (const k of keys) {
    const role = k.provider === "identity"
      ? (k.write ? "writes plaintext" : "reads plaintext left from before")
      : k.write ? "writes new values" : (k.objects > 0 ? "read only (still protects objects)" : "read only, protects nothing: safe to remove");
    body.append(el("tr", { "data-key": k.entry + ":" + k.provider + ":" + (k.key || "") },
      el("td", { text: k.resources.join(", ") }),
      el("td", { text: k.provider }),
      el("td", {}, el("code", { text: k.key || "—" })),
      el("td", { class: k.write ? "good" : null, text: role }),
      el("td", { class: "num", "data-count": "objects", text: k.objects })));
  }
}

function drawServers(audit) {
  const body = clear(document.querySelector("#servers tbody"));
  document.getElementById("servers-empty").hidden = audit.servers.length > 0;
  for (const s of audit.servers) {
    const hash = el("td", { class: s.matchesConfig ? null : "bad" }, el("span", { class: "hash", text: s.configHash }));
    if (!s.matchesConfig) hash.append(el("div", { "data-mismatch": "", text: "Differs from the configuration this page reads" }));
    const reload = s.lastReloadError
      ? el("td", { class: "bad", text: "last reload failed: " + s.lastReloadError })
      : el("td", { text: s.automaticReload ? "automatic" : "on restart" });
    body.append(el("tr", { "data-server": s.id, "data-matches": String(s.matchesConfig) },
      el("td", { text: s.id }), hash,
      el("td", { class: "num", text: age(s.heartbeatAgeSeconds) }), reload));
  }
}

function drawRotation(rot) {
  const box = clear(document.getElementById("rotation"));
  if (!rot) {
    box.dataset.step = "none";
    box.append(el("p", { class: "note", text: "No rotation recorded in the store." }));
    return;
  }
  box.dataset.step = rot.step;
  const at = rot.steps.indexOf(rot.step);
  const steps = el("ol", { class: "steps", "aria-label": "rotation steps" });
  rot.steps.forEach((s, i) => {
    const cls = i < at || rot.step === "done" ? "done" : (i === at ? "current" : null);
    steps.append(el("li", { class: cls, "aria-current": i === at ? "step" : null, text: s }));
  });
  box.append(el("p", {}, "Rotation ", el("code", { text: rot.id }), " by " + rot.holder + ": step ", el("strong", { "data-rotation-step": "", text: rot.step })), steps);
  for (const e of rot.entries) {
    box.append(el("p", { class: "note", text: e.resources.join(", ") + ": " + e.oldKey + " → " + e.newKey }));
  }
  const total = Math.max(rot.total, rot.rewritten);
  const prog = el("progress", { max: total || 1, value: Math.min(rot.rewritten, total || 1) });
  box.append(el("label", {}, "Re-encrypted ", el("span", { "data-rotation-done": "", text: rot.rewritten }), " of ", el("span", { "data-rotation-total": "", text: total }), rot.rate > 0 ? " (" + Math.round(rot.rate) + " objects/s)" : "", prog));
}

function drawHistory(h) {
  const box = clear(document.getElementById("history"));
  box.dataset.clean = String(h.clean);
  box.append(el("p", { class: h.clean ? "ok" : "problem", text: h.clean
    ? "Clean: " + h.versions + " retained versions, none plaintext or on a removed key."
    : "Old copies remain among " + h.versions + " retained versions: `atrest purge` compacts and defragments them away." }));
  const bad = h.resources.filter((r) => r.plaintext > 0 || r.unreadable > 0);
  if (bad.length) {
    const list = el("ul", { class: "plain-list" });
    for (const r of bad) list.append(el("li", { "data-resource": r.resource, text: r.resource + ": " + r.plaintext + " plaintext, " + r.unreadable + " unreadable old versions" }));
    box.append(list);
  }
}

function drawKms(kms) {
  const box = clear(document.getElementById("kms"));
  if (!kms.length) {
    box.append(el("p", { class: "note", text: "The configuration has no KMS provider." }));
    return;
  }
  const table = el("table", {}, el("thead", {}, el("tr", {}, el("th", { text: "Provider" }), el("th", { text: "Endpoint" }), el("th", { text: "Health" }))));
  const body = el("tbody");
  for (const k of kms) {
    const health = k.healthy === undefined ? el("td", { text: "not probed from here" })
      : k.healthy ? el("td", { class: "good", text: "healthy" })
      : el("td", { class: "bad", text: "failing: " + (k.error || "unknown error") });
    body.append(el("tr", { "data-kms": k.name }, el("td", { text: k.name }), el("td", {}, el("code", { text: k.endpoint })), health));
  }
  table.append(body);
  box.append(table);
}

function draw(s) {
  const a = s.audit;
  const summary = document.getElementById("summary");
  const problems = a.resources.filter((r) => r.covered && (r.stale || r.plaintext || r.undecryptable));
  if (a.upToDate) {
    summary.dataset.state = "up-to-date";
    summary.textContent = "Up to date: every covered object (" + a.objects + " objects in all) is encrypted with its write key.";
  } else {
    summary.dataset.state = "not-up-to-date";
    summary.textContent = "Not up to date: " + problems.map((r) => {
      const parts = [];
      if (r.stale) parts.push(r.stale + " stale");
      if (r.plaintext) parts.push(r.plaintext + " plaintext");
      if (r.undecryptable) parts.push(r.undecryptable + " undecryptable");
      return r.resource + " (" + parts.join(", ") + ")";
    }).join("; ") + ".";
  }
  const meta = document.getElementById("meta");
  meta.dataset.scan = String(s.scan);
  meta.textContent = "Store " + a.store + " at revision " + a.revision + " · configuration " + s.configFile + " (" + a.configHash.slice(0, 19) + "…) · scanned " + age(Date.now() / 1000 - s.scannedAt);
  drawResources(a);
  drawKeys(s.keys);
  drawServers(a);
  drawRotation(s.rotation);
  drawHistory(s.history);
  drawKms(s.kms);
}

async function poll() {
  try {
    const response = await fetch("api/status", { cache: "no-store", credentials: "same-origin" });
    const summary = document.getElementById("summary");
    if (response.status === 401) {
      summary.dataset.state = "error";
      summary.textContent = "Logged out: open a new login link (`atrest ui-url`, or the one `atrest status --web` printed).";
      return;
    }
    const body = await response.json();
    if (body.error) {
      if (body.last) draw(body.last);
      summary.dataset.state = "error";
      summary.textContent = "The last scan failed: " + body.error;
    } else {
      draw(body);
    }
  } catch (e) {
    const summary = document.getElementById("summary");
    summary.dataset.state = "error";
    summary.textContent = "The server does not answer (" + e.message + "); retrying.";
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

poll();
