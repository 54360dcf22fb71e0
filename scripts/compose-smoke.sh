#!/usr/bin/env bash
# Compose smoke test: the whole fleet under a fan-out benchmark, with faults.
#
#   scripts/compose-smoke.sh                 # full run
#   scripts/compose-smoke.sh --cluster-only  # only: build nats image, 3-node cluster up, check, down
#
# Steps: build images (scripts/build-images.sh) -> start nats1..3 and wait for
# a 3-node JetStream meta cluster -> start 2 dispatchers + 3 workers -> run
#   bin/jetflow bench fanout --nats-url <all three host ports> --n N --external
# on the host -> while it runs, `docker kill` nats3 and one worker, later
# `docker start` nats3 again -> wait for the bench (bounded) -> require
# completed == N, lost == 0, duplicates == 0 in its JSON line and exit 0.
# The compose project "jetflow" is always torn down (down -v --remove-orphans).
#
# Exits 0 with "SKIPPED: ..." when no docker engine / compose is usable.
#
# Environment:
#   JETFLOW_SMOKE_N              fan-out size                      (10000)
#   JETFLOW_SMOKE_BENCH_TIMEOUT  seconds allowed for the bench     (660; the bench gives up at 10m)
#   JETFLOW_SMOKE_FAULT_AFTER    seconds into the bench to kill    (3)
#   JETFLOW_SMOKE_RESTART_AFTER  seconds after the kill to restart nats3 (15)
#   JETFLOW_SMOKE_SKIP_BUILD=1   use the images and bin/jetflow already built
#   JETFLOW_SMOKE_CLI            host jetflow CLI binary           (bin/jetflow)
#   JETFLOW_SMOKE_KEEP=1         leave the fleet running (no teardown) for debugging
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROJECT=jetflow
N=${JETFLOW_SMOKE_N:-10000}
BENCH_TIMEOUT=${JETFLOW_SMOKE_BENCH_TIMEOUT:-660}
FAULT_AFTER=${JETFLOW_SMOKE_FAULT_AFTER:-3}
RESTART_AFTER=${JETFLOW_SMOKE_RESTART_AFTER:-15}
WORKERS=3
DISPATCHERS=2
CLI=${JETFLOW_SMOKE_CLI:-$ROOT/bin/jetflow}
HOST_URLS=nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224

cluster_only=0
case ${1:-} in
  "") ;;
  --cluster-only) cluster_only=1 ;;
  -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
  *) echo "usage: $0 [--cluster-only]" >&2; exit 2 ;;
esac

log()  { printf '[smoke %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
fail() { printf '[smoke] FAIL: %s\n' "$*" >&2; exit 1; }
skip() { printf 'SKIPPED: %s\n' "$*"; exit 0; }

# --- preconditions -----------------------------------------------------------
command -v docker >/dev/null 2>&1 || skip "no docker engine (docker CLI not found)"
timeout 20 docker info >/dev/null 2>&1 || skip "no docker engine (docker info failed or timed out)"
if timeout 20 docker compose version >/dev/null 2>&1; then
  DC=(docker compose)
elif command -v docker-compose >/dev/null 2>&1 && timeout 20 docker-compose version >/dev/null 2>&1; then
  DC=(docker-compose)
else
  skip "no docker engine with compose (neither 'docker compose' nor 'docker-compose' works)"
fi
DC+=(-p "$PROJECT" -f "$ROOT/docker-compose.yml")
command -v python3 >/dev/null 2>&1 || fail "python3 is required (JSON checks)"
log "compose command: ${DC[*]}"

# Refuse to touch a fleet somebody is using: teardown deletes its volumes.
existing=$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT")
[ -z "$existing" ] || fail "compose project '$PROJECT' already has containers; stop it first: ${DC[*]} down -v"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/jetflow-smoke.XXXXXX")
BENCH_PID=
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$BENCH_PID" ] && kill -0 "$BENCH_PID" 2>/dev/null; then
    kill "$BENCH_PID" 2>/dev/null; wait "$BENCH_PID" 2>/dev/null
  fi
  if [ "$rc" -ne 0 ]; then
    timeout 60 "${DC[@]}" logs --no-color --tail 200 >"$WORK/compose.log" 2>&1
    log "last jetflow service log lines:"
    grep -E '^(dispatcher|worker)[-_]' "$WORK/compose.log" | tail -n 15 >&2
    log "failure artifacts kept in $WORK (compose.log, bench.out, bench.err)"
  fi
  if [ "${JETFLOW_SMOKE_KEEP:-0}" = 1 ]; then
    log "JETFLOW_SMOKE_KEEP=1: leaving project '$PROJECT' running"
  else
    log "teardown: ${DC[*]} down -v --remove-orphans"
    timeout 180 "${DC[@]}" down -v --remove-orphans >"$WORK/down.log" 2>&1 ||
      { log "teardown failed:"; cat "$WORK/down.log" >&2; }
  fi
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

# cluster_ok: all three nodes (monitor ports 8222-8224) agree on one meta
# leader, the meta cluster has 3 peers, and the leader sees both followers
# current. Prints a one-line summary.
cluster_ok() {
  python3 - <<'EOF'
import json, sys, urllib.request
views = []
for port in (8222, 8223, 8224):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/jsz", timeout=2) as r:
            views.append(json.load(r).get("meta_cluster", {}))
    except Exception as e:
        print(f"port {port}: {e}"); sys.exit(1)
leaders = {m.get("leader") for m in views}
leader = next(iter(leaders))
# The leader's own view is the one whose replica list does not name the leader.
lv = next((m for m in views if leader not in {p.get("name") for p in m.get("replicas", [])}), {})
ok = (len(leaders) == 1 and bool(leader) and all(m.get("cluster_size") == 3 for m in views)
      and len(lv.get("replicas", [])) == 2 and all(p.get("current") for p in lv["replicas"]))
print(f"leader={leader} size={lv.get('cluster_size')} "
      f"followers={[(p.get('name'), 'current' if p.get('current') else 'behind') for p in lv.get('replicas', [])]}")
sys.exit(0 if ok else 1)
EOF
}

# wait_for <seconds> <description> <command...>
wait_for() {
  local secs=$1 what=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >"$WORK/wait.out" 2>&1; do
    [ $SECONDS -lt $deadline ] || { cat "$WORK/wait.out" >&2; fail "timed out after ${secs}s waiting for $what"; }
    sleep 1
  done
  log "ok: $what ($(tail -n1 "$WORK/wait.out"))"
}

# settled: exactly DISPATCHERS dispatcher and WORKERS worker containers are
# running, each continuously up for >= SETTLE seconds. Start-up crashes are
# tolerated (restart: unless-stopped); a crash loop never settles.
SETTLE=10
settled() {
  local pair svc n ids id started age restarts=0
  for pair in "dispatcher:$DISPATCHERS" "worker:$WORKERS"; do
    svc=${pair%%:*} n=${pair#*:}
    ids=$(cids "$svc" --filter status=running)
    [ "$(printf '%s' "$ids" | grep -c .)" -eq "$n" ] || { echo "$svc: not $n running"; return 1; }
    for id in $ids; do
      started=$(docker inspect -f '{{.State.StartedAt}}' "$id") || return 1
      age=$(( $(date +%s) - $(date -d "$started" +%s) ))
      [ "$age" -ge "$SETTLE" ] || { echo "$svc $id up only ${age}s"; return 1; }
      restarts=$((restarts + $(docker inspect -f '{{.RestartCount}}' "$id")))
    done
  done
  echo "dispatcher x$DISPATCHERS, worker x$WORKERS up >= ${SETTLE}s; restarts so far: $restarts"
}

# --- build -------------------------------------------------------------------
if [ "${JETFLOW_SMOKE_SKIP_BUILD:-0}" = 1 ]; then
  log "skipping image build (JETFLOW_SMOKE_SKIP_BUILD=1)"
else
  target=all; [ $cluster_only = 1 ] && target=nats
  log "building images: scripts/build-images.sh $target"
  timeout 1200 "$ROOT/scripts/build-images.sh" "$target"
  rc=$?
  [ $rc -eq 3 ] && fail "jetflow binaries missing (cmd/dispatcher, cmd/worker, cmd/jetflow); see errors above"
  [ $rc -eq 0 ] || fail "scripts/build-images.sh exited $rc"
fi

# --- NATS cluster --------------------------------------------------------------
log "starting nats1 nats2 nats3"
timeout 120 "${DC[@]}" up -d nats1 nats2 nats3 >"$WORK/up.log" 2>&1 ||
  { cat "$WORK/up.log" >&2; fail "compose up (nats) failed"; }
wait_for 60 "3-node JetStream meta cluster" cluster_ok

if [ $cluster_only = 1 ]; then
  log "PASS (cluster only)"
  exit 0
fi

# --- jetflow services ------------------------------------------------------------
[ -x "$CLI" ] || fail "$CLI not found or not executable (run scripts/build-images.sh)"
log "starting dispatcher x$DISPATCHERS and worker x$WORKERS"
timeout 120 "${DC[@]}" up -d --scale "dispatcher=$DISPATCHERS" --scale "worker=$WORKERS" >"$WORK/up.log" 2>&1 ||
  { cat "$WORK/up.log" >&2; fail "compose up (jetflow services) failed"; }
wait_for 120 "jetflow services settled (no crash loop)" settled

# --- benchmark with faults ---------------------------------------------------------
log "bench: jetflow bench fanout --n $N --external (timeout ${BENCH_TIMEOUT}s)"
timeout --kill-after=10 "$BENCH_TIMEOUT" "$CLI" bench fanout \
  --nats-url "$HOST_URLS" --n "$N" --external >"$WORK/bench.out" 2>"$WORK/bench.err" &
BENCH_PID=$!

faults="none (bench ended before injection)"
sleep "$FAULT_AFTER"
if kill -0 "$BENCH_PID" 2>/dev/null; then
  nats3=$(cids nats3)
  victim=$(cids worker | head -n1)
  [ -n "$nats3" ] && [ -n "$victim" ] || fail "cannot find nats3 / worker containers to kill"
  log "fault: docker kill nats3 ($nats3) and worker ($victim)"
  timeout 30 docker kill "$nats3" "$victim" >/dev/null || fail "docker kill failed"
  faults="killed nats3 and 1 of $WORKERS workers"
  # Bring nats3 back while the bench is still running (it must catch up).
  for _ in $(seq "$RESTART_AFTER"); do kill -0 "$BENCH_PID" 2>/dev/null || break; sleep 1; done
  log "fault: docker start nats3 ($nats3)"
  timeout 30 docker start "$nats3" >/dev/null || fail "docker start nats3 failed"
  faults="$faults; restarted nats3"
else
  log "WARNING: bench finished within ${FAULT_AFTER}s; no faults injected (raise JETFLOW_SMOKE_N)"
fi

wait "$BENCH_PID"; bench_rc=$?; BENCH_PID=
[ $bench_rc -ne 124 ] && [ $bench_rc -ne 137 ] || fail "bench timed out after ${BENCH_TIMEOUT}s"
log "bench exited $bench_rc; stderr tail:"; tail -n 5 "$WORK/bench.err" >&2

# --- verdict -----------------------------------------------------------------------
python3 - "$WORK/bench.out" "$N" "$bench_rc" "$faults" <<'EOF' || exit 1
import json, sys
path, n, rc, faults = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
res = None
for line in open(path, encoding="utf-8", errors="replace"):
    line = line.strip()
    if line.startswith("{"):
        try:
            res = json.loads(line)
        except ValueError:
            pass
if not isinstance(res, dict):
    print(f"[smoke] FAIL: no JSON object on bench stdout (exit {rc})", file=sys.stderr); sys.exit(1)
need = ("completed", "lost", "duplicates", "wall_s", "children_per_s")
missing = [k for k in need if k not in res]
if missing:
    print(f"[smoke] FAIL: bench JSON lacks {missing}: {res}", file=sys.stderr); sys.exit(1)
print(f"n={n} completed={res['completed']} lost={res['lost']} duplicates={res['duplicates']} "
      f"wall_s={res['wall_s']} children_per_s={res['children_per_s']} faults=[{faults}]")
problems = []
if res["completed"] != n: problems.append(f"completed {res['completed']} != {n}")
if res["lost"] != 0: problems.append(f"lost={res['lost']}")
if res["duplicates"] != 0: problems.append(f"duplicates={res['duplicates']}")
if rc != 0: problems.append(f"bench exit status {rc}")
if problems:
    print("[smoke] FAIL: " + "; ".join(problems), file=sys.stderr); sys.exit(1)
EOF

# nats3 should have rejoined and caught up by now.
wait_for 60 "cluster healthy again after the faults" cluster_ok
log "PASS"
