#!/usr/bin/env bash
# Installs the Debian 12 packages Bunker needs, skipping those already present.
# Runs apt-get only when something is missing; needs root for that.
set -euo pipefail

packages=(
  build-essential make cmake ninja-build pkg-config
  libsodium-dev libssl-dev openssl sqlite3
  capnproto libcapnp-dev
  libarchive-dev libabsl-dev libsqlite3-dev
  libgtest-dev libgmock-dev
  age tar
  xxd procps  # the audit proof scenario's leaf (tests/cli/scenarios.sh); pkill, pgrep
  iperf3 rsync gocryptfs iproute2 time bc  # the benches' peers, ss, /usr/bin/time, bc (bench/)
  libfuse3-dev fuse3
  libcurl4-openssl-dev  # the S3 client (capsule/s3_client.h)
  swift swift-proxy swift-object swift-container swift-account python3-swift memcached awscli curl  # tests/tools/swift_s3.sh, bench/s3.sh
  python3 util-linux passwd  # the JSON check, setpriv and useradd of the real-user scenarios
  lowdown dpkg-dev lintian man-db bash-completion systemd  # make package and its test
  chromium fonts-dejavu-core  # renders the audit report in its browser test (tests/report/)
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
    echo "install-deps: missing packages (${missing[*]}) and not root; run as root" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
