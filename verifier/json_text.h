// JSON text preparation shared by the policy and site configuration parsers.
#ifndef BUNKER_VERIFIER_JSON_TEXT_H_
#define BUNKER_VERIFIER_JSON_TEXT_H_

#include <string>
#include <string_view>
#include <vector>

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

// Checks what Cap'n Proto 0.9.2's JSON decoder lets through against RFC 8259, and returns the
// text's number tokens in document order (views into `json`). The decoder stops at a NUL byte
// as if the text ended there, so a valid document followed by a NUL could carry anything; and
// it takes numbers such as `1.` and `1.e0` that RFC 8259 section 6 does not allow, and bytes that
// are not UTF-8 (section 8.1). Here any NUL byte, any invalid UTF-8, and any number not of the form -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?, is
// kInvalidArgument naming its byte offset. Strings are skipped (their escapes are the decoder's
// and DecodeUnicodeEscapes's to check). Run it on the text the decoder is given.
absl::StatusOr<std::vector<std::string_view>> CheckJsonText(std::string_view json);

// Whether a number token that CheckJsonText accepted stands for an integer exactly: `7`,
// `7.0` and `7e2` do; `0.99999999999999999` does not, though it reads as the double 1.
bool JsonNumberIsInteger(std::string_view token);

// A parser's error description made one line: control characters (which may come from the
// echoed input) become \xNN.
std::string OneLine(std::string_view text);

}  // namespace bunker::verifier

#endif  // BUNKER_VERIFIER_JSON_TEXT_H_
