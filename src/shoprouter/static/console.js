"use strict";
// The shoprouter support-desk console: plain DOM, no libraries, no network but this server.
//
// Safety rule: text from the server (customer messages, replies, ids, metadata) only ever reaches the page
// through text nodes (`el()` below turns strings into text nodes, never HTML). Nothing here uses innerHTML,
// outerHTML, insertAdjacentHTML or document.write; the server's Content-Security-Policy also forbids inline
// script.

const CSRF = {"X-Shoprouter-Console": "1"};
const COLORS = {
  order: "#2f6fb0", search: "#2a9d8f", details: "#7b5ea7", returns: "#e07a1f", account: "#3a7d44",
  payment: "#c0392b", technical: "#5d6d7e", clarify: "#d4a017", none: "#8e8e8e", human: "#444",
};
const REASONS = {
  out_of_scope: "out of scope", repeated_clarification: "repeated clarification",
  low_confidence: "low confidence",
};
const state = {labels: [], me: null, pgConversation: null, pgCount: 0, queueSelected: null,
               convOffset: 0, timers: []};

// ------------------------------------------------------------------------------------------ DOM helpers
function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = String(v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "style") Object.assign(node.style, v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    node.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

const $ = (id) => document.getElementById(id);

function toast(message, kind) {
  const t = $("toast");
  t.textContent = message;
  t.className = "toast " + (kind || "ok");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.className = "toast hidden"; }, 4000);
}

function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return isNaN(d) ? String(iso) : d.toLocaleString();
}

function ago(iso) {
  const s = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
  if (s < 60) return Math.round(s) + " s";
  if (s < 3600) return Math.round(s / 60) + " min";
  if (s < 86400) return (s / 3600).toFixed(1) + " h";
  return (s / 86400).toFixed(1) + " d";
}

function pct(x) { return x === null || x === undefined ? "–" : (100 * x).toFixed(1) + " %"; }
function ms(x) { return x === null || x === undefined ? "–" : Number(x).toFixed(x < 10 ? 2 : 1) + " ms"; }

function pill(decision, extra) {
  return el("span", {class: "pill", "data-decision": decision,
                     style: {background: COLORS[decision] || "#555"}}, decision, extra || "");
}

// ------------------------------------------------------------------------------------------------ API
class ApiError extends Error {
  constructor(status, body) { super((body && body.detail) || ("HTTP " + status)); this.status = status; }
}

async function api(method, path, body) {
  const opts = {method, credentials: "same-origin", headers: {...CSRF}};
  if (body !== undefined) {
    opts.headers["content-type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  if (r.status === 401) {
    location.replace("/login" + location.hash);
    throw new ApiError(401, {detail: "signed out"});
  }
  if (r.status === 204) return null;
  const data = await r.json().catch(() => null);
  if (!r.ok) throw new ApiError(r.status, data);
  return data;
}

function failed(e) { toast(e.message || String(e), "error"); }

// ------------------------------------------------------------------------------------ probability bars
function bars(scores, chosen) {
  const labels = state.labels.length ? state.labels : Object.keys(scores || {});
  const box = el("div", {class: "bars"});
  for (const label of labels) {
    const p = Number((scores || {})[label] || 0);
    const fill = el("div", {class: "fill", style: {width: (100 * p).toFixed(1) + "%",
                                                   background: COLORS[label] || "#555"}});
    box.appendChild(el("div", {class: "bar" + (label === chosen ? " chosen" : ""), "data-label": label,
                               "data-p": p.toFixed(6)},
      el("span", {class: "name"}, label), el("div", {class: "track"}, fill),
      el("span", {class: "val"}, (100 * p).toFixed(1) + "%")));
  }
  return box;
}

// --------------------------------------------------------------------------------------------- routing
const PAGES = ["playground", "conversations", "conversation", "queue", "corrections", "overview"];

function route() {
  state.timers.forEach(clearInterval);
  state.timers = [];
  const hash = location.hash || "#/playground";
  const parts = hash.slice(2).split("/").map(decodeURIComponent);
  let page = parts[0] || "playground";
  let arg = parts[1] || null;
  if (page === "conversations" && arg) page = "conversation";
  if (!PAGES.includes(page)) page = "playground";
  for (const p of PAGES) $("page-" + p).classList.toggle("hidden", p !== page);
  for (const a of document.querySelectorAll("#nav a")) {
    const target = page === "conversation" ? "conversations" : page;
    a.classList.toggle("active", a.dataset.page === target);
  }
  document.title = "shoprouter · " + page;
  const show = {playground: showPlayground, conversations: showConversations, conversation: () => showConversation(arg),
                queue: () => showQueue(arg), corrections: showCorrections, overview: showOverview}[page];
  Promise.resolve(show()).catch(failed);
}

// ------------------------------------------------------------------------------------------ playground
function showPlayground() {
  $("pg-text").focus();
  renderPgConv();
}

function renderPgConv() {
  const box = clear($("pg-conv"));
  if (state.pgConversation) {
    append(box, ["Conversation ", el("a", {href: "#/conversations/" + encodeURIComponent(state.pgConversation)},
                                        state.pgConversation)]);
  }
}

function turnCard(turn, opts) {
  // One routed message: what the customer wrote, the decision with a bar per label, the reply, latency.
  const reply = turn.reply || null;
  const card = el("div", {class: "card turn-card", "data-decision": turn.decision});
  const header = el("div", {class: "row"},
    el("span", {class: "who-label"}, opts.title || "customer"),
    pill(turn.decision), el("span", {class: "conf"}, (100 * (turn.confidence || 0)).toFixed(1) + "%"),
    turn.reason && turn.reason !== "model" ? el("span", {class: "tag"}, turn.reason) : null,
    el("span", {class: "grow"}),
    el("span", {class: "latency"}, "routing " + ms(opts.routingMs),
       opts.roundTripMs !== undefined ? " · round trip " + ms(opts.roundTripMs) : ""));
  card.appendChild(header);
  card.appendChild(el("div", {class: "msg customer-text"}, turn.text));
  card.appendChild(bars(turn.scores, turn.decision));
  if (reply) {
    if (reply.action === "clarify") {
      card.appendChild(el("div", {class: "clarify-box"}, el("b", {}, "Clarifying question: "), reply.text));
    } else if (reply.action === "handoff") {
      const reason = (reply.data && reply.data.reason) || "";
      card.appendChild(el("div", {class: "handoff-box"},
        el("b", {}, "Handed to a human (" + (REASONS[reason] || reason) + "): "), reply.text));
    } else if (reply.action === "handed_off") {
      card.appendChild(el("div", {class: "handoff-box"}, el("b", {}, "Waiting for a human: "), reply.text));
    } else {
      card.appendChild(el("div", {class: "reply-box"},
        el("b", {}, (reply.agent || "agent") + " agent" + (reply.action ? " · " + reply.action : "") + ": "),
        reply.text));
    }
  }
  return card;
}

async function playgroundSend(ev) {
  ev.preventDefault();
  const lines = $("pg-text").value.split("\n").map((s) => s.trim()).filter(Boolean);
  if (!lines.length) return;
  const mode = document.querySelector("input[name=pg-mode]:checked").value;
  const log = $("pg-log");
  $("pg-send").disabled = true;
  try {
    if (mode === "route") {
      const history = [];
      for (const text of lines) {
        const t0 = performance.now();
        const d = await api("POST", "/v1/route", {text, history: history.slice(-6)});
        const rt = performance.now() - t0;
        log.prepend(turnCard({...d, text}, {title: "route only", routingMs: d.latency_ms, roundTripMs: rt}));
        history.push({text, label: d.decision});
      }
    } else {
      if (!state.pgConversation) {
        const customer = parseInt($("pg-customer").value, 10);
        const body = {metadata: {source: "playground"}};
        if (customer > 0) body.customer_id = customer;
        const conv = await api("POST", "/v1/conversations", body);
        state.pgConversation = conv.id;
        renderPgConv();
      }
      for (const text of lines) {
        const t0 = performance.now();
        const out = await api("POST", "/v1/conversations/" + encodeURIComponent(state.pgConversation) + "/messages",
                              {text});
        const rt = performance.now() - t0;
        const t = out.turn;
        log.prepend(turnCard(t, {title: "#" + t.seq, routingMs: (t.meta || {}).routing_ms, roundTripMs: rt}));
        if (out.handoff) refreshQueueCount();
      }
    }
    $("pg-text").value = "";
  } catch (e) {
    failed(e);
  } finally {
    $("pg-send").disabled = false;
  }
}

function playgroundNew() {
  state.pgConversation = null;
  clear($("pg-log"));
  renderPgConv();
  $("pg-text").focus();
}

// --------------------------------------------------------------------------------------- conversations
async function showConversations(more) {
  if (!more) state.convOffset = 0;
  const q = $("conv-q").value.trim();
  const status = $("conv-status").value;
  const params = new URLSearchParams({limit: "50", offset: String(state.convOffset)});
  if (q) params.set("q", q);
  if (status) params.set("status", status);
  const data = await api("GET", "/v1/conversations?" + params);
  const box = $("conv-list");
  if (!more) clear(box);
  let table = box.querySelector("table");
  if (!table) {
    table = el("table", {class: "list"}, el("thead", {}, el("tr", {},
      ["Last activity", "Conversation", "Customer", "Status", "Turns", "Last message"].map((h) => el("th", {}, h)))),
      el("tbody", {}));
    box.appendChild(table);
  }
  const tbody = table.querySelector("tbody");
  for (const c of data.items) {
    const href = "#/conversations/" + encodeURIComponent(c.id);
    tbody.appendChild(el("tr", {class: "conv-row", "data-id": c.id, onclick: () => { location.hash = href; }},
      el("td", {}, fmtTime(c.updated_at)),
      el("td", {}, el("a", {href}, c.id)),
      el("td", {}, c.customer_id === null ? "–" : String(c.customer_id)),
      el("td", {}, el("span", {class: "status " + c.status}, c.status.replace("_", " "))),
      el("td", {}, String(c.turn_count)),
      el("td", {class: "snippet"}, c.last_decision ? pill(c.last_decision) : null, " ", c.last_text || "")));
  }
  state.convOffset += data.items.length;
  const moreBox = clear($("conv-more"));
  append(moreBox, [el("span", {class: "muted"}, `${state.convOffset} of ${data.total}`)]);
  if (state.convOffset < data.total) {
    moreBox.appendChild(el("button", {class: "ghost", type: "button",
                                      onclick: () => showConversations(true).catch(failed)}, "More"));
  }
  if (!data.items.length && !more) box.appendChild(el("p", {class: "muted"}, "No conversations match."));
}

function labelSelect(turn, cid, onSaved) {
  const current = turn.correction ? turn.correction.label : turn.decision;
  const select = el("select", {class: "label-select", "aria-label": "correct label of turn " + turn.seq},
    state.labels.map((l) => el("option", {value: l, selected: l === current}, l)));
  const save = el("button", {type: "button", class: "ghost small-btn label-save"}, "Save label");
  save.addEventListener("click", async () => {
    try {
      await api("PUT", `/v1/conversations/${encodeURIComponent(cid)}/turns/${turn.seq}/label`,
                {label: select.value});
      toast(`Turn ${turn.seq} labelled ${select.value}`);
      if (onSaved) onSaved();
    } catch (e) { failed(e); }
  });
  return el("span", {class: "correct"}, "label ", select, " ", save);
}

function transcript(conv, onChange) {
  // Every turn with its decision and confidence; human replies; a label corrector per customer turn.
  const list = el("div", {class: "transcript"});
  for (const t of conv.turns) {
    if (t.role === "human") {
      list.appendChild(el("div", {class: "turn human", "data-seq": t.seq},
        el("div", {class: "meta"}, `#${t.seq} · ${fmtTime(t.created_at)} · support agent `,
           el("b", {}, t.author || "?")),
        el("div", {class: "msg"}, t.text)));
      continue;
    }
    const corr = t.correction;
    const meta = el("div", {class: "meta"}, `#${t.seq} · ${fmtTime(t.created_at)} · `, pill(t.decision), " ",
      el("span", {class: "conf"}, (100 * t.confidence).toFixed(1) + "%"),
      t.reason && t.reason !== "model" ? el("span", {class: "tag"}, t.reason) : null,
      corr ? el("span", {class: "tag corrected"}, "corrected → " + corr.label + (corr.author ? " by " + corr.author : ""))
           : null,
      el("span", {class: "latency"}, "routing " + ms((t.meta || {}).routing_ms)));
    const node = el("div", {class: "turn customer", "data-seq": t.seq}, meta,
      el("div", {class: "msg customer-text"}, t.text));
    const top = Object.entries(t.scores || {}).sort((a, b) => b[1] - a[1]).slice(0, 3);
    node.appendChild(el("div", {class: "top-scores muted"},
      top.map(([k, v]) => el("span", {}, `${k} ${(100 * v).toFixed(1)}% `))));
    if (t.reply && t.reply.text) {
      node.appendChild(el("div", {class: "reply"}, el("b", {}, (t.reply.agent ? t.reply.agent + " agent" : "shop") + ": "),
                          t.reply.text));
    }
    node.appendChild(labelSelect(t, conv.id, onChange));
    list.appendChild(node);
  }
  if (!conv.turns.length) list.appendChild(el("p", {class: "muted"}, "No messages yet."));
  return list;
}

function handoffList(conv) {
  if (!conv.handoffs.length) return null;
  return el("div", {class: "handoffs"}, conv.handoffs.map((h) => el("div", {class: "handoff " + h.status},
    el("b", {}, "Hand-off: " + (REASONS[h.reason] || h.reason)), ` at turn #${h.seq}, ${fmtTime(h.created_at)} · `,
    el("span", {class: "status " + h.status}, h.status),
    h.resolved_at ? ` · resolved ${fmtTime(h.resolved_at)} by ${h.resolved_by || "?"}` : "",
    el("div", {class: "muted"}, h.note))));
}

async function showConversation(cid) {
  const box = clear($("conv-detail"));
  const conv = await api("GET", "/v1/conversations/" + encodeURIComponent(cid));
  const reload = () => showConversation(cid).catch(failed);
  const del = el("button", {type: "button", class: "danger", id: "conv-delete"}, "Delete conversation");
  del.addEventListener("click", async () => {
    if (!confirm("Erase this conversation, its hand-offs and corrections? This cannot be undone.")) return;
    try {
      await api("DELETE", "/v1/conversations/" + encodeURIComponent(cid));
      toast("Conversation erased");
      location.hash = "#/conversations";
    } catch (e) { failed(e); }
  });
  append(box, [
    el("div", {class: "row"}, el("a", {href: "#/conversations"}, "← all conversations"), el("span", {class: "grow"}), del),
    el("h1", {}, "Conversation ", el("span", {class: "mono", id: "conv-id"}, conv.id)),
    el("div", {class: "row muted"}, "status ", el("span", {class: "status " + conv.status}, conv.status.replace("_", " ")),
       ` · customer ${conv.customer_id === null ? "–" : conv.customer_id} · ${conv.turn_count} turns · started ${fmtTime(conv.created_at)}`,
       Object.keys(conv.meta || {}).length ? " · " + JSON.stringify(conv.meta) : ""),
    handoffList(conv),
    transcript(conv, reload),
    replyForm(conv, reload),
  ]);
}

function replyForm(conv, onDone) {
  const text = el("textarea", {rows: 3, class: "reply-text", maxlength: 2000,
                               placeholder: "Write to the customer…"});
  const send = el("button", {type: "submit", class: "reply-send"}, "Send reply");
  const resolve = el("button", {type: "button", class: "ghost resolve-btn"},
                     conv.status === "handed_off" ? "Mark resolved" : "Resolve");
  resolve.disabled = conv.status !== "handed_off";
  resolve.addEventListener("click", async () => {
    try {
      await api("POST", `/v1/conversations/${encodeURIComponent(conv.id)}/resolve`);
      toast("Resolved: the agents answer this conversation's next message");
      refreshQueueCount();
      onDone();
    } catch (e) { failed(e); }
  });
  const form = el("form", {class: "panel reply-form"}, text, el("div", {class: "row"}, send, resolve));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const value = text.value.trim();
    if (!value) return;
    try {
      await api("POST", `/v1/conversations/${encodeURIComponent(conv.id)}/replies`, {text: value});
      toast("Reply sent");
      onDone();
    } catch (e) { failed(e); }
  });
  return form;
}

// ----------------------------------------------------------------------------------------------- queue
async function refreshQueueCount() {
  try {
    const open = await api("GET", "/v1/handoffs?status=open&order=oldest&limit=1000");
    $("queue-count").textContent = open.length ? String(open.length) : "";
    return open;
  } catch (e) { return []; }
}

async function showQueue(selected) {
  const open = await refreshQueueCount();
  const list = clear($("queue-list"));
  if (!open.length) list.appendChild(el("p", {class: "muted", id: "queue-empty"}, "Nobody is waiting. "));
  for (const h of open) {
    const last = h.transcript.length ? h.transcript[h.transcript.length - 1] : null;
    const item = el("a", {class: "queue-item" + (h.conversation_id === selected ? " active" : ""),
                          href: "#/queue/" + encodeURIComponent(h.conversation_id), "data-id": h.conversation_id},
      el("div", {class: "row"}, el("span", {class: "reason " + h.reason}, REASONS[h.reason] || h.reason),
         el("span", {class: "grow"}), el("span", {class: "muted"}, "waiting " + ago(h.created_at))),
      el("div", {class: "mono small"}, h.conversation_id),
      last ? el("div", {class: "snippet"}, last.text) : null);
    list.appendChild(item);
  }
  const detail = clear($("queue-detail"));
  if (!selected) {
    detail.appendChild(el("p", {class: "muted"}, "Pick a conversation from the queue."));
    return;
  }
  const conv = await api("GET", "/v1/conversations/" + encodeURIComponent(selected));
  const h = conv.handoffs.length ? conv.handoffs[conv.handoffs.length - 1] : null;
  const reload = () => showQueue(selected).catch(failed);
  append(detail, [
    el("h2", {}, "Conversation ", el("a", {href: "#/conversations/" + encodeURIComponent(conv.id), class: "mono"}, conv.id)),
    h ? el("div", {class: "why"}, el("b", {}, "Why: " + (REASONS[h.reason] || h.reason)), " — ", h.note,
           " (", fmtTime(h.created_at), ")") : null,
    el("div", {class: "muted"}, `status ${conv.status.replace("_", " ")} · customer ${conv.customer_id === null ? "–" : conv.customer_id}`),
    transcript(conv, reload),
    replyForm(conv, reload),
  ]);
}

// ----------------------------------------------------------------------------------------- corrections
async function showCorrections() {
  const rows = await api("GET", "/v1/corrections");
  const box = clear($("corr-list"));
  if (!rows.length) {
    box.appendChild(el("p", {class: "muted"}, "No corrections yet: correct a turn's label in a conversation."));
    return;
  }
  box.appendChild(el("table", {class: "list"},
    el("thead", {}, el("tr", {}, ["When", "Conversation", "Turn", "Was", "Now", "By"].map((x) => el("th", {}, x)))),
    el("tbody", {}, rows.slice().reverse().map((c) => el("tr", {class: "corr-row"},
      el("td", {}, fmtTime(c.created_at)),
      el("td", {}, el("a", {href: "#/conversations/" + encodeURIComponent(c.conversation_id)}, c.conversation_id)),
      el("td", {}, "#" + c.seq), el("td", {}, pill(c.previous)), el("td", {}, pill(c.label)),
      el("td", {}, c.author || "–"))))));
}

// -------------------------------------------------------------------------------------------- overview
const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs, ...children) {
  const n = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, String(v));
  for (const c of children) n.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
  return n;
}

function lineChart(series, keys, names, colors, unit) {
  const W = 860, H = 220, L = 56, R = 12, T = 12, B = 28;
  const pts = series.filter((s) => keys.some((k) => s[k] !== null && s[k] !== undefined));
  const root = svg("svg", {viewBox: `0 0 ${W} ${H}`, class: "svgchart", role: "img"});
  if (!pts.length) {
    root.appendChild(svg("text", {x: W / 2, y: H / 2, "text-anchor": "middle", class: "axis"}, "no data in this window"));
    return root;
  }
  const t0 = Math.min(...series.map((s) => s.t)), t1 = Math.max(...series.map((s) => s.t), t0 + 1);
  const ymax = Math.max(1e-9, ...pts.flatMap((s) => keys.map((k) => Number(s[k] || 0)))) * 1.1;
  const x = (t) => L + (W - L - R) * (t - t0) / (t1 - t0 || 1);
  const y = (v) => T + (H - T - B) * (1 - v / ymax);
  for (let i = 0; i <= 4; i++) {
    const v = ymax * i / 4;
    root.appendChild(svg("line", {x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid"}));
    root.appendChild(svg("text", {x: L - 6, y: y(v) + 4, "text-anchor": "end", class: "axis"},
                         v >= 100 ? v.toFixed(0) : v.toFixed(v >= 10 ? 1 : 2)));
  }
  for (const [t, anchor] of [[t0, "start"], [(t0 + t1) / 2, "middle"], [t1, "end"]]) {
    root.appendChild(svg("text", {x: x(t), y: H - 8, "text-anchor": anchor, class: "axis"},
                         new Date(t * 1000).toLocaleTimeString([], {hour: "2-digit", minute: "2-digit"})));
  }
  keys.forEach((k, i) => {
    const p = pts.filter((s) => s[k] !== null && s[k] !== undefined);
    const d = p.map((s, j) => (j ? "L" : "M") + x(s.t).toFixed(1) + " " + y(Number(s[k])).toFixed(1)).join(" ");
    root.appendChild(svg("path", {d, class: "series", stroke: colors[i], fill: "none"}));
    for (const s of p) {
      const c = svg("circle", {cx: x(s.t), cy: y(Number(s[k])), r: 3, fill: colors[i]});
      c.appendChild(svg("title", {}, `${names[i]} ${Number(s[k]).toFixed(2)}${unit} at ${new Date(s.t * 1000).toLocaleTimeString()}`));
      root.appendChild(c);
    }
    root.appendChild(svg("text", {x: L + 8 + i * 120, y: T + 12, fill: colors[i], class: "legend"}, names[i]));
  });
  return root;
}

function hbars(counts, total, colorOf) {
  const box = el("div", {class: "bars"});
  const entries = Object.entries(counts).sort((a, b) => b[1] - a[1]);
  if (!entries.length) box.appendChild(el("p", {class: "muted"}, "nothing yet"));
  for (const [k, v] of entries) {
    const p = total ? v / total : 0;
    box.appendChild(el("div", {class: "bar", "data-label": k},
      el("span", {class: "name"}, k), el("div", {class: "track"},
        el("div", {class: "fill", style: {width: (100 * p).toFixed(1) + "%", background: colorOf(k)}})),
      el("span", {class: "val"}, `${v} · ${(100 * p).toFixed(1)}%`)));
  }
  return box;
}

async function showOverview() {
  state.timers.forEach(clearInterval);
  state.timers = [];
  const load = async () => {
    const win = $("ov-window").value;
    const o = await api("GET", "/v1/overview?window=" + encodeURIComponent(win) + "&points=60");
    $("ov-meta").textContent = `router ${o.router} · store ${o.store} · ${o.interval_s}s intervals · this server process since ${fmtTime(new Date(o.since * 1000).toISOString())}`;
    const cards = clear($("ov-cards"));
    const card = (name, value, id) => el("div", {class: "stat", id}, el("div", {class: "v"}, value), el("div", {class: "k"}, name));
    append(cards, [
      card("routings", String(o.routings), "ov-routings"),
      card("customer messages", String(o.turns), "ov-turns"),
      card("conversations", String(o.conversations), "ov-conversations"),
      card("clarification rate", pct(o.clarification_rate), "ov-clarify"),
      card("hand-off rate (per conversation)", pct(o.handoff_rate), "ov-handoff"),
      card("p50 routing latency", ms(o.latency_ms.p50), "ov-p50"),
      card("p95 routing latency", ms(o.latency_ms.p95), "ov-p95"),
      card("human replies · corrections", `${o.human_replies} · ${o.corrections}`, "ov-human"),
    ]);
    append(clear($("ov-mix")), [hbars(o.decisions, o.routings, (k) => COLORS[k] || "#555")]);
    append(clear($("ov-reasons")), [hbars(Object.fromEntries(Object.entries(o.handoff_reasons).map(
      ([k, v]) => [REASONS[k] || k, v])), o.handoffs, () => "#b5523b")]);
    append(clear($("ov-latency")), [lineChart(o.series, ["p50_ms", "p95_ms"], ["p50", "p95"], ["#2f6fb0", "#c0392b"], " ms")]);
    append(clear($("ov-traffic")), [lineChart(o.series, ["routings", "clarifications", "handoffs"],
      ["routings", "clarifications", "hand-offs"], ["#2a9d8f", "#d4a017", "#b5523b"], "")]);
  };
  await load();
  state.timers.push(setInterval(() => load().catch(() => {}), 15000));
}

// ------------------------------------------------------------------------------------------------ start
async function start() {
  const me = await api("GET", "/v1/session");
  state.me = me;
  $("who").textContent = me.name + (me.via === "session" ? "" : ` (${me.via})`);
  $("insecure").classList.toggle("hidden", me.auth !== false);
  const health = await fetch("/healthz").then((r) => r.json()).catch(() => ({}));
  state.labels = health.labels || [];
  $("pg-form").addEventListener("submit", playgroundSend);
  $("pg-text").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) $("pg-form").requestSubmit();
  });
  $("pg-new").addEventListener("click", playgroundNew);
  $("conv-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (location.hash !== "#/conversations") location.hash = "#/conversations";
    else showConversations().catch(failed);
  });
  $("ov-window").addEventListener("change", () => showOverview().catch(failed));
  $("ov-refresh").addEventListener("click", () => showOverview().catch(failed));
  $("logout").addEventListener("click", async () => {
    await fetch("/v1/session", {method: "DELETE", credentials: "same-origin", headers: CSRF}).catch(() => {});
    location.replace("/login");
  });
  window.addEventListener("hashchange", route);
  route();
  refreshQueueCount();
  setInterval(refreshQueueCount, 20000);
  document.body.dataset.ready = "1";
}

document.addEventListener("DOMContentLoaded", () => { start().catch(failed); });
