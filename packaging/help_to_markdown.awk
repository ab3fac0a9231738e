# Turns one `capsule ... --help` text (cli/context.cc PrintHelp, or a command's own usage text)
# into markdown for lowdown: the usage lines as a literal block, paragraphs as text, options
# as a list, indented lines as literal blocks. Every character markdown gives a
# meaning to is escaped, so help text renders as written.
# Variables: heading (markdown heading line to start with, may be empty).

function esc(s) {
  gsub(/\\/, "\\\\", s)
  gsub(/[][`*_<>|{}#!]/, "\\\\&", s)
  # A line starting like a list item or a block quote stays text.
  if (s ~ /^([-+]( |$)|[0-9]+[.)]( |$)|=+$)/) s = "\\" s
  return s
}
# esc() for text inside a line (no list-item protection: it does not start one).
function esc_inline(s) {
  gsub(/\\/, "\\\\", s)
  gsub(/[][`*_<>|{}#!]/, "\\\\&", s)
  return s
}
function flush_code() {
  if (ncode > 0) {
    print ""
    for (i = 1; i <= ncode; i++) print "    " code[i]
    print ""
    ncode = 0
  }
}
BEGIN {
  if (heading != "") { print heading; print "" }
  section = "usage"; ncode = 0; item = ""
}
section == "usage" {
  if ($0 ~ /^Usage: /) { code[++ncode] = substr($0, 8); next }
  if ($0 ~ /^ +/ && ncode > 0) { sub(/^ +/, ""); code[++ncode] = $0; next }
  flush_code(); section = "text"
}
/^(Options|Subcommands|Commands):$/ {
  flush_code()
  section = ($0 == "Options:") ? "options" : "list"
  print ""; print "*" substr($0, 1, length($0) - 1) "*"; print ""
  next
}
section == "options" && /^  -/ {
  if (item != "") print item
  line = substr($0, 3)
  if (line ~ /^-h, --help/) { flag = "-h, --help"; rest = substr(line, 11) }
  else if (length(line) > 22 && substr(line, 23, 1) == " ") {
    flag = substr(line, 1, 22); rest = substr(line, 24)
  } else {
    # A flag wider than the column: its value name (FILE, N, a|b) is not a lowercase word.
    n = split(line, w, " ")
    flag = w[1]; k = 2
    if (n >= 2 && w[2] !~ /^[a-z(]+$/) { flag = flag " " w[2]; k = 3 }
    rest = ""
    for (j = k; j <= n; j++) rest = rest (j > k ? " " : "") w[j]
  }
  sub(/ +$/, "", flag); sub(/^ +/, "", rest)
  split(flag, f, " ")
  if (flag ~ /^-h,/) term = "**-h**, **--help**"
  else term = "**" esc(f[1]) "**" (f[2] != "" ? " *" esc(f[2]) "*" : "")
  item = "- " term ": " esc(rest)
  next
}
# An option's text goes on, wrapped, on lines indented to its column (25 spaces).
section == "options" && item != "" && /^                         [^ ]/ {
  line = $0; sub(/^ +/, "", line)
  item = item (item ~ /: $/ ? "" : " ") esc_inline(line)
  next
}
item != "" { print item; item = "" }
section == "list" && /^  [a-z]/ {
  name = $1; rest = $0; sub(/^ +[^ ]+ +/, "", rest)
  print "- **" esc(name) "**: " esc(rest)
  next
}
/^$/ { flush_code(); print ""; if (section != "usage") section = "text"; next }
/^ +/ { if (section == "text" || section == "list" || section == "options") { code[++ncode] = substr($0, 1); next } }
{ flush_code(); section = "text"; print esc($0) }
END { if (item != "") print item; flush_code() }
