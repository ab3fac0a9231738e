#include "capsule/s3_xml.h"

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace bunker::capsule::s3 {

const XmlElement* XmlElement::Child(absl::string_view child_name) const {
  for (const XmlElement& c : children) {
    if (c.name == child_name) return &c;
  }
  return nullptr;
}

std::vector<const XmlElement*> XmlElement::Children(absl::string_view child_name) const {
  std::vector<const XmlElement*> out;
  for (const XmlElement& c : children) {
    if (c.name == child_name) out.push_back(&c);
  }
  return out;
}

std::string XmlElement::ChildText(absl::string_view child_name) const {
  const XmlElement* c = Child(child_name);
  return c ? c->text : std::string();
}

namespace {

absl::Status Malformed(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("malformed XML: ", what));
}

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

bool IsNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-' || c == '.' || c == ':' || static_cast<unsigned char>(c) >= 0x80;
}

void AppendUtf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

class Parser {
 public:
  explicit Parser(absl::string_view doc) : doc_(doc) {}

  absl::StatusOr<XmlElement> Document() {
    absl::Status s = SkipMisc();
    if (!s.ok()) return s;
    if (AtEnd() || doc_[pos_] != '<') return Malformed("no root element");
    XmlElement root;
    s = Element(root, 1);
    if (!s.ok()) return s;
    s = SkipMisc();
    if (!s.ok()) return s;
    if (!AtEnd()) return Malformed("content after the root element");
    return root;
  }

 private:
  bool AtEnd() const { return pos_ >= doc_.size(); }
  bool StartsWith(absl::string_view p) const { return doc_.substr(pos_).substr(0, p.size()) == p; }

  void SkipSpace() {
    while (!AtEnd() && IsSpace(doc_[pos_])) ++pos_;
  }

  // Skips to just past `terminator`; false if the document ends first.
  bool SkipPast(absl::string_view terminator) {
    const size_t end = doc_.find(terminator, pos_);
    if (end == absl::string_view::npos) return false;
    pos_ = end + terminator.size();
    return true;
  }

  // Whitespace, comments and processing instructions (the XML declaration) around the root.
  absl::Status SkipMisc() {
    while (true) {
      SkipSpace();
      if (StartsWith("<?")) {
        if (!SkipPast("?>")) return Malformed("unterminated processing instruction");
      } else if (StartsWith("<!--")) {
        if (!SkipPast("-->")) return Malformed("unterminated comment");
      } else if (StartsWith("<!")) {
        return Malformed("DOCTYPE and declarations are not accepted");
      } else {
        return absl::OkStatus();
      }
    }
  }

  absl::StatusOr<std::string> Name() {
    const size_t start = pos_;
    while (!AtEnd() && IsNameChar(doc_[pos_])) ++pos_;
    if (pos_ == start) return Malformed("expected a name");
    return std::string(doc_.substr(start, pos_ - start));
  }

  static std::string LocalName(const std::string& name) {
    const size_t colon = name.rfind(':');
    return colon == std::string::npos ? name : name.substr(colon + 1);
  }

  // Decodes text up to the next '<' into `out`.
  absl::Status Text(std::string& out) {
    while (!AtEnd() && doc_[pos_] != '<') {
      const char c = doc_[pos_];
      if (c != '&') {
        out.push_back(c);
        ++pos_;
        continue;
      }
      const size_t semi = doc_.find(';', pos_);
      if (semi == absl::string_view::npos || semi - pos_ > 12) return Malformed("bad entity");
      const absl::string_view ent = doc_.substr(pos_ + 1, semi - pos_ - 1);
      pos_ = semi + 1;
      if (ent == "lt") {
        out.push_back('<');
      } else if (ent == "gt") {
        out.push_back('>');
      } else if (ent == "amp") {
        out.push_back('&');
      } else if (ent == "quot") {
        out.push_back('"');
      } else if (ent == "apos") {
        out.push_back('\'');
      } else if (ent.size() >= 2 && ent[0] == '#') {
        const bool hex = ent[1] == 'x';
        const absl::string_view digits = ent.substr(hex ? 2 : 1);
        if (digits.empty()) return Malformed("bad character reference");
        uint32_t cp = 0;
        for (char d : digits) {
          int v;
          if (d >= '0' && d <= '9') {
            v = d - '0';
          } else if (hex && d >= 'a' && d <= 'f') {
            v = d - 'a' + 10;
          } else if (hex && d >= 'A' && d <= 'F') {
            v = d - 'A' + 10;
          } else {
            return Malformed("bad character reference");
          }
          cp = cp * (hex ? 16 : 10) + static_cast<uint32_t>(v);
          if (cp > 0x10FFFF) return Malformed("character reference out of range");
        }
        if (cp == 0 || (cp >= 0xD800 && cp <= 0xDFFF)) {
          return Malformed("character reference out of range");
        }
        AppendUtf8(cp, out);
      } else {
        return Malformed("unknown entity");
      }
    }
    return absl::OkStatus();
  }

  // Parses the element starting at '<' into `e`.
  absl::Status Element(XmlElement& e, int depth) {
    if (depth > kMaxXmlDepth) return Malformed("nested too deeply");
    if (++elements_ > kMaxXmlElements) return Malformed("too many elements");
    ++pos_;  // '<'
    absl::StatusOr<std::string> name = Name();
    if (!name.ok()) return name.status();
    e.name = LocalName(*name);
    // Attributes are skipped (S3 puts only xmlns on the root), but must be well-formed.
    while (true) {
      SkipSpace();
      if (AtEnd()) return Malformed("unterminated start tag");
      if (doc_[pos_] == '/') {
        if (!StartsWith("/>")) return Malformed("bad empty-element tag");
        pos_ += 2;
        return absl::OkStatus();
      }
      if (doc_[pos_] == '>') {
        ++pos_;
        break;
      }
      absl::StatusOr<std::string> attr = Name();
      if (!attr.ok()) return attr.status();
      SkipSpace();
      if (AtEnd() || doc_[pos_] != '=') return Malformed("attribute without a value");
      ++pos_;
      SkipSpace();
      if (AtEnd() || (doc_[pos_] != '"' && doc_[pos_] != '\'')) {
        return Malformed("unquoted attribute value");
      }
      const char quote = doc_[pos_++];
      const size_t end = doc_.find(quote, pos_);
      if (end == absl::string_view::npos) return Malformed("unterminated attribute value");
      if (doc_.substr(pos_, end - pos_).find('<') != absl::string_view::npos) {
        return Malformed("'<' in an attribute value");
      }
      pos_ = end + 1;
    }
    // Content.
    while (true) {
      absl::Status s = Text(e.text);
      if (!s.ok()) return s;
      if (AtEnd()) return Malformed(absl::StrCat("element ", e.name, " is not closed"));
      if (StartsWith("</")) {
        pos_ += 2;
        absl::StatusOr<std::string> end = Name();
        if (!end.ok()) return end.status();
        if (LocalName(*end) != e.name) return Malformed("mismatched end tag");
        SkipSpace();
        if (AtEnd() || doc_[pos_] != '>') return Malformed("bad end tag");
        ++pos_;
        return absl::OkStatus();
      }
      if (StartsWith("<!--")) {
        if (!SkipPast("-->")) return Malformed("unterminated comment");
      } else if (StartsWith("<![CDATA[")) {
        pos_ += 9;
        const size_t end = doc_.find("]]>", pos_);
        if (end == absl::string_view::npos) return Malformed("unterminated CDATA");
        e.text.append(doc_.data() + pos_, end - pos_);
        pos_ = end + 3;
      } else if (StartsWith("<!") || StartsWith("<?")) {
        return Malformed("declaration inside an element");
      } else {
        e.children.emplace_back();
        s = Element(e.children.back(), depth + 1);
        if (!s.ok()) return s;
      }
    }
  }

  absl::string_view doc_;
  size_t pos_ = 0;
  size_t elements_ = 0;
};

}  // namespace

absl::StatusOr<XmlElement> ParseXml(absl::string_view document) {
  return Parser(document).Document();
}

}  // namespace bunker::capsule::s3
