// Archive entry paths: the one place that decides which paths are acceptable in a capsule.
// Used when sealing (importing a tar) and again when extracting (never trusting the sealer).
#ifndef BUNKER_CAPSULE_PATHS_H_
#define BUNKER_CAPSULE_PATHS_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace bunker::capsule {

// Normalizes an archive entry path: strips leading "./" components and one trailing '/'.
// Then requires a relative path of '/'-separated components, none empty, "." or "..", no NUL,
// at most kMaxPathSize bytes. kInvalidArgument naming the path and the rule otherwise, e.g.
//   "unsafe path \"../etc/passwd\" in archive: '..' component".
// Non-printable bytes in the echoed path are escaped so the error stays one line.
absl::StatusOr<std::string> NormalizeEntryPath(std::string_view path);

// Whether a symlink at `link_path` (normalized) pointing to `target` stays inside the tree:
// `target` must be relative and, resolved lexically against link_path's directory, must never
// climb above the root. kInvalidArgument naming the link otherwise.
absl::Status CheckSymlinkTarget(std::string_view link_path, std::string_view target);

// `path` in double quotes with control characters and quotes escaped, for one-line error
// messages: as EscapeForTerminal, and also `"` and `\` backslash-escaped and LF, CR, tab as
// \n, \r, \t.
std::string QuotePath(std::string_view path);

// `text` made safe to print on a terminal, whoever wrote it: C0 controls and DEL become \xNN
// (except LF and tab when `keep_newlines`), each byte that does not begin a strictly valid UTF-8
// sequence becomes \xNN, and code points that could disguise the line (C1 controls,
// U+200B-U+200F, U+2028-U+202E, U+2060-U+2069, U+FEFF) become \uXXXX. All else, other valid
// UTF-8 included, is kept. The one place that decides what a terminal may be shown.
std::string EscapeForTerminal(std::string_view text, bool keep_newlines);

// Whether EscapeForTerminal(text, false) keeps `text` as it is: strictly valid UTF-8 without C0
// controls, DEL, C1 controls or the disguising code points above. For names that are printed
// raw wherever they go (a site's name in its signed checkpoints).
bool IsPlainText(std::string_view text);

}  // namespace bunker::capsule

#endif  // BUNKER_CAPSULE_PATHS_H_
