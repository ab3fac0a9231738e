// UTF-8 as the text outputs see it: the one strict decoder, used by the terminal escaping
// (capsule/paths.h), the JSON writer (capsule/json_writer.h) and the audit export's CSV.
#ifndef BUNKER_CAPSULE_UTF8_H_
#define BUNKER_CAPSULE_UTF8_H_

#include <cstddef>
#include <string>
#include <string_view>

namespace bunker::capsule {

// Decodes the strictly valid UTF-8 sequence (RFC 3629: no overlong forms, surrogates or values
// above U+10FFFF) at the start of `s` into `*cp`. Returns its length (1-4), or 0 when `s` is
// empty or its first byte does not begin one; `*cp` is unspecified then.
size_t DecodeUtf8(std::string_view s, char32_t* cp);

// `text` with each byte that does not begin a valid sequence (as DecodeUtf8) replaced by U+FFFD.
// The result is valid UTF-8; valid input comes back unchanged.
std::string ToValidUtf8(std::string_view text);

}  // namespace bunker::capsule

#endif  // BUNKER_CAPSULE_UTF8_H_
