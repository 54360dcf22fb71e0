#!/usr/bin/env bash
# Compose smoke test: the whole secured fleet under a fan-out benchmark, with
# faults, and the denials of its NATS permissions.
#
#   scripts/compose-smoke.sh                 # full run (builds images first)
#   scripts/compose-smoke.sh --cluster-only  # only: build nats image, 3-node cluster up, check, down
#
# Steps:
#  1. build images and bin/jetflow (scripts/build-images.sh), the fleet's
#     secrets (scripts/fleet-secrets.sh: TLS, one NATS user per role, task
#     token key) and the denial test (go test -c -tags compose ./security);
#  2. start nats1..3, wait for a 3-node JetStream meta cluster; provision
#     streams, buckets and consumers from the host as admin;
#  3. start 2 dispatchers + 3 workers (each with its role's credentials and
#     --no-provision), wait until every one of them logs that it is running;
#     run the denial test against the cluster (TestFleetDenials: each role's
#     forbidden operations are refused as permission violations; no client
#     without a certificate of the CA connects);
#  4. run on the host, as admin
#       bin/jetflow bench fanout --nats-url <all three host ports> --n N --external
#     and, once a share of the children has finished, find the NATS node that
#     LEADS the instance bucket's stream (KV_jetflow_instances) and
#     `docker kill` it together with one worker; print how long until a
#     surviving node leads the stream and how long the bench's progress
#     stalled; `docker start` the node again RESTART_AFTER seconds later;
#  5. require completed == N, lost == 0, duplicates == 0 (bench JSON) and bench
#     exit 0; wait until the restarted node is a current replica of every
#     jetflow stream again;
#  6. scale check: `up -d --scale worker=5`, a small fan-out, and require
#     every one of the 5 workers to have taken tasks (per-connection counts
#     from the NATS monitoring endpoint /connz).
# The compose project "jetflow" is always torn down (down -v --remove-orphans).
#
# Exits 0 with a "SKIPPED: ..." line when no docker engine / compose is usable.
#
# Environment:
#   JETFLOW_SMOKE_N              fan-out size                                  (10000)
#   JETFLOW_SMOKE_BENCH_TIMEOUT  the bench's --timeout, seconds                (360; a healthy run takes 70-140)
#   JETFLOW_SMOKE_FAULT_AT       kill when this share of children finished     (0.2)
#   JETFLOW_SMOKE_RESTART_AFTER  seconds after the kill to restart the node    (15)
#   JETFLOW_SMOKE_SCALE_N        fan-out size of the scale check; 0 skips it   (2000)
#   JETFLOW_SMOKE_SKIP_BUILD=1   use the images already built (bin/jetflow is built if missing)
#   JETFLOW_SMOKE_CLI            host jetflow CLI binary                       (bin/jetflow)
#   JETFLOW_SMOKE_KEEP=1         leave the fleet running (no teardown) for debugging
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROJECT=jetflow
N=${JETFLOW_SMOKE_N:-10000}
BENCH_TIMEOUT=${JETFLOW_SMOKE_BENCH_TIMEOUT:-360}
FAULT_AT=${JETFLOW_SMOKE_FAULT_AT:-0.2}
RESTART_AFTER=${JETFLOW_SMOKE_RESTART_AFTER:-15}
SCALE_N=${JETFLOW_SMOKE_SCALE_N:-2000}
WORKERS=3
DISPATCHERS=2
SCALED_WORKERS=5
CLI=${JETFLOW_SMOKE_CLI:-$ROOT/bin/jetflow}
HOST_URLS=tls://127.0.0.1:4222,tls://127.0.0.1:4223,tls://127.0.0.1:4224
SECRETS=$ROOT/deploy/secrets
DENIALS=$ROOT/bin/fleet-denials.test
PROBE=$ROOT/scripts/fleet-probe.py
LEADER_STREAM=KV_jetflow_instances
T_START=$SECONDS

cluster_only=0
case ${1:-} in
  "") ;;
  --cluster-only) cluster_only=1 ;;
  -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
  *) echo "usage: $0 [--cluster-only]" >&2; exit 2 ;;
esac

log()  { printf '[smoke %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
fail() { printf '[smoke] FAIL: %s\n' "$*" >&2; exit 1; }
skip() { printf 'SKIPPED: compose smoke test: %s\n' "$*"; exit 0; }

# --- preconditions -----------------------------------------------------------
command -v docker >/dev/null 2>&1 || skip "no docker engine (docker CLI not found)"
timeout 20 docker info >/dev/null 2>&1 || skip "no docker engine (docker info failed or timed out)"
if timeout 20 docker compose version >/dev/null 2>&1; then
  DC=(docker compose)
elif command -v docker-compose >/dev/null 2>&1 && timeout 20 docker-compose version >/dev/null 2>&1; then
  DC=(docker-compose)
else
  skip "docker works but neither 'docker compose' nor 'docker-compose' does"
fi
DC+=(-p "$PROJECT" -f "$ROOT/docker-compose.yml")
command -v python3 >/dev/null 2>&1 || fail "python3 is required (JSON checks)"
command -v go >/dev/null 2>&1 || fail "go is required (builds the images' binaries and bin/jetflow)"
log "compose command: ${DC[*]}"

# Refuse to touch a fleet somebody is using: teardown deletes its volumes.
existing=$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT")
[ -z "$existing" ] || fail "compose project '$PROJECT' already has containers; stop it first: ${DC[*]} down -v"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/jetflow-smoke.XXXXXX")
BENCH_PID=
MON_PID=
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for p in $BENCH_PID $MON_PID; do
    if kill -0 "$p" 2>/dev/null; then kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; fi
  done
  if [ "$rc" -ne 0 ] && [ $cluster_only = 0 ]; then
    timeout 120 "${DC[@]}" logs --no-color --timestamps >"$WORK/compose.log" 2>&1
    log "last jetflow service log lines:"
    grep -E '^(jetflow[-_])?(dispatcher|worker)[-_]' "$WORK/compose.log" | tail -n 15 >&2
    log "failure artifacts kept in $WORK (compose.log, bench.out, bench.err)"
  fi
  if [ "${JETFLOW_SMOKE_KEEP:-0}" = 1 ]; then
    log "JETFLOW_SMOKE_KEEP=1: leaving project '$PROJECT' running"
  else
    log "teardown: ${DC[*]} down -v --remove-orphans"
    timeout 180 "${DC[@]}" down -v --remove-orphans >"$WORK/down.log" 2>&1 ||
      { log "teardown failed:"; cat "$WORK/down.log" >&2; }
  fi
  log "wall time: $((SECONDS - T_START))s (exit $rc)"
  [ "$rc" -ne 0 ] || rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# container ids of one compose service (works with compose v1 and v2 labels)
cids() {
  docker ps -q --filter "label=com.docker.compose.project=$PROJECT" \
               --filter "label=com.docker.compose.service=$1" "${@:2}"
}

# wait_for <seconds> <description> <command...>
wait_for() {
  local secs=$1 what=$2; shift 2
  local deadline=$((SECONDS + secs)) t0=$SECONDS
  until "$@" >"$WORK/wait.out" 2>&1; do
    [ $SECONDS -lt $deadline ] || { cat "$WORK/wait.out" >&2; fail "timed out after ${secs}s waiting for $what"; }
    sleep 1
  done
  log "ok after $((SECONDS - t0))s: $what ($(tail -n1 "$WORK/wait.out"))"
}

# ready <dispatchers> <workers>: exactly that many dispatcher and worker
# containers are running, none restarted in the last SETTLE seconds, and each
# has logged that it runs (a dispatcher logs it after provisioning every
# stream, bucket and consumer). Start-up crashes are tolerated (restart:
# unless-stopped); a crash loop never gets ready.
SETTLE=5
ready() {
  local pair svc n ids id started age restarts=0
  for pair in "dispatcher:$1" "worker:$2"; do
    svc=${pair%%:*} n=${pair#*:}
    ids=$(cids "$svc" --filter status=running)
    [ "$(printf '%s' "$ids" | grep -c .)" -eq "$n" ] || { echo "$svc: not $n running"; return 1; }
    for id in $ids; do
      started=$(docker inspect -f '{{.State.StartedAt}}' "$id") || return 1
      age=$(( $(date +%s) - $(date -d "$started" +%s) ))
      [ "$age" -ge "$SETTLE" ] || { echo "$svc $id up only ${age}s"; return 1; }
      # grep -c, not -q: -q would stop reading early, and with pipefail the
      # SIGPIPE of `docker logs` would count as "not ready". The logs are
      # read from 2s before StartedAt: Docker records StartedAt after the
      # process started, and a quick one logs "running" before that.
      docker logs --since "$(( $(date -d "$started" +%s) - 2 ))" "$id" 2>&1 | grep -c "\"message\":\"$svc running\"" >/dev/null ||
        { echo "$svc $id has not logged '$svc running' yet"; return 1; }
      restarts=$((restarts + $(docker inspect -f '{{.RestartCount}}' "$id")))
    done
  done
  echo "dispatcher x$1, worker x$2 running; restarts so far: $restarts"
}

# progress: children finished so far, from the bench's stderr progress line
progress() { tr '\r' '\n' <"$WORK/bench.err" | sed -n 's/.* \([0-9][0-9]*\)\/[0-9]* finished.*/\1/p' | tail -n1; }

# --- build -------------------------------------------------------------------
if [ "${JETFLOW_SMOKE_SKIP_BUILD:-0}" = 1 ]; then
  log "skipping image build (JETFLOW_SMOKE_SKIP_BUILD=1)"
else
  target=all; [ $cluster_only = 1 ] && target=nats
  log "building images: scripts/build-images.sh $target"
  t0=$SECONDS
  timeout 1200 "$ROOT/scripts/build-images.sh" "$target"
  rc=$?
  [ $rc -eq 3 ] && fail "jetflow binaries missing (cmd/dispatcher, cmd/worker, cmd/jetflow); see errors above"
  [ $rc -eq 0 ] || fail "scripts/build-images.sh exited $rc"
  log "images built in $((SECONDS - t0))s"
fi
if [ $cluster_only = 0 ] && [ ! -x "$CLI" ]; then
  [ -z "${JETFLOW_SMOKE_CLI:-}" ] || fail "JETFLOW_SMOKE_CLI=$CLI is not an executable"
  log "building $CLI (go build ./cmd/jetflow)"
  (cd "$ROOT" && CGO_ENABLED=0 go build -o "$CLI" ./cmd/jetflow) || fail "go build ./cmd/jetflow failed"
fi

log "fleet secrets: scripts/fleet-secrets.sh"
JETFLOW_CLI=$CLI "$ROOT/scripts/fleet-secrets.sh" || fail "scripts/fleet-secrets.sh failed"
# The host's jetflow CLI connects as admin (bench, provision, dlq), with
# replies on the operator's inbox so that dispatchers may answer its stats.
export NATS_NKEY=$SECRETS/admin.nk NATS_CA=$SECRETS/ca.pem NATS_CERT=$SECRETS/admin.pem NATS_KEY=$SECRETS/admin-key.pem
if [ $cluster_only = 0 ]; then
  log "building the denial test: go test -c -tags compose ./security"
  (cd "$ROOT" && go test -c -tags compose -o "$DENIALS" ./security) || fail "go test -c -tags compose ./security failed"
fi

# --- NATS cluster --------------------------------------------------------------
log "starting nats1 nats2 nats3"
timeout 120 "${DC[@]}" up -d nats1 nats2 nats3 >"$WORK/up.log" 2>&1 ||
  { cat "$WORK/up.log" >&2; fail "compose up (nats) failed"; }
wait_for 60 "3-node JetStream meta cluster" "$PROBE" cluster

if [ $cluster_only = 1 ]; then
  log "PASS (cluster only)"
  exit 0
fi

# --- provisioning, as admin ----------------------------------------------------------
# A cluster that just formed answers some requests with timeouts: retry.
provision() {
  timeout 120 "$CLI" provision --nats-url "$HOST_URLS" --replicas 3 --worker-ack-wait 10s \
    --task-types echo,noop,sleep,fail,http --connect-timeout 10s
}
wait_for 120 "jetflow provisioned (as admin)" provision

# --- jetflow services ------------------------------------------------------------
log "starting dispatcher x$DISPATCHERS and worker x$WORKERS"
timeout 120 "${DC[@]}" up -d --scale "dispatcher=$DISPATCHERS" --scale "worker=$WORKERS" >"$WORK/up.log" 2>&1 ||
  { cat "$WORK/up.log" >&2; fail "compose up (jetflow services) failed"; }
# Dispatchers and workers only bind what provision made (--no-provision).
wait_for 150 "dispatchers and workers bound, all services running" ready "$DISPATCHERS" "$WORKERS"

# --- denials ---------------------------------------------------------------------------
log "denials: $DENIALS -test.run TestFleetDenials (each role's forbidden operations; mTLS)"
JETFLOW_FLEET_SECRETS=$SECRETS JETFLOW_FLEET_URL=tls://127.0.0.1:4222 \
  timeout 300 "$DENIALS" -test.run TestFleetDenials -test.count 1 -test.v >"$WORK/denials.out" 2>&1 ||
  { tail -n 40 "$WORK/denials.out" >&2; fail "a role may do what it must not (TestFleetDenials)"; }
log "denials: ok ($(grep -c -- '--- PASS' "$WORK/denials.out" || true) checks passed, list in the test output)"

# --- benchmark with faults ---------------------------------------------------------
log "bench: jetflow bench fanout --nats-url $HOST_URLS --n $N --external --timeout ${BENCH_TIMEOUT}s"
: >"$WORK/bench.err"
# The bench gives up after --timeout and still verifies and prints its JSON;
# the outer timeout only guards against a hang.
timeout --kill-after=10 $((BENCH_TIMEOUT + 120)) "$CLI" bench fanout --inbox-prefix _INBOX_jetflow_operator \
  --nats-url "$HOST_URLS" --n "$N" --external --timeout "${BENCH_TIMEOUT}s" >"$WORK/bench.out" 2>"$WORK/bench.err" &
BENCH_PID=$!
T_BENCH=$SECONDS

faults="none (bench ended before injection)"
fault_at=$(python3 -c "print(int($N * $FAULT_AT))")
until ! kill -0 "$BENCH_PID" 2>/dev/null || [ "$(progress)" -ge "$fault_at" ] 2>/dev/null ||
      [ $((SECONDS - T_BENCH)) -ge 120 ]; do
  sleep 0.5
done
victim_node=
if kill -0 "$BENCH_PID" 2>/dev/null; then
  read -r leader_svc leader_name leader_port < <("$PROBE" leader "$LEADER_STREAM") ||
    fail "no NATS node reports itself leader of $LEADER_STREAM"
  node=$(cids "$leader_svc")
  victim=$(cids worker | head -n1)
  [ -n "$node" ] && [ -n "$victim" ] || fail "cannot find $leader_svc / worker containers to kill"
  at=$(progress)
  log "fault at $((SECONDS - T_BENCH))s into the bench ($at/$N children finished): $leader_svc ($leader_name, port $leader_port) leads $LEADER_STREAM"
  log "fault: docker kill $leader_svc ($node) and one worker ($victim)"
  t_kill=$(date +%s.%N)
  timeout 30 docker kill "$node" "$victim" >/dev/null || fail "docker kill failed"
  victim_node=$leader_svc
  faults="killed $leader_svc (leader of $LEADER_STREAM) and 1 of $WORKERS workers at $at/$N"
  python3 "$PROBE" failover "$leader_name" "$LEADER_STREAM" "$t_kill" "$WORK/bench.err" "$BENCH_PID" "$WORK/failover.json" &
  MON_PID=$!
  # Bring the node back while the bench is still running (it must catch up).
  for _ in $(seq "$RESTART_AFTER"); do kill -0 "$BENCH_PID" 2>/dev/null || break; sleep 1; done
  log "fault: docker start $leader_svc ($node) $(python3 -c "import time; print(round(time.time() - $t_kill, 1))")s after the kill"
  timeout 30 docker start "$node" >/dev/null || fail "docker start $leader_svc failed"
  faults="$faults; restarted $leader_svc after ${RESTART_AFTER}s"
else
  log "WARNING: bench finished before $fault_at children were done; no faults injected (raise JETFLOW_SMOKE_N)"
fi

wait "$BENCH_PID"; bench_rc=$?; BENCH_PID=
[ $bench_rc -ne 124 ] && [ $bench_rc -ne 137 ] || fail "bench hung: killed after $((BENCH_TIMEOUT + 120))s"
log "bench exited $bench_rc after $((SECONDS - T_BENCH))s; stderr tail:"
tr '\r' '\n' <"$WORK/bench.err" | grep . | tail -n 3 >&2
if [ -n "$MON_PID" ]; then
  wait "$MON_PID"; MON_PID=
  python3 - "$WORK/failover.json" <<'EOF' >&2 || true
import json, sys
r = json.load(open(sys.argv[1]))
print(f"[smoke] recovery: killed {r['killed']} (leader of {r['stream']}); "
      f"new leader {r['new_leader']} reported {r['leader_elected_after_s']}s after the kill; "
      f"bench progress: {r['finished_at_kill']} finished at the kill, longest stall "
      f"{r['longest_stall_s']}s (from +{r['stall_from_s']}s), progress resumed "
      f"{r['progress_resumed_after_s']}s after the kill")
print("[smoke] recovery JSON: " + json.dumps(r))
EOF
fi
log "bench JSON: $(grep '^{' "$WORK/bench.out" | tail -n1)"

# --- verdict -----------------------------------------------------------------------
if ! python3 "$PROBE" verdict "$WORK/bench.out" "$N" "$bench_rc" "$faults"; then
  log "dead-lettered messages by reason (jetflow dlq):"
  timeout 30 "$CLI" dlq --nats-url "$HOST_URLS" 2>&1 | awk 'NR > 1 { $1 = $2 = $3 = $4 = $5 = ""; print }' |
    sed -E 's/bench-(child|fanout)-[a-z0-9]+/\1-ID/g' | sort | uniq -c | sort -rn | head -n 5 >&2
  exit 1
fi
"$PROBE" consumer JETFLOW_TASKS worker_noop >&2 || true

wait_for 60 "meta cluster healthy again after the faults" "$PROBE" cluster
[ -z "$victim_node" ] ||
  wait_for 120 "$victim_node caught up: every jetflow stream has 2 current followers" "$PROBE" caught-up

# --- scale check -------------------------------------------------------------------
if [ "$SCALE_N" -gt 0 ]; then
  log "scale: ${DC[*]} up -d --scale worker=$SCALED_WORKERS"
  timeout 120 "${DC[@]}" up -d --scale "dispatcher=$DISPATCHERS" --scale "worker=$SCALED_WORKERS" >"$WORK/up.log" 2>&1 ||
    { cat "$WORK/up.log" >&2; fail "compose up --scale worker=$SCALED_WORKERS failed"; }
  wait_for 90 "$SCALED_WORKERS workers running" ready "$DISPATCHERS" "$SCALED_WORKERS"
  # worker container IP -> name; per-connection counts before and after
  for id in $(cids worker); do
    docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}} {{.Name}}' "$id"
  done >"$WORK/workers.txt"
  "$PROBE" conns jetflow-worker >"$WORK/conns0.json"
  timeout 300 "$CLI" bench fanout --inbox-prefix _INBOX_jetflow_operator --nats-url "$HOST_URLS" --n "$SCALE_N" --external \
    >"$WORK/scale.out" 2>"$WORK/scale.err" || { cat "$WORK/scale.err" >&2; fail "scale bench failed"; }
  "$PROBE" conns jetflow-worker >"$WORK/conns1.json"
  python3 - "$WORK/workers.txt" "$WORK/conns0.json" "$WORK/conns1.json" "$WORK/scale.out" "$SCALED_WORKERS" "$SCALE_N" <<'EOF' || exit 1
import json, sys
names = dict(l.split(None, 1) for l in open(sys.argv[1]).read().split("\n") if l.strip())
before = {(c["node"], c["cid"]): c for c in json.load(open(sys.argv[2]))}
after = json.load(open(sys.argv[3]))
res = json.loads([l for l in open(sys.argv[4]) if l.startswith("{")][-1])
want, n = int(sys.argv[5]), int(sys.argv[6])
rows = []
for c in after:
    b = before.get((c["node"], c["cid"]), {"in_msgs": 0, "out_msgs": 0})
    rows.append((names.get(c["ip"], c["ip"]).strip().lstrip("/"), c["node"],
                 c["in_msgs"] - b["in_msgs"], c["out_msgs"] - b["out_msgs"]))
rows.sort()
print(f"[smoke] scale: fan-out n={n} completed={res['completed']} lost={res['lost']} "
      f"duplicates={res['duplicates']} wall_s={res['wall_s']} children_per_s={res['children_per_s']}", file=sys.stderr)
for name, node, di, do in rows:
    print(f"[smoke]   {name:24} via {node}: +{di} msgs from it (acks, results), +{do} msgs to it (tasks, replies)", file=sys.stderr)
# A noop task costs a worker at least 2 messages (ack + result): a worker
# with fewer than n/(10*want) tasks' worth did not really take work.
floor = max(10, 2 * n // (10 * want))
idle = [r[0] for r in rows if r[2] < floor]
bad = []
if len(rows) != want: bad.append(f"{len(rows)} worker connections, want {want}")
if idle: bad.append(f"workers without work (< {floor} msgs): {idle}")
if res["completed"] != n or res["lost"] or res["duplicates"]: bad.append("scale bench incorrect")
if bad:
    print("[smoke] FAIL: scale: " + "; ".join(bad), file=sys.stderr); sys.exit(1)
EOF
fi

log "PASS"
