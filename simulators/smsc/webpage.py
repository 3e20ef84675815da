"""The web handset: one page over the control API for testers working by hand.

Type an SMS, dial or answer USSD, watch the inbox and the SMPP traffic,
switch faults. Everything it shows comes from the JSON API
(simulators.smsc.http); text is inserted with textContent, never as HTML.
"""
from __future__ import annotations

HANDSET_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>SMSC simulator: handset</title>
<style>
body{font-family:system-ui,sans-serif;margin:1rem;max-width:70rem}
section{border:1px solid #ccc;border-radius:6px;padding:.6rem;margin:.5rem 0}
h2{font-size:1rem;margin:.2rem 0 .5rem}
.msg{border-bottom:1px solid #eee;padding:.2rem 0;white-space:pre-wrap}
.meta{color:#777;font-size:.8rem}
table{border-collapse:collapse;font-size:.8rem;width:100%}td,th{border-bottom:1px solid #eee;padding:2px 4px;text-align:left}
#error{color:#b00}
.pad{display:grid;grid-template-columns:repeat(3,3rem);gap:.3rem;margin-top:.4rem}.pad button{height:2.2rem}
</style></head><body>
<h1>SMSC simulator</h1>
<p>Handset <input id="msisdn" value="8613800138000" size="16"> <span id="error"></span></p>
<section><h2>SMS</h2>
<textarea id="sms" rows="3" cols="60" placeholder="YE, KT, ZF M001 5 ..."></textarea><br>
<button id="send">Send SMS</button></section>
<section><h2>Inbox</h2><div id="inbox"></div></section>
<section><h2>USSD</h2>
<div id="ussd"></div>
<input id="ussdtext" placeholder="*188# or a menu choice"> <button id="ussdsend">Send</button>
<button id="ussdend">End</button>
<div id="pad" class="pad"></div></section>
<section><h2>Call the IVR</h2>
<input id="callkeys" size="40" placeholder="keys, one entry per prompt: 1,4,1,12#,147258#"> <button id="call">Call</button>
<div id="callpad" class="pad"></div>
<div id="heard"></div></section>
<section><h2>Faults</h2>
<select id="kind"><option>throttle</option><option>drop</option><option>delay</option><option>duplicate</option>
<option>refuse_bind</option><option>refuse_push</option><option>ussd_timeout</option><option>close</option><option>unbind</option></select>
count <input id="count" size="3"> duration s <input id="duration" size="4"> delay s <input id="seconds" size="4">
<button id="addfault">Switch on</button> <button id="clearfaults">Clear all</button>
<div id="faults"></div></section>
<section><h2>Binds</h2><div id="binds"></div></section>
<section><h2>Traffic</h2><table><thead><tr><th>time</th><th>dir</th><th>bind</th><th>command</th><th>seq</th>
<th>status</th><th>text</th><th>note</th></tr></thead><tbody id="traffic"></tbody></table></section>
<script>
const $ = (id) => document.getElementById(id);
const who = () => encodeURIComponent($("msisdn").value.trim());
function el(tag, text, cls) { const e = document.createElement(tag); e.textContent = text; if (cls) e.className = cls; return e; }
async function api(method, path, body) {
  const r = await fetch(path, {method, headers: {"content-type": "application/json"},
                               body: body === undefined ? undefined : JSON.stringify(body)});
  const data = await r.json().catch(() => ({}));
  $("error").textContent = r.ok || r.status === 202 ? "" : (data.error || ("HTTP " + r.status));
  return data;
}
async function refresh() {
  const inbox = await fetch(`/handsets/${who()}/inbox`).then(r => r.ok ? r.json() : {inbox: []});
  $("inbox").replaceChildren(...inbox.inbox.slice().reverse().map(m => {
    const d = el("div", m.text, "msg");
    d.append(el("div", `${new Date(m.received_at * 1000).toLocaleTimeString()} from ${m.source_addr}, ` +
                      `${m.parts.length} part(s), data_coding ${m.data_coding}`, "meta"));
    return d; }));
  const ussd = await fetch(`/handsets/${who()}/ussd`).then(r => r.ok ? r.json() : {screens: []});
  $("ussd").replaceChildren(...ussd.screens.slice(-5).map(s => el("div", s.text +
    (s.ended ? `  [session ${s.reason === "timeout" ? "timed out" : s.reason === "released" ? "released by the network" : "ended"}]` : ""), "msg")));
  const faults = await api("GET", "/faults");
  $("faults").replaceChildren(...faults.faults.map(f => el("div", JSON.stringify(f), "meta")));
  const binds = await api("GET", "/binds");
  $("binds").replaceChildren(...binds.binds.map(b => el("div", `${b.bind_id} ${b.system_id || ""} ${b.mode || ""} ${b.state} ${b.peer}`, "meta")));
  const traffic = await api("GET", "/traffic?limit=40");
  $("traffic").replaceChildren(...traffic.records.slice().reverse().map(r => {
    const tr = document.createElement("tr");
    for (const v of [new Date(r.time * 1000).toLocaleTimeString(), r.direction, r.bind_id, r.command, r.sequence,
                     "0x" + r.status.toString(16), r.text || "", r.note || ""]) tr.append(el("td", String(v)));
    return tr; }));
}
$("send").onclick = async () => { await api("POST", `/handsets/${who()}/mo`, {text: $("sms").value, wait: 5}); $("sms").value = ""; refresh(); };
$("ussdsend").onclick = async () => { await api("POST", `/handsets/${who()}/ussd`, {text: $("ussdtext").value, wait: 10}); $("ussdtext").value = ""; refresh(); };
for (const key of ["1", "2", "3", "4", "5", "6", "7", "8", "9", "*", "0", "#"]) {
  const b = el("button", key); b.onclick = () => { $("ussdtext").value += key; }; $("pad").append(b);
}
for (const key of ["1", "2", "3", "4", "5", "6", "7", "8", "9", "*", "0", "#", ","]) {
  const b = el("button", key === "," ? "next" : key);
  b.onclick = () => { $("callkeys").value += key; }; $("callpad").append(b);
}
$("call").onclick = async () => {
  $("heard").replaceChildren(el("div", "calling...", "meta"));
  const r = await api("POST", `/handsets/${who()}/call`, {keys: $("callkeys").value, wait: 120});
  if (!r || !r.log) return;
  // what was heard between two key entries reads as one line, as on the phone
  const lines = [];
  for (const [kind, text] of r.log) {
    if (kind === "pressed") lines.push(el("div", "> " + text, "meta"));
    else if (lines.length && lines[lines.length - 1].className === "msg") lines[lines.length - 1].textContent += " " + text;
    else lines.push(el("div", text, "msg"));
  }
  $("heard").replaceChildren(...lines, el("div", `call ended (${r.hung_up_by || "?"} hung up)`, "meta"));
};
$("ussdend").onclick = async () => { await api("POST", `/handsets/${who()}/ussd/hangup`, {}); $("ussdtext").value = ""; refresh(); };
$("addfault").onclick = async () => {
  const body = {kind: $("kind").value};
  for (const k of ["count", "duration", "seconds"]) if ($(k).value) body[k] = Number($(k).value);
  await api("POST", "/faults", body); refresh(); };
$("clearfaults").onclick = async () => { await api("DELETE", "/faults"); refresh(); };
refresh(); setInterval(refresh, 2000);
</script></body></html>
"""
