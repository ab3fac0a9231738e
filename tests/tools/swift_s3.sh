#!/usr/bin/env bash
# Starts and stops a real S3 server for Bunker's tests and benchmarks: OpenStack Swift 2.30
# (Debian 12 packages swift swift-proxy swift-object swift-container swift-account python3-swift
# memcached) with its s3api middleware and tempauth, one replica on a plain folder under DIR,
# on free loopback ports.
#
#   swift_s3.sh start DIR   writes the configuration under DIR, starts the servers, waits until
#                           the S3 endpoint answers; prints nothing on success
#   swift_s3.sh env DIR     prints `export AWS_ENDPOINT_URL=... AWS_ACCESS_KEY_ID=...
#                           AWS_SECRET_ACCESS_KEY=... AWS_REGION=...` for the running server
#   swift_s3.sh stop DIR    stops every process `start` started (and only those)
#   swift_s3.sh check       exit 0 if the packages are installed, else 77 naming what is missing
#
# DIR/log/access.log receives the proxy's access log, one line per S3 request (method, path,
# status, bytes sent among the fields), for tests and benchmarks that count requests.
# The credentials are the fixed test identity of tempauth (access key "test:tester", secret
# "testing"); the server listens on 127.0.0.1 only. Nothing is written outside DIR.
set -euo pipefail

readonly PACKAGES=(swift swift-proxy swift-object swift-container swift-account python3-swift memcached)
readonly ACCESS_KEY="test:tester"
readonly SECRET_KEY="testing"
readonly REGION="us-east-1"

die() { echo "swift_s3: $*" >&2; exit 1; }

check() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
      missing+=("$p")
    fi
  done
  if [ ${#missing[@]} -ne 0 ]; then
    echo "swift_s3: missing Debian packages: ${missing[*]} (scripts/install-deps.sh installs them)" >&2
    return 77
  fi
  command -v curl >/dev/null 2>&1 || { echo "swift_s3: curl not on PATH" >&2; return 77; }
  command -v memcached >/dev/null 2>&1 || { echo "swift_s3: memcached not on PATH" >&2; return 77; }
  command -v swift-ring-builder >/dev/null 2>&1 || { echo "swift_s3: swift-ring-builder not on PATH" >&2; return 77; }
  return 0
}

# Six distinct free loopback ports (bound then released; a race with another process taking one
# in between shows as a start failure, not as a wrong server).
free_ports() {
  python3 - <<'PY'
import socket
socks = []
for _ in range(6):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
PY
}

write_config() {
  local dir=$1 proxy=$2 account=$3 container=$4 object=$5 memcache=$6 accesslog=$7 user
  user=$(id -un)
  mkdir -p "$dir/etc" "$dir/srv/d1" "$dir/run" "$dir/log"
  cat >"$dir/etc/swift.conf" <<CONF
[swift-hash]
swift_hash_path_suffix = bunker-test
swift_hash_path_prefix = bunker-test
[storage-policy:0]
name = Policy-0
default = yes
[swift-constraints]
max_file_size = 1099511627776
CONF
  local common="[DEFAULT]
bind_ip = 127.0.0.1
workers = 0
user = $user
swift_dir = $dir/etc
devices = $dir/srv
mount_check = false
log_level = WARNING
log_address = /nonexistent-bunker-no-syslog
"
  printf '%sbind_port = %s\n[pipeline:main]\npipeline = account-server\n[app:account-server]\nuse = egg:swift#account\n' \
    "$common" "$account" >"$dir/etc/account-server.conf"
  printf '%sbind_port = %s\n[pipeline:main]\npipeline = container-server\n[app:container-server]\nuse = egg:swift#container\n' \
    "$common" "$container" >"$dir/etc/container-server.conf"
  printf '%sbind_port = %s\n[pipeline:main]\npipeline = object-server\n[app:object-server]\nuse = egg:swift#object\n' \
    "$common" "$object" >"$dir/etc/object-server.conf"
  cat >"$dir/etc/proxy-server.conf" <<CONF
${common}bind_port = $proxy
[pipeline:main]
pipeline = catch_errors gatekeeper proxy-logging cache listing_formats s3api tempauth copy slo dlo proxy-logging proxy-server
[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:proxy-logging]
use = egg:swift#proxy_logging
access_log_level = INFO
access_log_udp_host = 127.0.0.1
access_log_udp_port = $accesslog
[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:$memcache
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:s3api]
use = egg:swift#s3api
location = $REGION
max_upload_part_num = 10000
[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = $SECRET_KEY .admin
[filter:copy]
use = egg:swift#copy
[filter:slo]
use = egg:swift#slo
max_manifest_segments = 10000
[filter:dlo]
use = egg:swift#dlo
CONF
  # Runs one server with swift.conf read from $dir/etc instead of /etc/swift.
  cat >"$dir/etc/run_server.py" <<'PY'
import sys
from swift.common import utils
utils.set_swift_dir(sys.argv[1])
from swift.common import storage_policy
storage_policy.reload_storage_policies()
from swift.common.wsgi import run_wsgi
kwargs = {}
if sys.argv[3] == "object-server":
    from swift.obj import server
    kwargs["global_conf_callback"] = server.global_conf_callback
sys.exit(run_wsgi(sys.argv[2], sys.argv[3], verbose=True, **kwargs))
PY
  # The proxy's access log (one syslog datagram per request) into log/access.log, so tests and
  # benchmarks can count requests and bytes.
  cat >"$dir/etc/access_log.py" <<'PY'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", int(sys.argv[1])))
with open(sys.argv[2], "ab", buffering=0) as out:
    while True:
        data = s.recv(65536)
        out.write(data.rstrip(b"\0").rstrip(b"\n") + b"\n")
PY
  # The three rings in one Python process (swift-ring-builder create/add/rebalance per ring is
  # nine interpreter starts, about 4 s of a 7 s start).
  cat >"$dir/etc/make_rings.py" <<'PY'
import sys
from swift.common.ring import RingBuilder
for spec in sys.argv[2:]:
    name, port = spec.split("=")
    builder = RingBuilder(0, 1, 0)
    builder.add_dev({"region": 1, "zone": 1, "ip": "127.0.0.1", "port": int(port),
                     "device": "d1", "weight": 1})
    builder.rebalance()
    builder.get_ring().save("%s/%s.ring.gz" % (sys.argv[1], name))
PY
  /usr/bin/python3 "$dir/etc/make_rings.py" "$dir/etc" "account=$account" "container=$container" \
    "object=$object" >/dev/null || die "could not build the rings"
  local ring
  for ring in account container object; do
    [ -f "$dir/etc/$ring.ring.gz" ] || die "could not build the $ring ring"
  done
}

spawn() {
  local dir=$1 name=$2
  shift 2
  # setsid: a process group of its own, so a test runner's signals do not reach it and `stop`
  # can end it and anything it forks.
  setsid "$@" </dev/null >"$dir/log/$name.log" 2>&1 &
  echo "$!" >"$dir/run/$name.pid"
}

start() {
  local dir=$1
  check || exit $?
  [ -e "$dir/run/endpoint" ] && die "$dir already holds a running server (stop it first)"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  local ports proxy account container object memcache accesslog
  ports=$(free_ports)
  read -r proxy account container object memcache accesslog <<<"$ports"
  write_config "$dir" "$proxy" "$account" "$container" "$object" "$memcache" "$accesslog"
  : >"$dir/log/access.log"
  spawn "$dir" accesslog /usr/bin/python3 "$dir/etc/access_log.py" "$accesslog" "$dir/log/access.log"
  local mc_user=()
  [ "$(id -u)" -eq 0 ] && mc_user=(-u root)
  spawn "$dir" memcached memcached -l 127.0.0.1 -p "$memcache" -U 0 "${mc_user[@]}"
  local s
  for s in account container object proxy; do
    spawn "$dir" "$s" /usr/bin/python3 "$dir/etc/run_server.py" "$dir/etc" "$dir/etc/$s-server.conf" "$s-server"
  done
  echo "http://127.0.0.1:$proxy" >"$dir/run/endpoint"
  # Ready when every server answers HTTP (any status: an unsigned request to the proxy is a 404).
  local i port ready
  for i in $(seq 1 300); do
    ready=1
    for port in "$account" "$container" "$object" "$proxy"; do
      if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/" 2>/dev/null || true)" = 000 ]; then
        ready=0
        break
      fi
    done
    [ $ready = 1 ] && return 0
    for s in accesslog memcached account container object proxy; do
      if ! kill -0 "$(cat "$dir/run/$s.pid")" 2>/dev/null; then
        echo "swift_s3: the $s server exited; its log:" >&2
        tail -n 20 "$dir/log/$s.log" >&2 || true
        stop "$dir"
        exit 1
      fi
    done
    sleep 0.1
  done
  stop "$dir"
  die "the S3 endpoint did not answer within 30 s (logs were in $dir/log)"
}

# alive PID: the process exists and is not a zombie (the servers are reparented when `start`
# returns, and whoever reaps them may take a second: kill -0 alone waits for that).
alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat:0:1}" != Z ]
}

stop() {
  local dir=$1 f pid
  [ -d "$dir/run" ] || return 0
  for f in "$dir"/run/*.pid; do
    [ -e "$f" ] || continue
    pid=$(cat "$f")
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  done
  for f in "$dir"/run/*.pid; do
    [ -e "$f" ] || continue
    pid=$(cat "$f")
    local i
    for i in $(seq 1 50); do
      alive "$pid" || break
      sleep 0.05
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$f"
  done
  rm -f "$dir/run/endpoint"
}

env_of() {
  local dir=$1
  [ -f "$dir/run/endpoint" ] || die "no server running in $dir (run: $0 start $dir)"
  echo "export AWS_ENDPOINT_URL=$(cat "$dir/run/endpoint") AWS_ACCESS_KEY_ID='$ACCESS_KEY'" \
       "AWS_SECRET_ACCESS_KEY='$SECRET_KEY' AWS_REGION=$REGION"
}

case "${1:-}" in
  start) [ $# -eq 2 ] || die "usage: $0 start DIR"; start "$2" ;;
  stop)  [ $# -eq 2 ] || die "usage: $0 stop DIR"; stop "$2" ;;
  env)   [ $# -eq 2 ] || die "usage: $0 env DIR"; env_of "$2" ;;
  check) check ;;
  *) die "usage: $0 start|stop|env DIR, or $0 check" ;;
esac
