#!/usr/bin/env bash
# Installs everything autopilot-mysql's demo and tests need on a fresh Debian machine, and does
# nothing (in a few seconds) when it is all there already:
#   1. Debian packages: MariaDB, Galera, mariabackup, HAProxy, socat, iproute2, iptables ...
#   2. The Consul agent and the MinIO server, built from their Go modules at pinned versions
#      into a cache directory outside the repository ($APM_CACHE, default ~/.cache/autopilot-mysql).
#   3. The Python virtual environment .venv with the package and its test tools.
# Run as root (the test bed creates network namespaces). Safe to run again at any time.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${APM_CACHE:-$HOME/.cache/autopilot-mysql}
bin="$cache/bin"

# Pinned versions. Changing one rebuilds that tool (the binary name carries the version).
# Consul's version lives in tools/consul/go.mod (with every dependency's hash in go.sum).
CONSUL_VERSION=$(awk '{for (i = 1; i < NF; i++) if ($i == "github.com/hashicorp/consul")
                        {print $(i + 1); exit}}' "$repo/tools/consul/go.mod")
if [ -z "$CONSUL_VERSION" ]; then
  log "cannot read Consul's version from tools/consul/go.mod"; exit 1
fi
# MinIO publishes no semver tags; this is the module proxy's pseudo-version of its last release.
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c

log() { printf '[setup] %s\n' "$*" >&2; }
t0=$(date +%s)

if [ "$(id -u)" != 0 ]; then
  log "run me as root: the test bed needs network namespaces and apt-get needs root"; exit 1
fi

# --- 1. Debian packages ---------------------------------------------------------------------
packages=(mariadb-server mariadb-client galera-4 mariadb-backup haproxy socat iproute2 iptables
          procps psmisc rsync lsof zstd python3-venv keepalived gettext-base)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  # Keep the package's own mariadb service from starting: our supervisor owns mysqld.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
    remove_policy=1
  fi
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  [ "${remove_policy:-0}" = 1 ] && rm -f /usr/sbin/policy-rc.d
fi
# A mariadb started by the package (on machines without a policy-rc.d) would hold port 3306
# and the default socket; the test bed never uses it, so stop it.
if pgrep -x mariadbd >/dev/null && [ -e /run/mysqld/mysqld.pid ]; then
  log "stopping the Debian package's own mariadb service (not ours)"
  kill "$(cat /run/mysqld/mysqld.pid)" 2>/dev/null || true
fi

# --- 2. Consul and MinIO from their Go modules ------------------------------------------------
mkdir -p "$bin"
export GOTOOLCHAIN=local
if [ ! -x "$bin/consul-$CONSUL_VERSION" ]; then
  log "building Consul $CONSUL_VERSION (first time only, a few minutes)"
  # tools/consul/go.mod and go.sum pin every module and hash (-mod=readonly: nothing is
  # re-resolved). consul-awsauth is a pseudo-version the checksum database does not hold; its
  # hash is pinned in go.sum instead.
  (cd "$repo/tools/consul" && GONOSUMDB=github.com/hashicorp/consul-awsauth \
     go build -mod=readonly -trimpath -o "$bin/consul-$CONSUL_VERSION.tmp" .)
  mv "$bin/consul-$CONSUL_VERSION.tmp" "$bin/consul-$CONSUL_VERSION"
fi
ln -sfn "consul-$CONSUL_VERSION" "$bin/consul"
if [ ! -x "$bin/minio-$MINIO_VERSION" ]; then
  log "building MinIO $MINIO_VERSION (first time only, several minutes)"
  gobin=$(mktemp -d)
  GOBIN="$gobin" go install -trimpath "github.com/minio/minio@$MINIO_VERSION"
  mv "$gobin/minio" "$bin/minio-$MINIO_VERSION"
  rm -rf "$gobin"
fi
ln -sfn "minio-$MINIO_VERSION" "$bin/minio"
# The project's own checkers, rebuilt when their sources change: dockercheck parses
# docker/Dockerfile, docker-compose.yml and deploy/swarm with the reference parsers (BuildKit,
# compose-go), as there is no Docker engine here; kubecheck decodes deploy/kubernetes strictly
# into the Kubernetes API types, as there is no cluster.
build_checker() {
  local name=$1 hash
  hash=$(cat "$repo/tools/$name/"{go.mod,go.sum,main.go} | sha256sum | cut -c1-12)
  if [ ! -x "$bin/$name-$hash" ]; then
    log "building $name"
    (cd "$repo/tools/$name" && go build -mod=readonly -trimpath -o "$bin/$name-$hash" .)
  fi
  ln -sfn "$name-$hash" "$bin/$name"
}
build_checker dockercheck
build_checker kubecheck

# --- 3. Python virtual environment ---------------------------------------------------------------
venv="$repo/.venv"
stamp="$venv/.setup-stamp"
want=$(cat "$repo/setup.cfg" "$repo/pyproject.toml" | sha256sum | cut -c1-16)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "creating the Python virtual environment in .venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q -e "$repo[test]"
  echo "$want" > "$stamp"
fi

log "ready in $(( $(date +%s) - t0 )) s: consul=$bin/consul minio=$bin/minio venv=$venv"
