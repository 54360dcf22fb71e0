#!/usr/bin/env python3
"""Look at the compose fleet's NATS cluster through its monitoring ports.

Only the Python standard library; reads http://127.0.0.1:8222-8224 (nodes
n1, n2, n3 of docker-compose.yml). Used by scripts/compose-smoke.sh, and handy
by hand:

  scripts/fleet-probe.py leaders                 # every stream: leader, followers, lag
  scripts/fleet-probe.py leader KV_jetflow_instances   # prints e.g. "n2 nats2 8223"
  scripts/fleet-probe.py cluster                 # exit 0 iff the 3-node meta cluster is healthy
  scripts/fleet-probe.py caught-up [STREAM...]   # exit 0 iff every replica is current, lag 0
  scripts/fleet-probe.py conns jetflow-worker    # per-connection message counts (JSON)
  scripts/fleet-probe.py consumer JETFLOW_TASKS worker_noop

Subcommands used only by the smoke test: failover, verdict.
"""
import json
import os
import re
import sys
import time
import urllib.request

# compose service <-> NATS server name <-> host monitoring port
NODES = [("nats1", "n1", 8222), ("nats2", "n2", 8223), ("nats3", "n3", 8224)]
JETFLOW_STREAMS = ["JETFLOW_TRIGGERS", "JETFLOW_EVENTS", "JETFLOW_TASKS", "JETFLOW_DLQ",
                   "KV_jetflow_definitions", "KV_jetflow_instances", "KV_jetflow_data",
                   "KV_jetflow_effects"]


def get(port, path, timeout=2.0):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return json.load(r)


def streams_view(port, consumers=False):
    """{stream name: stream detail} as one node sees it (account $G)."""
    q = "/jsz?accounts=true&streams=true" + ("&consumers=true" if consumers else "")
    out = {}
    for acc in get(port, q).get("account_details") or []:
        for s in acc.get("stream_detail") or []:
            out[s["name"]] = s
    return out


def self_leader(stream, nodes=NODES):
    """The node that reports itself leader of stream, or None."""
    for svc, name, port in nodes:
        try:
            s = streams_view(port).get(stream)
        except Exception:
            continue
        if s and (s.get("cluster") or {}).get("leader") == name:
            return (svc, name, port)
    return None


def leader_view(stream):
    """(leader node, stream detail from the leader's own view) or (None, None)."""
    n = self_leader(stream)
    if not n:
        return None, None
    try:
        return n, streams_view(n[2]).get(stream)
    except Exception:
        return None, None


def cmd_cluster(_args):
    views = []
    for _, name, port in NODES:
        try:
            views.append((name, get(port, "/jsz").get("meta_cluster") or {}))
        except Exception as e:
            print(f"{name} (port {port}): {e}")
            return 1
    leaders = {m.get("leader") for _, m in views}
    leader = next(iter(leaders))
    lv = next((m for n, m in views if n == leader), {})
    reps = lv.get("replicas") or []
    ok = (len(leaders) == 1 and bool(leader) and all(m.get("cluster_size") == 3 for _, m in views)
          and len(reps) == 2 and all(p.get("current") and not p.get("offline") for p in reps))
    print(f"meta leader={leader} size={lv.get('cluster_size')} followers="
          f"{[(p.get('name'), 'current' if p.get('current') else 'behind') for p in reps]}")
    return 0 if ok else 1


def cmd_leader(args):
    n = self_leader(args[0])
    if not n:
        print(f"no node reports itself leader of {args[0]}", file=sys.stderr)
        return 1
    print(*n)
    return 0


def replica_problems(stream, s):
    c = (s or {}).get("cluster") or {}
    reps = c.get("replicas") or []
    probs = []
    if len(reps) != 2:
        probs.append(f"{stream}: {len(reps)} followers")
    for r in reps:
        if r.get("offline") or not r.get("current") or r.get("lag", 0):
            probs.append(f"{stream}: {r.get('name')} current={r.get('current')} "
                         f"lag={r.get('lag', 0)} offline={r.get('offline', False)}")
    return probs


def cmd_caught_up(args):
    probs, leaders = [], []
    for stream in args or JETFLOW_STREAMS:
        n, s = leader_view(stream)
        if not n:
            probs.append(f"{stream}: no leader")
            continue
        leaders.append(f"{stream}@{n[1]}")
        probs += replica_problems(stream, s)
    if probs:
        print("; ".join(probs))
        return 1
    print(f"all replicas current: {' '.join(leaders)}")
    return 0


def cmd_leaders(_args):
    print(f"{'STREAM':26} {'LEADER':7} {'MSGS':>9}  FOLLOWERS")
    names = set()
    views = {}
    for _, name, port in NODES:
        try:
            views[name] = streams_view(port)
            names |= set(views[name])
        except Exception as e:
            print(f"# {name} (port {port}) unreachable: {e}")
    for stream in sorted(names):
        lead = next((n for n, v in views.items()
                     if ((v.get(stream) or {}).get("cluster") or {}).get("leader") == n), None)
        s = views[lead][stream] if lead else next(v[stream] for v in views.values() if stream in v)
        reps = ", ".join(f"{r['name']}{'' if r.get('current') else ' (behind)'}"
                         f"{' lag=' + str(r['lag']) if r.get('lag') else ''}"
                         f"{' OFFLINE' if r.get('offline') else ''}"
                         for r in (s.get("cluster") or {}).get("replicas") or [])
        print(f"{stream:26} {lead or '-':7} {s['state']['messages']:>9}  {reps}")
    return 0


def conns(name):
    out = []
    for _, node, port in NODES:
        try:
            cs = get(port, "/connz?limit=1024").get("connections") or []
        except Exception:
            continue
        for c in cs:
            if c.get("name") == name:
                out.append({"node": node, "ip": c.get("ip"), "cid": c.get("cid"),
                            "in_msgs": c.get("in_msgs", 0), "out_msgs": c.get("out_msgs", 0)})
    return out


def cmd_conns(args):
    print(json.dumps(conns(args[0])))
    return 0


def cmd_consumer(args):
    stream, cons = args
    n, _ = leader_view(stream)
    if not n:
        print(f"no leader for {stream}", file=sys.stderr)
        return 1
    s = streams_view(n[2], consumers=True).get(stream) or {}
    for c in s.get("consumer_detail") or []:
        if c["name"] == cons:
            d = c.get("delivered") or {}
            a = c.get("ack_floor") or {}
            print(json.dumps({"stream": stream, "consumer": cons, "delivered_consumer_seq": d.get("consumer_seq"),
                              "delivered_stream_seq": d.get("stream_seq"), "ack_floor_stream_seq": a.get("stream_seq"),
                              "num_ack_pending": c.get("num_ack_pending"), "num_redelivered": c.get("num_redelivered"),
                              "num_pending": c.get("num_pending"), "leader": (c.get("cluster") or {}).get("leader")}))
            return 0
    print(f"no consumer {cons} on {stream}", file=sys.stderr)
    return 1


PROGRESS = re.compile(rb"(\d+)/(\d+) finished")


def progress(path):
    try:
        with open(path, "rb") as f:
            m = PROGRESS.findall(f.read())
    except OSError:
        return None
    return int(m[-1][0]) if m else None


def cmd_failover(args):
    """failover KILLED_NODE STREAM T0 BENCH_ERR BENCH_PID OUT_JSON

    From T0 (epoch seconds of the kill) until the bench exits (at most 300 s):
    when a surviving node first reports itself leader of STREAM, and how the
    bench's progress counter (children finished) moved: the longest interval
    without progress that began within 15 s of the kill, and when it ended.
    """
    killed, stream, t0, err_path, pid, out = args[0], args[1], float(args[2]), args[3], int(args[4]), args[5]
    survivors = [n for n in NODES if n[1] != killed]
    res = {"killed": killed, "stream": stream, "new_leader": None, "leader_elected_after_s": None}
    samples = []  # (t, finished) each time the counter rose
    def alive():
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False
    while time.time() - t0 < 300 and alive():
        now = time.time()
        p = progress(err_path)
        if p is not None and (not samples or p > samples[-1][1]):
            samples.append((now, p))
        if res["new_leader"] is None:
            n = self_leader(stream, survivors)
            if n:
                res["new_leader"] = n[1]
                res["leader_elected_after_s"] = round(time.time() - t0, 2)
        time.sleep(0.2)
    end = time.time()
    # longest no-progress gap starting within 15 s after the kill
    best = (0.0, None, None)
    pts = [(t, c) for t, c in samples] + [(end, None)]
    for (ta, _), (tb, _) in zip(pts, pts[1:]):
        if ta - t0 <= 15 and tb - ta > best[0]:
            best = (tb - ta, ta, tb if tb != end else None)
    first = samples[0][1] if samples else None
    res.update({
        "finished_at_kill": first,
        "longest_stall_s": round(best[0], 1),
        "stall_from_s": round(best[1] - t0, 1) if best[1] else None,
        "progress_resumed_after_s": round(best[2] - t0, 1) if best[2] else None,
        "note": "progress is sampled from the bench's once-a-second counter: stalls under ~1.5 s are noise",
    })
    with open(out, "w") as f:
        json.dump(res, f)
    return 0


def cmd_verdict(args):
    path, n, rc, faults = args[0], int(args[1]), int(args[2]), args[3]
    res = None
    for line in open(path, encoding="utf-8", errors="replace"):
        line = line.strip()
        if line.startswith("{"):
            try:
                res = json.loads(line)
            except ValueError:
                pass
    if not isinstance(res, dict):
        print(f"[smoke] FAIL: no JSON object on bench stdout (exit {rc})", file=sys.stderr)
        return 1
    need = ("completed", "lost", "duplicates", "wall_s", "children_per_s")
    missing = [k for k in need if k not in res]
    if missing:
        print(f"[smoke] FAIL: bench JSON lacks {missing}: {res}", file=sys.stderr)
        return 1
    print(f"n={n} completed={res['completed']} lost={res['lost']} duplicates={res['duplicates']} "
          f"wall_s={res['wall_s']} children_per_s={res['children_per_s']} "
          f"latency_ms={res.get('latency_ms')} faults=[{faults}]")
    problems = []
    if res["completed"] != n:
        problems.append(f"completed {res['completed']} != {n}")
    if res["lost"] != 0:
        problems.append(f"lost={res['lost']}")
    if res["duplicates"] != 0:
        problems.append(f"duplicates={res['duplicates']}")
    if rc != 0:
        problems.append(f"bench exit status {rc}")
    if problems:
        print("[smoke] FAIL: " + "; ".join(problems), file=sys.stderr)
        return 1
    return 0


CMDS = {"cluster": cmd_cluster, "leader": cmd_leader, "leaders": cmd_leaders,
        "caught-up": cmd_caught_up, "conns": cmd_conns, "consumer": cmd_consumer,
        "failover": cmd_failover, "verdict": cmd_verdict}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in CMDS:
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(2)
    sys.exit(CMDS[sys.argv[1]](sys.argv[2:]))
