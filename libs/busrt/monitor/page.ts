// The live web monitor: one hand-written page, no framework and nothing fetched from elsewhere,
// so it works on a machine without internet and ships inside the package as this string. Its
// links are relative, so it works under any prefix a host app mounts it on.

/** The monitor page served at `/`. */
export const MONITOR_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>busrt monitor</title>
<style>
:root { --bg: #f6f7f9; --fg: #1d2330; --muted: #6b7385; --line: #dfe3ea; --in: #2f6fde; --out: #d9822b; --card: #fff; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; background: var(--bg); color: var(--fg); }
header { display: flex; align-items: baseline; gap: 24px; padding: 12px 20px; background: #1d2330; color: #fff; flex-wrap: wrap; }
header h1 { font-size: 18px; margin: 0; font-weight: 600; }
header .kv { color: #c9cfdb; } header .kv b { color: #fff; font-weight: 600; }
main { padding: 16px 20px; display: grid; gap: 16px; grid-template-columns: 1fr 1fr; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: 12px 14px; min-width: 0; }
section.wide { grid-column: 1 / -1; }
h2 { font-size: 14px; margin: 0 0 8px; font-weight: 600; display: flex; gap: 12px; align-items: center; }
h2 .legend { font-weight: 400; color: var(--muted); font-size: 12px; }
.sw { display: inline-block; width: 10px; height: 3px; vertical-align: middle; margin-right: 4px; }
canvas { width: 100%; height: 160px; display: block; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line); white-space: nowrap; }
th { color: var(--muted); font-weight: 500; font-size: 12px; }
td.n, th.n { text-align: right; }
tbody tr:hover { background: #f0f4fb; }
input, select, button { font: inherit; padding: 4px 8px; border: 1px solid var(--line); border-radius: 4px; background: #fff; }
button { cursor: pointer; } button.on { background: #1d2330; color: #fff; }
.controls { display: flex; gap: 8px; align-items: center; margin-bottom: 8px; flex-wrap: wrap; }
#tail { font: 12px/1.45 ui-monospace, "SFMono-Regular", Menlo, monospace; max-height: 360px; overflow: auto; }
#tail .ev { border-bottom: 1px solid var(--line); padding: 4px 0; }
#tail .meta { color: var(--muted); } #tail .topic { color: var(--in); font-weight: 600; }
#tail pre { margin: 2px 0 0; white-space: pre-wrap; word-break: break-all; }
.muted { color: var(--muted); } .err { color: #b3261e; }
@media (max-width: 900px) { main { grid-template-columns: 1fr; } }
</style>
</head>
<body>
<header>
  <h1>busrt monitor</h1>
  <span class="kv">version <b id="version">-</b></span>
  <span class="kv">uptime <b id="uptime">-</b></span>
  <span class="kv">clients <b id="nclients">-</b></span>
  <span class="kv">connections <b id="nconn">-</b></span>
  <span class="kv">subscriptions <b id="nsubs">-</b></span>
  <span class="kv">in <b id="rin">-</b> frames/s</span>
  <span class="kv">out <b id="rout">-</b> frames/s</span>
  <span class="kv err" id="status"></span>
</header>
<main>
  <section>
    <h2>Frames per second <span class="legend"><span class="sw" style="background:var(--in)"></span>in
      <span class="sw" style="background:var(--out)"></span>out</span></h2>
    <canvas id="frames" width="600" height="160"></canvas>
  </section>
  <section>
    <h2>Bytes per second <span class="legend"><span class="sw" style="background:var(--in)"></span>in
      <span class="sw" style="background:var(--out)"></span>out</span></h2>
    <canvas id="bytes" width="600" height="160"></canvas>
  </section>
  <section class="wide">
    <h2>Clients <span class="legend" id="ctotal"></span></h2>
    <div class="controls"><input id="cfilter" placeholder="filter by name" size="28"></div>
    <table>
      <thead><tr><th>name</th><th>kind</th><th>source</th><th>listener</th><th class="n">in/s</th>
        <th class="n">out/s</th><th class="n">in B/s</th><th class="n">out B/s</th><th class="n">queue</th>
        <th class="n">queue max</th><th class="n">subs</th></tr></thead>
      <tbody id="clients"></tbody>
    </table>
  </section>
  <section class="wide">
    <h2>Topic tail <span class="legend" id="tailstate">stopped</span></h2>
    <div class="controls">
      <input id="mask" value="#" size="32" aria-label="topic mask">
      <button id="start">Start</button>
      <button id="pause" disabled>Pause</button>
      <select id="format" aria-label="payload format">
        <option value="auto">auto</option><option value="text">text</option><option value="json">JSON</option>
        <option value="msgpack">MessagePack</option><option value="hex">hex</option>
      </select>
      <button id="clear">Clear</button>
    </div>
    <div id="tail"></div>
  </section>
</main>
<script>
"use strict";
(function () {
  var token = new URLSearchParams(location.search).get("token");
  var headers = token ? { Authorization: "Bearer " + token } : {};
  var $ = function (id) { return document.getElementById(id); };
  var fmt = function (n) {
    if (n >= 1e9) return (n / 1e9).toFixed(1) + "G";
    if (n >= 1e6) return (n / 1e6).toFixed(1) + "M";
    if (n >= 1e4) return (n / 1e3).toFixed(1) + "k";
    return n >= 100 || n === 0 ? String(Math.round(n)) : n.toFixed(1);
  };
  var dur = function (s) {
    var d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
    return (d ? d + "d " : "") + (d || h ? h + "h " : "") + m + "m " + (s % 60) + "s";
  };
  var status = function (text) { $("status").textContent = text; };
  var get = function (path) {
    return fetch(path, { headers: headers, cache: "no-store" }).then(function (r) {
      if (!r.ok) throw new Error(path + ": HTTP " + r.status);
      return r.json();
    });
  };

  function chart(canvas, t, a, b) {
    var dpr = window.devicePixelRatio || 1, w = canvas.clientWidth, h = canvas.clientHeight;
    if (canvas.width !== w * dpr) { canvas.width = w * dpr; canvas.height = h * dpr; }
    var g = canvas.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    var max = 1;
    for (var i = 0; i < a.length; i++) max = Math.max(max, a[i], b[i]);
    var left = 44, top = 6, bottom = h - 18, now = t.length ? t[t.length - 1] : Date.now();
    // The span grows with the history, from one minute to all of it, in whole minutes.
    var minutes = Math.min(10, Math.max(1, Math.ceil((now - (t.length ? t[0] : now)) / 60000)));
    var span = minutes * 60000;
    g.strokeStyle = "#dfe3ea"; g.fillStyle = "#6b7385"; g.font = "11px system-ui, sans-serif"; g.lineWidth = 1;
    for (var k = 0; k <= 4; k++) {
      var y = bottom - ((bottom - top) * k) / 4;
      g.beginPath(); g.moveTo(left, y); g.lineTo(w, y); g.stroke();
      g.fillText(fmt((max * k) / 4), 2, y + 4);
    }
    for (var q = 0; q <= 4; q++) {
      var secs = (span / 1000) * q / 4;
      var label = q === 0 ? "now" : secs < 120 ? "-" + secs + "s" : "-" + secs / 60 + "m";
      g.fillText(label, w - ((w - left) * q) / 4 - (q === 0 ? 24 : 12), h - 4);
    }
    [[a, "#2f6fde"], [b, "#d9822b"]].forEach(function (s) {
      g.strokeStyle = s[1]; g.lineWidth = 1.6; g.beginPath();
      for (var j = 0; j < t.length; j++) {
        var x = w - ((w - left) * (now - t[j])) / span, yy = bottom - ((bottom - top) * s[0][j]) / max;
        if (j === 0) g.moveTo(x, yy); else g.lineTo(x, yy);
      }
      g.stroke();
    });
  }

  function cell(tr, text, num) {
    var td = document.createElement("td");
    td.textContent = text;
    if (num) td.className = "n";
    tr.appendChild(td);
  }

  function refresh() {
    get("stats").then(function (s) {
      $("version").textContent = s.version; $("uptime").textContent = dur(s.uptime);
      $("nclients").textContent = s.clients; $("nconn").textContent = s.connections;
      $("nsubs").textContent = s.subscriptions;
      var h = s.history, n = h.t.length;
      $("rin").textContent = n ? fmt(h.fin[n - 1]) : "0"; $("rout").textContent = n ? fmt(h.fout[n - 1]) : "0";
      chart($("frames"), h.t, h.fin, h.fout); chart($("bytes"), h.t, h.bin, h.bout);
      status("");
    }).catch(function (e) { status(e.message); });
    get("clients?limit=200").then(function (c) {
      var f = $("cfilter").value, body = document.createDocumentFragment(), shown = 0;
      c.clients.forEach(function (x) {
        if (f && x.name.indexOf(f) < 0) return;
        var tr = document.createElement("tr");
        tr.dataset.name = x.name;
        cell(tr, x.name); cell(tr, x.kind); cell(tr, x.source || ""); cell(tr, x.listener);
        cell(tr, fmt(x.rate_in), 1); cell(tr, fmt(x.rate_out), 1); cell(tr, fmt(x.bytes_in_rate), 1);
        cell(tr, fmt(x.bytes_out_rate), 1); cell(tr, String(x.queue), 1); cell(tr, String(x.queue_hwm), 1);
        cell(tr, String(x.subscriptions), 1);
        body.appendChild(tr); shown++;
      });
      $("clients").replaceChildren(body);
      $("ctotal").textContent = shown + " shown of " + c.total + ", busiest first";
    }).catch(function (e) { status(e.message); });
  }
  refresh();
  setInterval(refresh, 1000);
  $("cfilter").addEventListener("input", refresh);

  // Topic tail.
  var source = null, paused = false, unseen = 0;
  function bytesOf(b64) {
    var s = atob(b64), u = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) u[i] = s.charCodeAt(i);
    return u;
  }
  function show(ev, mode) {
    var u = bytesOf(ev.data), text = null;
    try { text = new TextDecoder("utf-8", { fatal: true }).decode(u); } catch (e) { text = null; }
    var hex = function () { return Array.prototype.map.call(u, function (x) { return (x < 16 ? "0" : "") + x.toString(16); }).join(" "); };
    var json = function () { try { return JSON.stringify(JSON.parse(text)); } catch (e) { return null; } };
    if (mode === "hex") return ["hex", hex()];
    if (mode === "msgpack") return ev.msgpack !== undefined ? ["msgpack", JSON.stringify(ev.msgpack)] : ["hex", hex()];
    if (mode === "text") return text !== null ? ["text", text] : ["hex", hex()];
    if (mode === "json") { var j = text !== null ? json() : null; return j !== null ? ["json", j] : ["hex", hex()]; }
    if (text !== null) { var jj = json(); if (jj !== null) return ["json", jj]; }
    if (ev.msgpack !== undefined) return ["msgpack", JSON.stringify(ev.msgpack)];
    return text !== null ? ["text", text] : ["hex", hex()];
  }
  function add(ev) {
    if (paused) {
      unseen++;
      $("tailstate").textContent = "paused, " + unseen + " not shown";
      return;
    }
    var box = $("tail"), div = document.createElement("div"), meta = document.createElement("div");
    div.className = "ev"; div.dataset.topic = ev.topic;
    meta.className = "meta";
    var topic = document.createElement("span"); topic.className = "topic"; topic.textContent = ev.topic;
    meta.appendChild(document.createTextNode(new Date(ev.time).toLocaleTimeString() + "  "));
    meta.appendChild(topic);
    var shown = show(ev, $("format").value);
    meta.appendChild(document.createTextNode("  from " + ev.sender + "  " + ev.size + " B  " + shown[0] +
      (ev.truncated ? " (first 4 KiB)" : "") + (ev.skipped ? "  (" + ev.skipped + " skipped)" : "")));
    var pre = document.createElement("pre"); pre.textContent = shown[1];
    div.appendChild(meta); div.appendChild(pre);
    box.insertBefore(div, box.firstChild);
    while (box.childNodes.length > 300) box.removeChild(box.lastChild);
  }
  function stop() {
    if (source) source.close();
    source = null; $("start").textContent = "Start"; $("start").classList.remove("on");
    $("pause").disabled = true; $("tailstate").textContent = "stopped";
  }
  $("start").addEventListener("click", function () {
    if (source) { stop(); return; }
    var mask = $("mask").value;
    var url = "tail?mask=" + encodeURIComponent(mask) + (token ? "&token=" + encodeURIComponent(token) : "");
    source = new EventSource(url);
    $("start").textContent = "Stop"; $("start").classList.add("on"); $("pause").disabled = false;
    $("tailstate").textContent = "connecting";
    source.addEventListener("ready", function () { $("tailstate").textContent = "watching " + mask; });
    source.onmessage = function (m) { add(JSON.parse(m.data)); };
    source.onerror = function () {
      stop();
      $("tailstate").textContent = "the tail was refused or ended";
    };
  });
  $("pause").addEventListener("click", function () {
    paused = !paused;
    unseen = 0;
    $("pause").textContent = paused ? "Resume" : "Pause"; $("pause").classList.toggle("on", paused);
    $("tailstate").textContent = paused ? "paused" : "watching " + $("mask").value;
  });
  $("clear").addEventListener("click", function () { $("tail").replaceChildren(); });
})();
</script>
</body>
</html>
`;
