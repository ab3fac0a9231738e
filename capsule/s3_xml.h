// The bounded XML reader for S3 responses (capsule/s3_client.cc): listings, multipart replies,
// errors. Not a general XML parser: elements, attributes (skipped), text, CDATA, comments and
// the XML declaration. A DOCTYPE is refused outright, so no entity is ever defined or expanded;
// only the five predefined entities and numeric character references are decoded.
#ifndef BUNKER_CAPSULE_S3_XML_H_
#define BUNKER_CAPSULE_S3_XML_H_

#include <memory>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"

namespace bunker::capsule::s3 {

// Limits of one document: nesting depth and element count (an S3 listing page of 1,000 entries
// has about 10,000 elements).
inline constexpr int kMaxXmlDepth = 16;
inline constexpr size_t kMaxXmlElements = 100000;

// One element: its local name (any "prefix:" removed), the concatenation of its own text
// (children's text not included), and its children in document order.
struct XmlElement {
  std::string name;
  std::string text;
  std::vector<XmlElement> children;

  // The first child named `name`, or nullptr.
  const XmlElement* Child(absl::string_view child_name) const;
  // Every child named `name`.
  std::vector<const XmlElement*> Children(absl::string_view child_name) const;
  // The text of the first child named `name`, or "" if there is none.
  std::string ChildText(absl::string_view child_name) const;
};

// Parses one document into its root element. kInvalidArgument on anything malformed or over the
// limits, on a DOCTYPE, an unknown entity, or text after the root.
absl::StatusOr<XmlElement> ParseXml(absl::string_view document);

}  // namespace bunker::capsule::s3

#endif  // BUNKER_CAPSULE_S3_XML_H_
