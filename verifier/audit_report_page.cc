// The report page's constant parts: its style sheet and its one script (audit_report.h).
// The script's SHA-256 is the page's only script-src: edit it freely, the hash follows.
#include <string>
#include <string_view>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "crypto/sha256.h"
#include "verifier/audit_report.h"

namespace bunker::verifier {
namespace {

// The script reads the entries from the JSON block #report-data and builds the events table,
// 100 rows a page, with textContent only: no entry text is ever parsed as HTML. It then checks
// its own counts against the summary's (#totals) and says so in #events's data attributes,
// which tests read from the rendered page. report.html#q=TEXT opens the table filtered.
constexpr std::string_view kScript = R"JS(
(function () {
  'use strict';
  var PAGE = 100;
  var data = JSON.parse(document.getElementById('report-data').textContent);
  var sites = data.sites, rows = data.events;
  var C = {index: 0, time: 1, site: 2, event: 3, decision: 4, capsule: 5, requester: 6,
           purpose: 7, paths: 8, rules: 9, reasons: 10, uses: 11, uid: 12};
  function $(id) { return document.getElementById(id); }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function fmt(n) { return Number(n).toLocaleString('en-US'); }
  function utc(t) {
    var d = new Date(t * 1000);
    if (isNaN(d.getTime())) return String(t);
    return d.toISOString().replace('.000Z', 'Z').replace('T', ' ');
  }
  function siteName(i) { var s = sites[i]; return s ? (s.name || s.log) : '?'; }
  var peerNames = {};
  sites.forEach(function (s) { if (s.fingerprint) peerNames[s.fingerprint] = s.name; });
  function who(r) {
    var t = r[C.requester];
    if (!t) return '-';
    return peerNames[t] ? t + ' (' + peerNames[t] + ')' : t;
  }
  function proveCommand(r) { return sites[r[C.site]].prove + r[C.index]; }

  var keys = null;
  function searchKey(r) {
    return [r[C.index], siteName(r[C.site]), r[C.event], r[C.decision], r[C.capsule], who(r),
            r[C.purpose], r[C.paths].join(' '), r[C.rules].join(' '),
            r[C.reasons].join(' ')].join('\u0000').toLowerCase();
  }

  var fText = $('f-text'), fDecision = $('f-decision'), fEvent = $('f-event'),
      fSite = $('f-site'), tbody = $('events-body');
  var events = {};
  rows.forEach(function (r) { events[r[C.event]] = true; });
  Object.keys(events).sort().forEach(function (e) { fEvent.appendChild(el('option', null, e)).value = e; });
  sites.forEach(function (s, i) { fSite.appendChild(el('option', null, siteName(i))).value = String(i); });
  if (sites.length < 2) fSite.parentNode.hidden = true;

  var shown = rows, page = 0, sortCol = null, sortDir = 1;
  function compare(a, b) {
    var x = a[sortCol], y = b[sortCol];
    if (sortCol === C.site) { x = siteName(x); y = siteName(y); }
    if (Array.isArray(x)) { x = x.join(' '); y = y.join(' '); }
    if (x === null) x = -1;
    if (y === null) y = -1;
    if (x < y) return -sortDir;
    if (x > y) return sortDir;
    return a[C.site] - b[C.site] || a[C.index] - b[C.index];
  }
  function apply() {
    var text = fText.value.trim().toLowerCase(), dec = fDecision.value, ev = fEvent.value,
        site = fSite.value;
    if (text && !keys) keys = rows.map(searchKey);
    shown = [];
    for (var i = 0; i < rows.length; i++) {
      var r = rows[i];
      if (dec && r[C.decision] !== dec) continue;
      if (ev && r[C.event] !== ev) continue;
      if (site !== '' && String(r[C.site]) !== site) continue;
      if (text && keys[i].indexOf(text) < 0) continue;
      shown.push(r);
    }
    if (sortCol !== null) shown.sort(compare);
    page = 0;
    render();
  }
  function cell(tr, text, cls) { return tr.appendChild(el('td', cls, text)); }
  function render() {
    while (tbody.firstChild) tbody.removeChild(tbody.firstChild);
    var pages = Math.max(1, Math.ceil(shown.length / PAGE));
    if (page >= pages) page = pages - 1;
    var start = page * PAGE, end = Math.min(shown.length, start + PAGE);
    for (var i = start; i < end; i++) {
      var r = shown[i], tr = el('tr');
      tr.setAttribute('data-site', siteName(r[C.site]));
      tr.setAttribute('data-index', r[C.index]);
      cell(tr, r[C.index], 'num');
      cell(tr, utc(r[C.time]), 'nowrap');
      cell(tr, siteName(r[C.site]), 'nowrap');
      cell(tr, r[C.event], 'nowrap');
      var d = cell(tr, '');
      d.appendChild(el('span', 'pill ' + r[C.decision], r[C.decision]));
      cell(tr, r[C.capsule] || '-', 'mono');
      cell(tr, who(r), 'wrap');
      cell(tr, r[C.purpose] || '-', 'wrap');
      cell(tr, r[C.paths].join(', ') || '-', 'wrap');
      cell(tr, r[C.reasons].join('; ') || '-', 'wrap');
      cell(tr, r[C.uses] ? (r[C.uses] > 0 ? '+' : '') + r[C.uses] : '', 'num');
      var p = cell(tr, '');
      var b = p.appendChild(el('button', 'prove', 'prove'));
      b.type = 'button';
      b.title = proveCommand(r);
      b.setAttribute('data-row', String(i));
      tbody.appendChild(tr);
    }
    $('page-info').textContent = shown.length
        ? 'Entries ' + fmt(start + 1) + '\u2013' + fmt(end) + ' of ' + fmt(shown.length) +
          (shown.length !== rows.length ? ' (filtered from ' + fmt(rows.length) + ')' : '') +
          ' \u00b7 page ' + fmt(page + 1) + ' of ' + fmt(pages)
        : 'No entry matches the filters.';
    $('first').disabled = $('prev').disabled = page === 0;
    $('next').disabled = $('last').disabled = page >= pages - 1;
    var ths = document.querySelectorAll('#events-table th[data-col]');
    for (var k = 0; k < ths.length; k++) {
      var c = Number(ths[k].getAttribute('data-col'));
      ths[k].setAttribute('aria-sort', c === sortCol ? (sortDir > 0 ? 'ascending' : 'descending') : 'none');
    }
  }

  var timer = null;
  fText.addEventListener('input', function () { clearTimeout(timer); timer = setTimeout(apply, 150); });
  [fDecision, fEvent, fSite].forEach(function (s) { s.addEventListener('change', apply); });
  $('first').addEventListener('click', function () { page = 0; render(); });
  $('prev').addEventListener('click', function () { page--; render(); });
  $('next').addEventListener('click', function () { page++; render(); });
  $('last').addEventListener('click', function () { page = 1e12; render(); });
  $('events-table').querySelector('thead').addEventListener('click', function (e) {
    var th = e.target.closest('th[data-col]');
    if (!th) return;
    var c = Number(th.getAttribute('data-col'));
    if (sortCol === c) sortDir = -sortDir; else { sortCol = c; sortDir = 1; }
    shown.sort(compare);
    page = 0;
    render();
  });
  tbody.addEventListener('click', function (e) {
    var b = e.target.closest('button.prove');
    if (!b) return;
    var cmd = $('proof-cmd');
    cmd.textContent = b.title;
    $('proof').hidden = false;
    var range = document.createRange();
    range.selectNodeContents(cmd);
    var sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
    try { if (navigator.clipboard) navigator.clipboard.writeText(b.title).catch(function () {}); } catch (err) {}
  });
  document.addEventListener('click', function (e) {
    var a = e.target.closest('[data-filter]');
    if (!a) return;
    e.preventDefault();
    fText.value = a.getAttribute('data-filter');
    fDecision.value = fEvent.value = fSite.value = '';
    apply();
    $('events').scrollIntoView();
  });

  // The table's own counts against the summary's.
  var count = {total: rows.length, permit: 0, deny: 0, failed: 0};
  rows.forEach(function (r) { if (count[r[C.decision]] !== undefined) count[r[C.decision]]++; });
  var totals = $('totals'), ok = true;
  ['total', 'permit', 'deny', 'failed'].forEach(function (k) {
    if (String(count[k]) !== totals.getAttribute('data-' + k)) ok = false;
  });
  var box = $('events');
  box.setAttribute('data-rows', String(rows.length));
  box.setAttribute('data-check', ok ? 'ok' : 'mismatch');
  $('table-check').textContent = ok
      ? 'The table holds all ' + fmt(rows.length) + ' entries; its counts agree with the summary.'
      : 'The table\u2019s counts do NOT agree with the summary: regenerate the report.';
  $('table-check').className = ok ? 'check ok' : 'check bad';
  $('controls').hidden = false;
  // report.html#q=TEXT opens the table filtered by TEXT (a link an auditor can send).
  var q = /^#q=(.*)$/.exec(location.hash);
  if (q) { try { fText.value = decodeURIComponent(q[1]); } catch (err) {} }
  apply();
  box.setAttribute('data-ready', '1');
})();
)JS";

constexpr std::string_view kStyle = R"CSS(
:root{--fg:#1f2933;--muted:#616e7c;--line:#dde3ea;--bg:#f3f5f8;--card:#fff;--accent:#1f3a5f;
--ok:#1c6e47;--okbg:#e2f3e9;--deny:#b83227;--denybg:#fbe9e7;--permit:#2f9e66;--warn:#8a5a00;
--warnbg:#fff4d6}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;background:var(--bg);color:var(--fg);
font:14px/1.45 "DejaVu Sans",system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif}
header.top{background:var(--accent);color:#fff;padding:18px 32px}
header.top h1{margin:0;font-size:21px;font-weight:600;letter-spacing:.01em}
header.top p{margin:4px 0 0;color:#c9d6e6;font-size:13px}
main{max-width:1400px;margin:0 auto;padding:18px 32px 40px}
section.card{background:var(--card);border:1px solid var(--line);border-radius:8px;
padding:16px 20px;margin:0 0 16px;box-shadow:0 1px 2px rgba(16,24,40,.04)}
h2{font-size:16px;margin:0 0 10px;color:var(--accent)}
h2 small,.muted{color:var(--muted);font-weight:400;font-size:13px}
h3{font-size:14px;margin:0;font-weight:600}
p{margin:6px 0}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{font-size:11.5px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted);
font-weight:600;white-space:nowrap}
tbody tr:hover{background:#f7f9fc}
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.nowrap{white-space:nowrap}
.wrap{overflow-wrap:anywhere;max-width:300px}
td.mono{min-width:150px}
code,.mono{font-family:"DejaVu Sans Mono",ui-monospace,Menlo,Consolas,monospace;font-size:12px;
overflow-wrap:anywhere}
.banner{display:flex;align-items:center;gap:12px;padding:10px 14px;border-radius:6px;
font-weight:600;margin-bottom:12px}
.banner.ok{background:var(--okbg);color:var(--ok)}
.banner.warn{background:var(--warnbg);color:var(--warn)}
.banner .mark{font-size:20px;line-height:1}
.pill{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;
background:#eef2f6;color:var(--muted)}
.pill.permit{background:var(--okbg);color:var(--ok)}
.pill.deny{background:var(--denybg);color:var(--deny)}
.pill.failed{background:var(--warnbg);color:var(--warn)}
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(140px,1fr));gap:10px;margin:0}
.tile{border:1px solid var(--line);border-radius:6px;padding:8px 12px;margin:0}
.tile dt{color:var(--muted);font-size:11.5px;text-transform:uppercase;letter-spacing:.04em}
.tile dd{margin:2px 0 0;font-size:22px;font-weight:600;font-variant-numeric:tabular-nums}
.tile.permit dd{color:var(--ok)} .tile.deny dd{color:var(--deny)} .tile.failed dd{color:var(--warn)}
.grid2{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:16px}
@media (max-width:1000px){.grid2{grid-template-columns:minmax(0,1fr)}}
.grid2>section.card{margin:0 0 16px}
svg.timeline{width:100%;height:auto;display:block}
svg text{font-family:"DejaVu Sans",system-ui,sans-serif;font-size:11px;fill:#616e7c}
.legend{display:flex;gap:16px;font-size:12px;color:var(--muted);margin-top:4px}
.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:5px;
vertical-align:-1px}
.bar{height:8px;min-width:80px;background:#eef2f6;border-radius:4px;overflow:hidden}
.bar span{display:block;height:100%;background:var(--deny)}
.bar.uses span{background:var(--accent)}
.bar.full span{background:var(--deny)}
ol.journey{display:flex;flex-wrap:wrap;align-items:center;gap:6px;list-style:none;padding:0;
margin:6px 0 12px}
ol.journey li.step{border:1px solid var(--line);border-radius:6px;padding:5px 10px;
background:#fafbfd;font-size:13px}
ol.journey li.step b{color:var(--accent)}
ol.journey li.step.warn{border-color:#e6c46a;background:var(--warnbg)}
ol.journey li.arrow{color:var(--muted);font-size:16px}
.capsule{border-top:1px solid var(--line);padding:12px 0 6px}
.capsule:first-of-type{border-top:0;padding-top:0}
.capsule header{display:flex;flex-wrap:wrap;align-items:baseline;gap:10px;margin-bottom:6px}
.capsule table{margin:4px 0 6px}
details summary{cursor:pointer;color:var(--muted);font-size:13px;margin:4px 0}
ul.history{list-style:none;margin:4px 0;padding:0;font-size:13px}
ul.history li{padding:2px 0;border-bottom:1px dashed #e6ebf1}
ul.history .t{color:var(--muted);font-variant-numeric:tabular-nums;margin-right:8px}
.controls{display:flex;flex-wrap:wrap;align-items:center;gap:10px;margin-bottom:10px}
.controls label{font-size:12px;color:var(--muted)}
input,select,button{font:inherit;font-size:13px}
input[type=search]{min-width:280px;padding:4px 8px;border:1px solid #c5ced8;border-radius:5px}
select{padding:3px 6px;border:1px solid #c5ced8;border-radius:5px;background:#fff}
button{border:1px solid #c5ced8;background:#fff;border-radius:5px;padding:2px 10px;
cursor:pointer;color:var(--fg)}
button:hover:not(:disabled){background:#eef3f9}
button:disabled{opacity:.45;cursor:default}
button.link{border:0;padding:0;background:none;color:#2563a8;cursor:pointer;font-size:12px}
#events-table th[data-col]{cursor:pointer}
#events-table th[aria-sort=ascending]::after{content:" \25B2"}
#events-table th[aria-sort=descending]::after{content:" \25BC"}
#events-table td{font-size:12.5px}
.pager{display:flex;align-items:center;gap:8px;margin-top:10px;font-size:13px}
#proof{margin-top:10px;padding:8px 12px;background:#f6f8fa;border:1px solid var(--line);
border-radius:6px}
#proof code{display:block;margin-top:4px;user-select:all}
.check{font-size:13px;margin:6px 0 0}
.check.ok{color:var(--ok)} .check.bad{color:var(--deny);font-weight:600}
footer{color:var(--muted);font-size:12px;margin-top:8px}
)CSS";

}  // namespace

std::string_view ReportScript() { return kScript; }
std::string_view ReportStyle() { return kStyle; }

std::string ReportContentSecurityPolicy() {
  const crypto::Sha256Digest h = crypto::Sha256::Hash(kScript);
  const std::string hash = absl::Base64Escape(
      absl::string_view(reinterpret_cast<const char*>(h.data()), h.size()));
  return absl::StrCat("default-src 'none'; script-src 'sha256-", hash,
                      "'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
                      "form-action 'none'");
}

}  // namespace bunker::verifier
