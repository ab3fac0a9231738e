// The report as one self-contained HTML page (audit_report.h). Every text that came from a log,
// a capsule or the command line goes through Text() (or, inside the JSON block, through
// JsonText() and ReportScriptSafeJson); nothing else is written unescaped but this file's own
// constants and numbers. Over 500 lines on purpose: the sections of one page, which share the
// page writer and that one escaping rule, read best side by side.
#include <algorithm>
#include <type_traits>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "capsule/json_writer.h"
#include "capsule/paths.h"
#include "capsule/utc.h"
#include "verifier/audit_report.h"

namespace bunker::verifier {
namespace {

// Shown rows of the page's lists (the events table has every entry).
constexpr size_t kCapsulesShown = 100;
constexpr size_t kRequestersShown = 200;
constexpr size_t kReasonsShown = 15;
// Timeline buckets: hours for a span up to 3 days, then days, weeks, 30 days, whichever first
// gives at most kMaxBuckets.
constexpr int64_t kMaxBuckets = 400;

std::string Text(std::string_view s) { return ReportHtmlText(s); }

// A JSON string of `s` as the page shows it (see the header: terminal-safe first).
void JsonText(capsule::JsonWriter* w, std::string_view s) {
  w->String(capsule::EscapeForTerminal(s, false));
}

std::string Group(uint64_t n) {
  std::string digits = absl::StrCat(n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

std::string Plural(uint64_t n, std::string_view one, std::string_view many) {
  return Group(n) + " " + std::string(n == 1 ? one : many);
}

// A word for a shell command line: as is when it is plain, else in single quotes.
std::string ShellWord(std::string_view s) {
  bool plain = !s.empty();
  for (char c : s) {
    if (!(absl::ascii_isalnum(static_cast<unsigned char>(c)) ||
          std::string_view("/._-+:,=@%").find(c) != std::string_view::npos)) {
      plain = false;
    }
  }
  if (plain) return std::string(s);
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string ProvePrefix(const ReportSite& s) {
  std::string cmd = absl::StrCat("capsule audit prove --log ", ShellWord(s.log_path));
  if (!s.key_path.empty()) absl::StrAppend(&cmd, " --key ", ShellWord(s.key_path));
  return cmd + " --entry ";
}

std::string SiteLabel(const AuditReport& rep, size_t i) {
  const ReportSite& s = rep.sites[i];
  return s.name.empty() ? s.log_path : s.name;
}

// The site whose key has fingerprint `text`, or -1.
int SiteOfFingerprint(const AuditReport& rep, std::string_view text) {
  absl::StatusOr<crypto::Fingerprint> fp = crypto::Fingerprint::Parse(text);
  if (!fp.ok()) return -1;
  for (size_t i = 0; i < rep.inputs.size(); ++i) {
    if (rep.inputs[i].key.fingerprint() == *fp) return static_cast<int>(i);
  }
  return -1;
}

// A peer as the page names it: the site's name when its log is in the report.
std::string PeerHtml(const AuditReport& rep, std::string_view requester) {
  const int i = SiteOfFingerprint(rep, requester);
  if (i >= 0) return absl::StrCat("<b>", Text(SiteLabel(rep, i)), "</b>");
  return requester.empty() ? "an unnamed peer"
                           : absl::StrCat("<code>", Text(requester), "</code>");
}

// Buffered output to the caller's file.
class Page {
 public:
  explicit Page(capsule::WritableFile* out) : out_(out) {}
  template <typename... T>
  void Add(const T&... parts) {
    (Append(parts), ...);
    if (buf_.size() >= (1u << 20)) Drain();
  }
  absl::Status Flush() {
    Drain();
    return status_;
  }

 private:
  void Append(std::string_view s) { buf_.append(s.data(), s.size()); }
  void Append(const std::string& s) { buf_ += s; }
  void Append(const char* s) { buf_ += s; }
  template <typename N, std::enable_if_t<std::is_integral_v<N> && !std::is_same_v<N, bool> &&
                                             !std::is_same_v<N, char>,
                                         int> = 0>
  void Append(N n) {
    absl::StrAppend(&buf_, n);
  }
  void Drain() {
    if (status_.ok() && !buf_.empty()) {
      status_ = out_->Append(
          absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(buf_.data()), buf_.size()));
    }
    buf_.clear();
  }

  capsule::WritableFile* out_;
  std::string buf_;
  absl::Status status_;
};

void WriteVerdict(Page& p, const AuditReport& rep) {
  uint64_t entries = 0, checkpoints = 0, left_out = 0;
  for (const ReportSite& s : rep.sites) {
    entries += s.entries;
    checkpoints += s.checkpoints;
    left_out += s.left_out;
  }
  const bool every = rep.sites.empty() || rep.sites.front().every_signature;
  p.Add("<section class=\"card\" id=\"verdict\" data-valid=\"yes\" data-every-signature=\"",
        every ? "yes" : "no", "\"><h2>Verification</h2>");
  p.Add("<div class=\"banner ok\"><span class=\"mark\">&#10004;</span><span>",
        rep.sites.size() == 1 ? std::string("The log verifies")
                              : absl::StrCat("All ", rep.sites.size(), " logs verify"),
        ": ", Plural(entries, "entry", "entries"), " checked against ",
        Plural(checkpoints, "checkpoint", "checkpoints"),
        every ? ", every signature and every root (spec/AUDIT.md section 7)"
              : ": every root, and the latest signature, which vouches for every entry "
                "through the tree",
        "</span></div>");
  if (!every) {
    p.Add("<p class=\"muted\" id=\"signatures\">The signatures of earlier checkpoints were not "
          "checked one by one (spec/AUDIT.md &ldquo;Opening&rdquo;): <code>capsule audit report "
          "--every-signature</code> or <code>capsule audit verify</code> does.</p>");
  }
  p.Add("<table><thead><tr><th>site</th><th>key</th><th class=\"num\">entries</th>"
        "<th class=\"num\">checkpoints</th><th>latest checkpoint</th><th>witness</th>"
        "<th>log</th></tr></thead><tbody>");
  for (size_t i = 0; i < rep.sites.size(); ++i) {
    const ReportSite& s = rep.sites[i];
    p.Add("<tr data-site=\"", Text(SiteLabel(rep, i)), "\" data-entries=\"", s.entries,
          "\" data-checkpoints=\"", s.checkpoints, "\"><td class=\"nowrap\"><b>",
          Text(s.name.empty() ? "(no checkpoint yet)" : s.name), "</b></td><td><code>",
          Text(s.fingerprint), "</code></td><td class=\"num\">", Group(s.entries),
          "</td><td class=\"num\">", Group(s.checkpoints), "</td><td>");
    if (s.checkpoints > 0) {
      p.Add("size ", Group(s.latest.size), ", signed ", Text(capsule::FormatUtc(s.latest.time)),
            "<br><span class=\"muted\">root <code>", crypto::ToHex(s.latest.root).substr(0, 16),
            "&hellip;</code></span>");
    } else {
      p.Add("<span class=\"muted\">none yet</span>");
    }
    p.Add("</td><td data-witness=\"", s.witnessed_size ? "consistent" : "unknown", "\">");
    if (s.witnessed_size) {
      p.Add("<span class=\"pill permit\">consistent</span> with the witnessed checkpoint of "
            "size ", Group(*s.witnessed_size), "<br><span class=\"muted\">",
            Text(s.witness_source), "</span>");
    } else {
      p.Add("<span class=\"pill\">not checked</span><br><span class=\"muted\">no witnessed "
            "checkpoint given (--witness-dir)</span>");
    }
    p.Add("</td><td><code>", Text(s.log_path), "</code>");
    if (s.left_out > 0) {
      p.Add("<br><span class=\"pill failed\">", Plural(s.left_out, "entry", "entries"),
            " appended after verification: not in this report</span>");
    }
    p.Add("</td></tr>");
  }
  p.Add("</tbody></table>");
  if (left_out == 0) {
    p.Add("<p class=\"muted\">Every entry below is covered by a verified signed checkpoint. "
          "Each row of the events table gives the <code>capsule audit prove</code> command "
          "that proves it is in the signed tree.</p>");
  }
  p.Add("</section>");
}

void WriteTotals(Page& p, const AuditReport& rep) {
  auto count = [&rep](const std::string& d) {
    auto it = rep.by_decision.find(d);
    return it == rep.by_decision.end() ? uint64_t{0} : it->second;
  };
  const uint64_t permit = count("permit"), deny = count("deny"), failed = count("failed");
  p.Add("<section class=\"card\" id=\"overview\"><h2>Decisions</h2>"
        "<dl class=\"tiles\" id=\"totals\" data-total=\"", rep.total, "\" data-permit=\"", permit,
        "\" data-deny=\"", deny, "\" data-failed=\"", failed, "\">");
  p.Add("<div class=\"tile\"><dt>entries</dt><dd id=\"total-entries\">", Group(rep.total),
        "</dd></div><div class=\"tile permit\"><dt>permits</dt><dd id=\"total-permit\">",
        Group(permit), "</dd></div><div class=\"tile deny\"><dt>denials</dt><dd "
        "id=\"total-deny\">", Group(deny), "</dd></div><div class=\"tile failed\"><dt>releases "
        "failed</dt><dd id=\"total-failed\">", Group(failed), "</dd></div>");
  // "+": more than the figures keep (audit_report.h).
  p.Add("<div class=\"tile\"><dt>capsules</dt><dd>",
        Group(rep.capsules.size() - rep.capsules.count("")),
        rep.other_capsule_entries > 0 ? "+" : "", "</dd></div>"
        "<div class=\"tile\"><dt>requester &amp; purpose</dt><dd>", Group(rep.requesters.size()),
        rep.other_requester_entries > 0 ? "+" : "", "</dd></div></dl>");
  p.Add("<table id=\"by-event\" class=\"muted\" style=\"margin-top:10px\"><thead><tr>"
        "<th>event</th><th class=\"num\">entries</th></tr></thead><tbody>");
  for (const auto& [event, n] : rep.by_event) {
    p.Add("<tr data-event=\"", Text(event), "\" data-count=\"", n, "\"><td>", Text(event),
          "</td><td class=\"num\">", Group(n), "</td></tr>");
  }
  p.Add("</tbody></table>");
  for (const auto& [decision, n] : rep.by_decision) {
    if (decision == "permit" || decision == "deny" || decision == "failed") continue;
    p.Add("<p class=\"muted\" data-other-decision=\"", Text(decision), "\">", Group(n),
          " entries with decision &ldquo;", Text(decision), "&rdquo;</p>");
  }
  p.Add("</section>");
}

void WriteTimeline(Page& p, const AuditReport& rep) {
  p.Add("<section class=\"card\" id=\"timeline\"><h2>Timeline ");
  if (rep.hours.empty()) {
    p.Add("</h2><p class=\"muted\">No decisions.</p></section>");
    return;
  }
  const int64_t first = rep.hours.begin()->first, last = rep.hours.rbegin()->first;
  static constexpr std::pair<int64_t, const char*> kSizes[] = {
      {1, "hour"}, {24, "day"}, {24 * 7, "week"}, {24 * 30, "30 days"}};
  int64_t size = 0;
  const char* unit = "";
  for (const auto& [hours, name] : kSizes) {
    size = hours;
    unit = name;
    if ((hours == 1 && last - first < 72) || (hours > 1 && (last - first) / hours < kMaxBuckets)) {
      break;
    }
  }
  auto bucket_of = [size](int64_t hour) {
    return hour >= 0 ? hour / size : -((-hour + size - 1) / size);
  };
  // At least a day of hours (or 24 buckets), so that a short log does not draw one wide block.
  const int64_t b0 = bucket_of(first), b1 = std::max(bucket_of(last), b0 + 23);
  std::vector<std::pair<uint64_t, uint64_t>> b(static_cast<size_t>(b1 - b0 + 1));
  for (const auto& [hour, pd] : rep.hours) {
    auto& slot = b[static_cast<size_t>(bucket_of(hour) - b0)];
    slot.first += pd.first;
    slot.second += pd.second;
  }
  uint64_t max = 1;
  for (const auto& [pm, dn] : b) max = std::max({max, pm, dn});
  p.Add("<small>permits and denials per ", unit, ", UTC</small></h2>");
  const double left = 56, right = 1180, top = 14, half = 100, mid = top + half + 8;
  const double w = (right - left) / static_cast<double>(b.size());
  const double gap = w > 4 ? std::min(2.0, w * 0.2) : 0;
  p.Add(absl::StrFormat(
      "<svg class=\"timeline\" viewBox=\"0 0 1200 %d\" role=\"img\" aria-label=\"permits and "
      "denials per %s\">",
      static_cast<int>(mid + half + 34), unit));
  // Axes and scale.
  p.Add(absl::StrFormat(
      "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#9aa5b1\"/>"
      "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>"
      "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">0</text>"
      "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>"
      "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e4e8ee\"/>"
      "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e4e8ee\"/>",
      left, mid, right, mid, left - 6, top + 9, Group(max), left - 6, mid + 4, left - 6,
      mid + half, Group(max), left, top, right, top, left, mid + half, right, mid + half));
  for (size_t i = 0; i < b.size(); ++i) {
    const auto& [pm, dn] = b[i];
    if (pm == 0 && dn == 0) continue;
    const double x = left + w * static_cast<double>(i) + gap / 2;
    const int64_t start = (b0 + static_cast<int64_t>(i)) * size * 3600;
    const std::string tip = absl::StrCat(capsule::FormatUtc(start), ": ",
                                         Plural(pm, "permit", "permits"), ", ",
                                         Plural(dn, "denial", "denials"));
    p.Add("<g><title>", Text(tip), "</title>");
    if (pm > 0) {
      const double h = std::max(1.0, half * static_cast<double>(pm) / static_cast<double>(max));
      p.Add(absl::StrFormat("<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" "
                            "fill=\"#2f9e66\"/>",
                            x, mid - h, std::max(0.5, w - gap), h));
    }
    if (dn > 0) {
      const double h = std::max(1.0, half * static_cast<double>(dn) / static_cast<double>(max));
      p.Add(absl::StrFormat("<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" "
                            "fill=\"#b83227\"/>",
                            x, mid, std::max(0.5, w - gap), h));
    }
    p.Add("</g>");
  }
  // Time labels: first, middle and last bucket.
  const size_t marks[] = {0, b.size() / 2, b.size() - 1};
  for (size_t k = 0; k < 3; ++k) {
    if (k > 0 && marks[k] == marks[k - 1]) continue;
    const int64_t start = (b0 + static_cast<int64_t>(marks[k])) * size * 3600;
    std::string label = capsule::FormatUtc(start);
    label = size == 1 ? label.substr(0, 16) : label.substr(0, 10);
    std::replace(label.begin(), label.end(), 'T', ' ');
    const double x = left + w * (static_cast<double>(marks[k]) + 0.5);
    p.Add(absl::StrFormat("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\">%s</text>", x,
                          mid + half + 18, k == 0 ? "start" : (k == 2 ? "end" : "middle"),
                          Text(label)));
  }
  p.Add("</svg><div class=\"legend\"><span><i style=\"background:#2f9e66\"></i>permits "
        "(up)</span><span><i style=\"background:#b83227\"></i>denials (down)</span><span>",
        Plural(b.size(), "bucket", "buckets"), " of one ", unit, "</span></div></section>");
}

void WriteJourneys(Page& p, const AuditReport& rep) {
  std::vector<const ReportCapsule*> moved;
  for (const auto& [id, c] : rep.capsules) {
    if (!id.empty() && (!c.transfers.empty() || c.kinds.size() > 1)) moved.push_back(&c);
  }
  if (moved.empty() && rep.sites.size() < 2) return;
  p.Add("<section class=\"card\" id=\"journeys\"><h2>Journeys <small>each capsule across the "
        "sites, sends matched to receipts by capsule id and site keys</small></h2>");
  if (moved.empty()) p.Add("<p class=\"muted\">No capsule was sent or received.</p>");
  for (const ReportCapsule* c : moved) {
    // Each send paired with its receipt at the peer (the first unpaired one from this site),
    // then the hops in the order of their first step: a send is logged when it completed, so
    // its time may be after the receipt's.
    std::vector<ReportHistoryItem> sorted = c->transfers;
    std::stable_sort(sorted.begin(), sorted.end(),
                     [](const ReportHistoryItem& a, const ReportHistoryItem& b) {
                       return a.time < b.time;
                     });
    std::vector<bool> used(sorted.size(), false);
    std::vector<std::vector<size_t>> hops;
    for (size_t i = 0; i < sorted.size(); ++i) {
      if (sorted[i].kind != "sent") continue;
      used[i] = true;
      hops.push_back({i});
      const int peer = SiteOfFingerprint(rep, sorted[i].requester);
      for (size_t j = 0; peer >= 0 && j < sorted.size(); ++j) {
        if (!used[j] && sorted[j].kind == "received" &&
            sorted[j].site == static_cast<size_t>(peer) &&
            SiteOfFingerprint(rep, sorted[j].requester) == static_cast<int>(sorted[i].site)) {
          used[j] = true;
          hops.back().push_back(j);
          break;
        }
      }
    }
    for (size_t i = 0; i < sorted.size(); ++i) {
      if (!used[i]) hops.push_back({i});
    }
    std::stable_sort(hops.begin(), hops.end(),
                     [&sorted](const std::vector<size_t>& a, const std::vector<size_t>& b) {
                       return std::min(sorted[a.front()].time, sorted[a.back()].time) <
                              std::min(sorted[b.front()].time, sorted[b.back()].time);
                     });
    std::vector<ReportHistoryItem> steps;
    for (const std::vector<size_t>& hop : hops) {
      for (size_t i : hop) steps.push_back(sorted[i]);
    }
    p.Add("<div class=\"journey-of\"><h3><code>", Text(c->id), "</code></h3>"
          "<ol class=\"journey\" data-capsule=\"", Text(c->id), "\">");
    bool arrow = false;
    auto step = [&](const std::string& attrs, bool warn, const std::string& body) {
      if (arrow) p.Add("<li class=\"arrow\">&rarr;</li>");
      arrow = true;
      p.Add("<li class=\"step", warn ? " warn" : "", "\" ", attrs, ">", body, "</li>");
    };
    for (const ReportHistoryItem& s : steps) {
      const int peer = SiteOfFingerprint(rep, s.requester);
      std::string body = absl::StrCat("<b>", Text(SiteLabel(rep, s.site)), "</b> ");
      bool warn = false;
      if (s.kind == "sent") {
        absl::StrAppend(&body, "sent to ", PeerHtml(rep, s.requester));
        // A send to a site whose log is here should show up there as a receipt.
        if (peer >= 0) {
          auto it = c->kinds.find(static_cast<size_t>(peer));
          if (it == c->kinds.end() || it->second.count("received") == 0) {
            warn = true;
            absl::StrAppend(&body, " <span class=\"pill failed\">no receipt in ",
                            Text(SiteLabel(rep, peer)), "'s log</span>");
          }
        }
      } else if (s.kind == "received") {
        absl::StrAppend(&body, "received from ", PeerHtml(rep, s.requester));
      } else {
        warn = true;
        absl::StrAppend(&body, "refused from ", PeerHtml(rep, s.requester));
      }
      absl::StrAppend(&body, "<br><span class=\"muted\">", Text(capsule::FormatUtc(s.time)),
                      " &middot; entry ", s.index, "</span>");
      step(absl::StrCat("data-site=\"", Text(SiteLabel(rep, s.site)), "\" data-step=\"",
                        Text(s.kind), "\" data-peer=\"",
                        Text(peer >= 0 ? SiteLabel(rep, peer) : s.requester), "\""),
           warn, body);
    }
    // Then what happened to it at each site where it was opened or denied.
    for (const auto& [site, kinds] : c->kinds) {
      auto n = [&kinds = kinds](const char* k) {
        auto it = kinds.find(k);
        return it == kinds.end() ? uint64_t{0} : it->second;
      };
      const uint64_t opened = n("opened"), denied = n("denied"), failed = n("release-failed");
      if (opened + denied + failed == 0) continue;
      std::string body = absl::StrCat("<b>", Text(SiteLabel(rep, site)), "</b> opened ",
                                      Group(opened), "&times;, denied ", Group(denied), "&times;");
      if (failed > 0) absl::StrAppend(&body, ", ", Group(failed), " release(s) failed");
      step(absl::StrCat("data-site=\"", Text(SiteLabel(rep, site)), "\" data-step=\"use\" "
                        "data-opened=\"", opened, "\" data-denied=\"", denied, "\""),
           false, body);
    }
    p.Add("</ol></div>");
  }
  p.Add("</section>");
}

void WriteDenials(Page& p, const AuditReport& rep) {
  std::vector<std::pair<std::string, uint64_t>> reasons(rep.denial_reasons.begin(),
                                                        rep.denial_reasons.end());
  std::stable_sort(reasons.begin(), reasons.end(),
                   [](const auto& a, const auto& b) { return a.second > b.second; });
  p.Add("<section class=\"card\" id=\"denials\"><h2>Denials by reason <small>an entry with "
        "several reasons counts once under each</small></h2>");
  if (reasons.empty()) {
    p.Add("<p class=\"muted\">No denials.</p></section>");
    return;
  }
  const uint64_t top = reasons.front().second;
  p.Add("<table><thead><tr><th>reason</th><th class=\"num\">denials</th><th></th></tr></thead>"
        "<tbody>");
  uint64_t other_reasons = 0, other_denials = 0;
  for (size_t i = 0; i < reasons.size(); ++i) {
    const auto& [reason, n] = reasons[i];
    if (i >= kReasonsShown) {
      ++other_reasons;
      other_denials += n;
      continue;
    }
    p.Add("<tr class=\"reason\" data-count=\"", n, "\"><td class=\"wrap reason-text\">",
          reason.empty() ? "<span class=\"muted\">(no reason given)</span>" : Text(reason),
          "</td><td class=\"num\">", Group(n), "</td><td style=\"width:22%\"><div class=\"bar\">"
          "<span style=\"width:",
          absl::StrFormat("%.1f", 100.0 * static_cast<double>(n) / static_cast<double>(top)),
          "%\"></span></div></td></tr>");
  }
  p.Add("</tbody></table>");
  if (other_reasons > 0) {
    p.Add("<p class=\"muted\" id=\"other-reasons\">and ", Plural(other_reasons, "other reason",
                                                                 "other reasons"),
          " (", Plural(other_denials, "denial", "denials"), "): filter the events table</p>");
  }
  if (rep.other_reason_denials > 0) {
    p.Add("<p class=\"muted\" id=\"other-reason-denials\" data-count=\"",
          rep.other_reason_denials, "\">and ",
          Plural(rep.other_reason_denials, "denial", "denials"), " under reasons past the first ",
          Group(kReportMaxKeys), " the report keeps: filter the events table</p>");
  }
  p.Add("</section>");
}

void WriteCapsules(Page& p, const AuditReport& rep) {
  std::vector<const ReportCapsule*> list;
  for (const auto& [id, c] : rep.capsules) list.push_back(&c);
  std::stable_sort(list.begin(), list.end(), [](const ReportCapsule* a, const ReportCapsule* b) {
    return a->events > b->events;
  });
  p.Add("<section class=\"card\" id=\"capsules\"><h2>Capsules <small>history at each site and "
        "uses against maxOpens</small></h2>");
  if (list.empty()) p.Add("<p class=\"muted\">No entries.</p>");
  for (size_t i = 0; i < list.size() && i < kCapsulesShown; ++i) {
    const ReportCapsule& c = *list[i];
    p.Add("<div class=\"capsule\" data-capsule=\"", Text(c.id), "\" data-events=\"", c.events,
          "\"><header><h3>",
          c.id.empty() ? "<span class=\"muted\">entries without a capsule</span>"
                       : absl::StrCat("<code>", Text(c.id), "</code>"),
          "</h3>");
    if (!c.issuer.empty()) {
      p.Add("<span class=\"muted\">issuer <code>", Text(c.issuer), "</code></span>");
    }
    p.Add("<span class=\"muted\">", Plural(c.events, "entry", "entries"), "</span>");
    if (!c.id.empty()) {
      p.Add("<button type=\"button\" class=\"link\" data-filter=\"", Text(c.id),
            "\">show in the table</button>");
    }
    p.Add("</header>");
    // Kinds across its sites, in a fixed order first.
    std::vector<std::string> kinds = {"received", "sent", "refused", "opened", "denied",
                                      "release-failed"};
    for (const auto& [site, ks] : c.kinds) {
      for (const auto& [k, n] : ks) {
        if (std::find(kinds.begin(), kinds.end(), k) == kinds.end()) kinds.push_back(k);
      }
    }
    p.Add("<table><thead><tr><th>site</th>");
    for (const std::string& k : kinds) p.Add("<th class=\"num\">", Text(k), "</th>");
    p.Add("<th class=\"num\">uses</th><th>maxOpens</th></tr></thead><tbody>");
    uint32_t limit = 0;
    std::string rules;
    for (const auto& [rule, n] : c.max_opens) {
      limit = std::max(limit, n);
      absl::StrAppend(&rules, rules.empty() ? "" : ", ", Text(rule), ": ", n);
    }
    for (const auto& [site, ks] : c.kinds) {
      p.Add("<tr data-site=\"", Text(SiteLabel(rep, site)), "\"><td>",
            Text(SiteLabel(rep, site)), "</td>");
      for (const std::string& k : kinds) {
        auto it = ks.find(k);
        const uint64_t n = it == ks.end() ? 0 : it->second;
        p.Add("<td class=\"num\" data-kind=\"", Text(k), "\" data-count=\"", n, "\">",
              n ? Group(n) : "<span class=\"muted\">&ndash;</span>", "</td>");
      }
      const int64_t uses = c.uses.at(site);
      p.Add("<td class=\"num\" data-uses=\"", uses, "\">", uses, "</td><td>");
      const bool asked = ks.count("opened") + ks.count("denied") + ks.count("release-failed") > 0;
      if (!asked) {
        p.Add("<span class=\"muted\">&ndash;</span>");
      } else if (!c.policy_known) {
        p.Add("<span class=\"muted\">unknown (capsule not in the site's store)</span>");
      } else if (c.max_opens.empty()) {
        p.Add("<span class=\"muted\">no limit</span>");
      } else {
        const double frac =
            std::min(1.0, static_cast<double>(std::max<int64_t>(uses, 0)) / limit);
        p.Add("<div data-max-opens=\"", limit, "\">", uses, " of ", limit,
              " <span class=\"muted\">(", rules, ")</span><div class=\"bar uses",
              uses >= limit ? " full" : "", "\"><span style=\"width:",
              absl::StrFormat("%.1f", 100 * frac), "%\"></span></div></div>");
      }
      p.Add("</td></tr>");
    }
    p.Add("</tbody></table>");
    std::vector<ReportHistoryItem> h = c.history;
    std::stable_sort(h.begin(), h.end(), [](const ReportHistoryItem& a,
                                            const ReportHistoryItem& b) { return a.time < b.time; });
    p.Add("<details", h.size() <= 12 ? " open" : "", "><summary>history (",
          c.events > h.size() ? absl::StrCat("first ", h.size(), " of ", Group(c.events))
                              : Group(h.size()),
          ")</summary><ul class=\"history\">");
    for (const ReportHistoryItem& e : h) {
      p.Add("<li data-site=\"", Text(SiteLabel(rep, e.site)), "\" data-index=\"", e.index,
            "\" data-kind=\"", Text(e.kind), "\"><span class=\"t\">",
            Text(capsule::FormatUtc(e.time)), "</span><b>", Text(SiteLabel(rep, e.site)),
            "</b> #", e.index, " <span class=\"pill ",
            e.kind == "opened" || e.kind == "received" || e.kind == "sent"
                ? "permit"
                : (e.kind == "denied" || e.kind == "refused" ? "deny" : "failed"),
            "\">", Text(e.kind), "</span> ");
      if (!e.requester.empty()) p.Add("by ", PeerHtml(rep, e.requester));
      if (!e.purpose.empty()) p.Add(" for &ldquo;", Text(e.purpose), "&rdquo;");
      p.Add("</li>");
    }
    p.Add("</ul></details></div>");
  }
  if (list.size() > kCapsulesShown) {
    p.Add("<p class=\"muted\">and ", Plural(list.size() - kCapsulesShown, "other capsule",
                                            "other capsules"),
          " with fewer entries: filter the events table by id</p>");
  }
  if (rep.other_capsule_entries > 0) {
    p.Add("<p class=\"muted\" id=\"other-capsules\" data-count=\"",
          rep.other_capsule_entries, "\">and ",
          Plural(rep.other_capsule_entries, "entry", "entries"), " of capsules past the first ",
          Group(kReportMaxCapsules), " the report keeps: filter the events table by id</p>");
  }
  p.Add("</section>");
}

void WriteRequesters(Page& p, const AuditReport& rep) {
  std::vector<const ReportRequester*> list;
  for (const auto& [key, q] : rep.requesters) list.push_back(&q);
  std::stable_sort(list.begin(), list.end(),
                   [](const ReportRequester* a, const ReportRequester* b) {
                     return a->permits + a->denies + a->other > b->permits + b->denies + b->other;
                   });
  p.Add("<section class=\"card\" id=\"requesters\"><h2>Requesters and purposes <small>what "
        "each opened (open entries)</small></h2>");
  if (list.empty()) {
    p.Add("<p class=\"muted\">No open requests.</p></section>");
    return;
  }
  p.Add("<table><thead><tr><th>requester</th><th>purpose</th><th class=\"num\">permits</th>"
        "<th class=\"num\">denials</th><th>capsules opened</th><th>paths permitted</th></tr>"
        "</thead><tbody>");
  for (size_t i = 0; i < list.size() && i < kRequestersShown; ++i) {
    const ReportRequester& q = *list[i];
    p.Add("<tr class=\"requester\" data-permits=\"", q.permits, "\" data-denies=\"", q.denies,
          "\"><td class=\"wrap req\">",
          q.requester.empty() ? "<span class=\"muted\">(none given)</span>"
                              : absl::StrCat("<code>", Text(q.requester), "</code>"),
          "</td><td class=\"wrap purpose\">",
          q.purpose.empty() ? "<span class=\"muted\">(none given)</span>" : Text(q.purpose),
          "</td><td class=\"num\">", Group(q.permits), "</td><td class=\"num\">",
          Group(q.denies), "</td><td class=\"opened\">");
    for (const std::string& id : q.opened) {
      p.Add("<code class=\"opened-id\">", Text(id.empty() ? "-" : id), "</code><br>");
    }
    if (q.opened_total > q.opened.size()) {
      p.Add("<span class=\"muted\">and at least ", Group(q.opened_total - q.opened.size()),
            " more</span>");
    }
    if (q.opened.empty()) p.Add("<span class=\"muted\">&ndash;</span>");
    p.Add("</td><td class=\"wrap\">");
    std::vector<std::string> paths;
    for (const std::string& s : q.paths) paths.push_back(Text(s));
    p.Add(paths.empty() ? "<span class=\"muted\">&ndash;</span>"
                        : absl::StrCat("<code>", absl::StrJoin(paths, "</code>, <code>"),
                                       "</code>"),
          "</td></tr>");
  }
  p.Add("</tbody></table>");
  if (list.size() > kRequestersShown) {
    p.Add("<p class=\"muted\">and ", Group(list.size() - kRequestersShown),
          " more: filter the events table</p>");
  }
  if (rep.other_requester_entries > 0) {
    p.Add("<p class=\"muted\" id=\"other-requesters\" data-count=\"",
          rep.other_requester_entries, "\">and ",
          Plural(rep.other_requester_entries, "open entry", "open entries"),
          " of requesters and purposes past the first ", Group(kReportMaxKeys),
          " the report keeps: filter the events table</p>");
  }
  p.Add("</section>");
}

// The events table's frame; the script fills it from the JSON block.
void WriteEventsFrame(Page& p, const AuditReport& rep) {
  p.Add("<section class=\"card\" id=\"events\" data-ready=\"0\"><h2>Events <small>",
        Plural(rep.total, "entry", "entries"),
        "; filter, sort by a column, and prove any entry</small></h2>"
        "<noscript><p>The events table needs JavaScript; every figure above does not. "
        "<code>capsule audit show --json</code> lists the same entries.</p></noscript>"
        "<div class=\"controls\" id=\"controls\" hidden>"
        "<input type=\"search\" id=\"f-text\" placeholder=\"filter: capsule, requester, purpose, "
        "reason, path&hellip;\" aria-label=\"filter\">"
        "<label>decision <select id=\"f-decision\"><option value=\"\">all</option>"
        "<option>permit</option><option>deny</option><option>failed</option></select></label>"
        "<label>event <select id=\"f-event\"><option value=\"\">all</option></select></label>"
        "<label>site <select id=\"f-site\"><option value=\"\">all</option></select></label>"
        "</div>"
        "<table id=\"events-table\"><thead><tr><th class=\"num\" data-col=\"0\">#</th>"
        "<th data-col=\"1\">time (UTC)</th><th data-col=\"2\">site</th>"
        "<th data-col=\"3\">event</th><th data-col=\"4\">decision</th>"
        "<th data-col=\"5\">capsule</th><th data-col=\"6\">requester / peer</th>"
        "<th data-col=\"7\">purpose</th><th data-col=\"8\">paths</th>"
        "<th data-col=\"10\">reasons</th><th class=\"num\" data-col=\"11\">uses</th>"
        "<th>proof</th></tr></thead><tbody id=\"events-body\"></tbody></table>"
        "<div class=\"pager\"><button type=\"button\" id=\"first\">&laquo;</button>"
        "<button type=\"button\" id=\"prev\">&lsaquo; previous</button>"
        "<button type=\"button\" id=\"next\">next &rsaquo;</button>"
        "<button type=\"button\" id=\"last\">&raquo;</button><span id=\"page-info\"></span>"
        "</div><p id=\"table-check\" class=\"check\"></p>"
        "<div id=\"proof\" hidden>Inclusion proof of this entry in the site's signed tree "
        "(run it where the log is; RFC 9162, spec/AUDIT.md section 8):"
        "<code id=\"proof-cmd\"></code></div></section>");
}

}  // namespace

std::string ReportHtmlText(std::string_view text) {
  const std::string safe = capsule::EscapeForTerminal(text, false);
  std::string out;
  out.reserve(safe.size());
  for (char c : safe) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string ReportScriptSafeJson(std::string_view json) {
  std::string out;
  out.reserve(json.size());
  for (size_t i = 0; i < json.size(); ++i) {
    const char c = json[i];
    if (c == '<') {
      out += "\\u003c";
    } else if (c == '>') {
      out += "\\u003e";
    } else if (c == '&') {
      out += "\\u0026";
    } else if (c == '\xe2' && i + 2 < json.size() && json[i + 1] == '\x80' &&
               (json[i + 2] == '\xa8' || json[i + 2] == '\xa9')) {
      // U+2028 and U+2029: line terminators to older JavaScript parsers.
      out += json[i + 2] == '\xa8' ? "\\u2028" : "\\u2029";
      i += 2;
    } else {
      out += c;
    }
  }
  return out;
}

absl::Status WriteAuditReportHtml(const AuditReport& rep, capsule::WritableFile* out) {
  Page p(out);
  std::vector<std::string> names;
  for (size_t i = 0; i < rep.sites.size(); ++i) names.push_back(Text(SiteLabel(rep, i)));
  const std::string sites = absl::StrJoin(names, ", ");
  p.Add("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"",
        ReportContentSecurityPolicy(),
        "\"><meta name=\"referrer\" content=\"no-referrer\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        "<meta name=\"generator\" content=\"capsule audit report\">"
        "<title>Audit report: ", sites, "</title><style>", ReportStyle(),
        "</style></head>\n<body><header class=\"top\"><h1>Audit report &middot; ", sites,
        "</h1><p>", Plural(rep.total, "entry", "entries"));
  if (rep.first_time) {
    p.Add(" from ", Text(capsule::FormatUtc(*rep.first_time)), " to ",
          Text(capsule::FormatUtc(*rep.last_time)));
  }
  p.Add(" &middot; generated ", Text(capsule::FormatUtc(rep.generated)),
        " by <code>capsule audit report</code></p></header><main>\n");
  WriteVerdict(p, rep);
  WriteTotals(p, rep);
  WriteTimeline(p, rep);
  WriteJourneys(p, rep);
  WriteDenials(p, rep);
  WriteRequesters(p, rep);
  WriteCapsules(p, rep);
  WriteEventsFrame(p, rep);
  p.Add("<footer>Every text from the logs is shown as <code>capsule audit show</code> shows it "
        "on a terminal (control and bidirectional characters and invalid bytes as escapes). The "
        "logs are the record; this page is a view of them.</footer></main>\n");

  // The entries, streamed from the logs again.
  capsule::JsonWriter sw;
  sw.BeginArray();
  for (const ReportSite& s : rep.sites) {
    sw.BeginObject().Key("name");
    JsonText(&sw, s.name);
    sw.Key("log");
    JsonText(&sw, s.log_path);
    sw.Key("fingerprint").String(s.fingerprint).Key("prove");
    JsonText(&sw, ProvePrefix(s));
    sw.EndObject();
  }
  sw.EndArray();
  p.Add("<script type=\"application/json\" id=\"report-data\">{\"sites\": ",
        ReportScriptSafeJson(sw.text()), ", \"events\": [\n");
  bool first = true;
  for (size_t site = 0; site < rep.sites.size(); ++site) {
    const ReportSite& s = rep.sites[site];
    // Read by name again: the root check ties these entries to the verified ones.
    absl::StatusOr<uint64_t> held = ForEachVerifiedAuditRecord(
        s.log_path, s.entries, s.latest.root, [&](uint64_t index, const AuditRecord& r) {
          capsule::JsonWriter w;
          w.BeginArray().Number(index).Number(r.time).Number(site);
          for (const std::string* t :
               {&r.event, &r.decision, &r.capsule_id, &r.requester, &r.purpose}) {
            JsonText(&w, *t);
          }
          for (const std::vector<std::string>* list : {&r.paths, &r.rules, &r.reasons}) {
            w.BeginArray();
            for (const std::string& t : *list) JsonText(&w, t);
            w.EndArray();
          }
          w.Number(int{r.uses}).OptionalNumber(r.uid).EndArray();
          p.Add(first ? "" : ",\n", ReportScriptSafeJson(w.text()));
          first = false;
        });
    if (!held.ok()) {
      return absl::Status(held.status().code(),
                          absl::StrCat(s.log_path, ": ", held.status().message()));
    }
  }
  p.Add("\n]}</script>\n<script>", ReportScript(), "</script>\n</body></html>\n");
  return p.Flush();
}

}  // namespace bunker::verifier
