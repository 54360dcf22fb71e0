#!/usr/bin/env bash
# Credentials of the compose fleet, written once into deploy/secrets/
# (gitignored): `jetflow security init --tls` (one nkey user per role, a CA,
# the servers' certificate for nats1..3 and 127.0.0.1, a client certificate
# per role), a task token key file, and the cluster routes' password.
#
#   scripts/fleet-secrets.sh          # keeps existing secrets
#   scripts/fleet-secrets.sh --force  # new secrets (restart the whole fleet)
#
# Uses bin/jetflow (built here if missing). The NATS nodes mount the server
# files under /etc/nats/secrets; each jetflow container mounts only its own
# role's seed, certificate and key (docker-compose.yml).
#
# The containers of the jetflow images run as nobody (65534): the files are
# made readable by it (mode 0644; the directory stays 0700 for others on
# this host). That is a choice for a fleet on one development machine; in
# production give each process only its own files, readable by its own
# user alone.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=$ROOT/deploy/secrets
CLI=${JETFLOW_CLI:-$ROOT/bin/jetflow}

force=
case ${1:-} in
  "") ;;
  --force) force=--force ;;
  *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

if [ -z "$force" ] && [ -f "$DIR/nats-server.conf" ] && [ -f "$DIR/cluster.conf" ] && [ -f "$DIR/task-token.keys" ]; then
  # Secrets from a version whose role permissions predate the effect
  # service (workers writing jetflow_effects) are replaced.
  if grep -q 'jetflow.effect.claim' "$DIR/nats-server.conf"; then
    echo "==> $DIR exists; keeping it (--force for new secrets)" >&2
    exit 0
  fi
  echo "==> $DIR has role permissions of an earlier version; writing new secrets" >&2
  force=--force
fi
if [ ! -x "$CLI" ]; then
  echo "==> go build -o $CLI ./cmd/jetflow" >&2
  (cd "$ROOT" && CGO_ENABLED=0 go build -o "$CLI" ./cmd/jetflow)
fi
mkdir -p "$DIR"
"$CLI" security init --dir "$DIR" --server-dir /etc/nats/secrets --tls \
  --tls-hosts nats1,nats2,nats3,localhost,127.0.0.1 \
  --definitions "$ROOT/examples" --task-types echo,noop,sleep,fail,http $force >/dev/null
if ! grep -q 'jetflow.effect.claim' "$DIR/nats-server.conf"; then
  echo "==> $CLI wrote role permissions of an earlier version; rebuild it (go build -o $CLI ./cmd/jetflow)" >&2
  exit 1
fi
rm -f "$DIR/task-token.keys"
"$CLI" security token-key --file "$DIR/task-token.keys" >/dev/null

# Routes: TLS with the servers' certificate (deploy/nats/nats.conf), and a
# password, so that a client certificate of the same CA (a worker's) cannot
# join the cluster as a route.
pass=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
cat >"$DIR/cluster.conf" <<CONF
# Written by scripts/fleet-secrets.sh: the routes' credentials.
authorization {
  user: route
  password: "$pass"
}
routes: [
  "nats://route:$pass@nats1:6222"
  "nats://route:$pass@nats2:6222"
  "nats://route:$pass@nats3:6222"
]
CONF
chmod 0700 "$DIR"
chmod 0644 "$DIR"/*
chmod 0600 "$DIR/ca-key.pem" # mounted nowhere
echo "==> wrote $DIR" >&2
