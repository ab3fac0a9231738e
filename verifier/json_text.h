// JSON text preparation shared by the policy and site configuration parsers.
#ifndef BUNKER_VERIFIER_JSON_TEXT_H_
#define BUNKER_VERIFIER_JSON_TEXT_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace bunker::verifier {

// Rewrites the `\uXXXX` escapes inside JSON strings as the UTF-8 bytes they stand for
// (surrogate pairs combined), leaving every other byte as it is. Cap'n Proto 0.9.2's JSON
// decoder reads the hex letters a-f of such escapes as the digits 0-5 (fixed upstream after
// 0.9.2), so `"donn\u00e9es"` would silently become `"donnIes"` and, say, a forbid rule would
// stop matching: the decoder must only ever see escapes it reads right. Escapes of '"', '\' and
// control characters, which must stay escaped, are kept when written with decimal digits only
// (read correctly) and refused otherwise. kInvalidArgument for malformed or lone-surrogate
// escapes.
absl::StatusOr<std::string> DecodeUnicodeEscapes(std::string_view json);

// A parser's error description made one line: control characters (which may come from the
// echoed input) become \xNN.
std::string OneLine(std::string_view text);

}  // namespace bunker::verifier

#endif  // BUNKER_VERIFIER_JSON_TEXT_H_
