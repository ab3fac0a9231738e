#!/usr/bin/env python3
"""Checks a report page as a browser rendered it (chromium --dump-dom) against the entries
`capsule audit show --json` printed for each site, and that nothing planted in the log ran.

Usage: check_report_dom.py DOM.html SITE=SHOW.jsonl... [--planted TEXT]... [--max-opens N]
                           [--witnessed SITE]...
Exits 1 naming every difference.
"""
import argparse
import collections
import json
import sys
from html.parser import HTMLParser

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}


class Node:
    def __init__(self, tag, attrs, parent):
        self.tag, self.attrs, self.parent, self.children = tag, dict(attrs), parent, []

    def text(self):
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def walk(self):
        for c in self.children:
            if isinstance(c, Node):
                yield c
                yield from c.walk()

    def find_all(self, tag=None, **attrs):
        for n in self.walk():
            if tag and n.tag != tag:
                continue
            if all(n.attrs.get(k.replace("_", "-")) == v if v is not True
                   else k.replace("_", "-") in n.attrs for k, v in attrs.items()):
                yield n

    def find(self, tag=None, **attrs):
        return next(self.find_all(tag, **attrs), None)

    def has_class(self, cls):
        return cls in (self.attrs.get("class") or "").split()


class TreeBuilder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {}, None)
        self.cur = self.root

    def handle_starttag(self, tag, attrs):
        n = Node(tag, attrs, self.cur)
        self.cur.children.append(n)
        if tag not in VOID:
            self.cur = n

    def handle_startendtag(self, tag, attrs):
        self.cur.children.append(Node(tag, attrs, self.cur))

    def handle_endtag(self, tag):
        n = self.cur
        while n is not None and n.tag != tag:
            n = n.parent
        if n is not None and n.parent is not None:
            self.cur = n.parent

    def handle_data(self, data):
        self.cur.children.append(data)


def kind_of(e):  # verifier::ReportKindOf
    if e["event"] == "open":
        return {"permit": "opened", "deny": "denied"}.get(e["decision"], "open-" + e["decision"])
    return e["event"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dom")
    ap.add_argument("logs", nargs="+", help="SITE=SHOW.jsonl")
    ap.add_argument("--planted", action="append", default=[])
    ap.add_argument("--max-opens", type=int)
    ap.add_argument("--witnessed", action="append", default=[])
    args = ap.parse_args()

    errors = []

    def expect(cond, what):
        if not cond:
            errors.append(what)

    logs = {}
    for spec in args.logs:
        site, path = spec.split("=", 1)
        with open(path, encoding="utf-8") as f:
            logs[site] = [json.loads(line) for line in f if line.strip()]
    entries = [(site, e) for site, es in logs.items() for e in es]

    b = TreeBuilder()
    with open(args.dom, encoding="utf-8") as f:
        b.feed(f.read())
    dom = b.root

    # Nothing planted ran, and nothing loads or runs but the page's own script.
    title = dom.find("title")
    expect(title is not None and title.text().startswith("Audit report: ") and
           set(title.text()[len("Audit report: "):].split(", ")) == set(logs),
           f"title is {title.text() if title else None!r}")
    body = dom.find("body")
    expect(body is not None and "data-pwned" not in body.attrs, "a planted handler ran")
    expect(len(list(dom.find_all("script"))) == 2, "the page has other than its 2 scripts")
    for tag in ("img", "iframe", "object", "embed", "link"):
        expect(dom.find(tag) is None, f"the page has an <{tag}> element")
    expect(all(not k.startswith("on") for n in dom.walk() for k in n.attrs),
           "an element has an event handler attribute")
    svgs = list(dom.find_all("svg"))
    expect(len(svgs) == 1 and svgs[0].has_class("timeline"), "an <svg> other than the timeline")
    # Each planted text is shown as text: in the requesters table and in the events table.
    purposes = [n.text() for n in dom.find_all("td") if n.has_class("purpose")]
    cells = [n.text() for n in dom.find(id="events-body").find_all("td")]
    for p in args.planted:
        expect(p in purposes, f"planted purpose {p!r} is not shown as text in the requesters")
        expect(p in cells, f"planted purpose {p!r} is not shown as text in the events table")

    # The script ran over every entry and agrees with the summary.
    ev = dom.find(id="events")
    expect(ev.attrs.get("data-ready") == "1", "the page's script did not finish")
    expect(ev.attrs.get("data-check") == "ok", "the table's counts disagree with the summary")
    expect(ev.attrs.get("data-rows") == str(len(entries)),
           f"table rows {ev.attrs.get('data-rows')} != {len(entries)} entries")
    rows = {(tr.attrs.get("data-site"), int(tr.attrs["data-index"]))
            for tr in dom.find(id="events-body").find_all("tr")}
    want_rows = {(s, e["index"]) for s, e in entries[:100]} if len(entries) <= 100 else None
    if want_rows is not None:
        expect(rows == want_rows, f"events table rows {sorted(rows)} != {sorted(want_rows)}")

    # Totals.
    t = dom.find(id="totals")
    dec = collections.Counter(e["decision"] for _, e in entries)
    for k, v in (("total", len(entries)), ("permit", dec["permit"]), ("deny", dec["deny"]),
                 ("failed", dec["failed"])):
        expect(t.attrs.get("data-" + k) == str(v), f"{k}: page {t.attrs.get('data-' + k)} != {v}")
    by_event = collections.Counter(e["event"] for _, e in entries)
    got = {tr.attrs["data-event"]: int(tr.attrs["data-count"])
           for tr in dom.find(id="by-event").find_all("tr", data_event=True)}
    expect(got == dict(by_event), f"events {got} != {dict(by_event)}")

    # Verification, per site.
    for site, es in logs.items():
        tr = dom.find(id="verdict").find("tr", data_site=site)
        expect(tr is not None and tr.attrs.get("data-entries") == str(len(es)),
               f"verdict for {site}: {tr.attrs if tr else None}")
        if tr is not None:
            w = tr.find("td", data_witness=True).attrs["data-witness"]
            want = "consistent" if site in args.witnessed else "unknown"
            expect(w == want, f"witness status of {site}: {w} != {want}")

    # Denials by reason.
    reasons = collections.Counter()
    for _, e in entries:
        if e["decision"] == "deny":
            for r in set(e["reasons"]) or {""}:
                reasons[r] += 1
    got = {}
    for tr in dom.find(id="denials").find_all("tr"):
        if tr.has_class("reason"):
            text = tr.find("td").text()
            got["" if text == "(no reason given)" else text] = int(tr.attrs["data-count"])
    expect(got == dict(reasons), f"denial reasons\n  page {got}\n  want {dict(reasons)}")

    # Per capsule: kinds and uses per site, and the history.
    caps = collections.defaultdict(lambda: collections.defaultdict(collections.Counter))
    uses = collections.defaultdict(collections.Counter)
    history = collections.defaultdict(set)
    for site, e in entries:
        caps[e["capsuleId"]][site][kind_of(e)] += 1
        uses[e["capsuleId"]][site] += e["uses"]
        history[e["capsuleId"]].add((site, e["index"], kind_of(e)))
    seen = set()
    for div in dom.find(id="capsules").find_all("div", data_capsule=True):
        cid = div.attrs["data-capsule"]
        seen.add(cid)
        for tr in div.find_all("tr", data_site=True):
            site = tr.attrs["data-site"]
            got = {td.attrs["data-kind"]: int(td.attrs["data-count"])
                   for td in tr.find_all("td", data_kind=True) if td.attrs["data-count"] != "0"}
            expect(got == dict(caps[cid][site]),
                   f"capsule {cid} at {site}: page {got} != {dict(caps[cid][site])}")
            u = tr.find("td", data_uses=True).attrs["data-uses"]
            expect(u == str(uses[cid][site]), f"capsule {cid} at {site}: uses {u}")
            if args.max_opens and cid and uses[cid][site] > 0:
                m = tr.find("div", data_max_opens=True)
                expect(m is not None and m.attrs["data-max-opens"] == str(args.max_opens),
                       f"capsule {cid} at {site}: maxOpens not {args.max_opens}")
        got = {(li.attrs["data-site"], int(li.attrs["data-index"]), li.attrs["data-kind"])
               for li in div.find_all("li", data_kind=True)}
        expect(got == history[cid], f"history of {cid}\n  page {sorted(got)}\n  want "
                                    f"{sorted(history[cid])}")
    expect(seen == set(caps), f"capsules {seen} != {set(caps)}")

    # Per requester and purpose (open entries).
    req = collections.defaultdict(lambda: [0, 0])
    for _, e in entries:
        if e["event"] == "open" and e["decision"] in ("permit", "deny"):
            req[(e["requester"], e["purpose"])][e["decision"] == "deny"] += 1
    got = {}
    for tr in dom.find(id="requesters").find_all("tr"):
        if tr.has_class("requester"):
            r = tr.find("td").text()
            r = "" if r == "(none given)" else r
            p = next(td for td in tr.find_all("td") if td.has_class("purpose")).text()
            p = "" if p == "(none given)" else p
            got[(r, p)] = [int(tr.attrs["data-permits"]), int(tr.attrs["data-denies"])]
    expect(got == dict(req), f"requesters\n  page {got}\n  want {dict(req)}")

    # Journeys: every send at one site to another site given here, and its receipt there.
    for site, e in entries:
        if e["event"] != "sent":
            continue
        ol = dom.find(id="journeys").find("ol", data_capsule=e["capsuleId"])
        expect(ol is not None, f"no journey for {e['capsuleId']}")
        if ol is None:
            continue
        steps = [(li.attrs["data-site"], li.attrs["data-step"], li.attrs.get("data-peer"))
                 for li in ol.find_all("li", data_step=True)]
        sent = [s for s in steps if s[:2] == (site, "sent")]
        expect(sent, f"journey of {e['capsuleId']} lacks the send at {site}: {steps}")
        for _, _, peer in sent:
            expect((peer, "received", site) in steps,
                   f"journey of {e['capsuleId']}: no receipt at {peer} from {site}: {steps}")
            expect(any(s[0] == peer and s[1] == "use" for s in steps),
                   f"journey of {e['capsuleId']}: no opens at {peer}: {steps}")

    for e in errors:
        print("MISMATCH:", e, file=sys.stderr)
    if not errors:
        print(f"report DOM matches audit show --json: {len(entries)} entries, "
              f"{len(reasons)} denial reasons, {len(caps)} capsules, {len(req)} requester/purpose")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
