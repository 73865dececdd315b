#!/usr/bin/env python3
"""Reproduces a replication stall found by chaos.py (not part of make test: it fails until the
runtime is fixed).

consensus/io/node.c keeps one snapshot stream per follower: snap_send_start() silently ignores a
request for a follower that already has a stream. The core, however, waits in RAFT_SNAPSHOT for a
RAFT_EVENT_SNAPSHOT_SENT carrying the index it asked for; when the old stream ends it reports the
old index, on_snapshot_sent() ignores it as stale, and the follower's progress stays in
RAFT_SNAPSHOT for good: the leader never sends it anything again.

Two ways in, both seen in chaos runs: the follower is removed and added again under the same
name while the old stream runs (scripted below), or the leader loses leadership while streaming
and wins it again within SNAP_ACK_TIMEOUT_MS (15 s): its fresh progress asks for a snapshot at
a newer index and the old stream, still registered, swallows the request (seen as
"sending snapshot 679 to <n3>", "now follower in term 3", "now leader in term 4", ...,
"snapshot 679 ... failed", then nothing more for n3 while the leader reports it in state 3).

Scripted scenario (3 nodes, a short trailing log):
  1. n3 is isolated; the leader n1 compacts past n3's log and starts a snapshot stream to n3,
     whose chunks are dropped (the stream waits 15 s for an acknowledgement);
  2. n3 is killed, removed, wiped and joins again under the same name (same node id): the
     leader's fresh progress for n3 asks for a snapshot at a newer index;
  3. the old stream times out with the old index; n3 never receives a snapshot or an entry.

    BUILD=build tests/chaos/repro_snapshot_stall.py     exit 0: no stall (fixed); 1: stalled
"""
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chaos  # noqa: E402


def main():
    r = chaos.Run(seed=0, nodes=3, duration=0, clients=0, keep=True)
    stalled = None
    try:
        r.bootstrap()
        n1, n2, n3 = (r.nodes[x] for x in ("n1", "n2", "n3"))
        lead = r.wait_leader(10)
        assert lead == "n1", lead
        n3.request("partition 1 1", 3)
        for i in range(300):
            n1.request("append %d %d" % (r.new_id(), i % 8), 5)
        for n in (n1, n2):
            n.request("checkpoint", 3)
        time.sleep(1.5)
        for i in range(100):
            n1.request("append %d %d" % (r.new_id(), i % 8), 5)
        for n in (n1, n2):
            n.request("checkpoint", 3)
        time.sleep(1.0)
        print("leader before the wipe:", n1.request("progress", 3))
        n3.kill()
        print("remove n3:", n1.request("remove n3", 10))
        shutil.rmtree(n3.dir, ignore_errors=True)
        for i in range(100):
            n1.request("append %d %d" % (r.new_id(), i % 8), 5)
        for n in (n1, n2):
            n.request("checkpoint", 3)
        print("n3 joins again:", n3.start("--join", n1.addr, timeout=30))
        target = int(n1.request("seq", 3).split()[1])
        deadline = time.monotonic() + 40
        seq = None
        while time.monotonic() < deadline:
            seq = n3.request("seq", 3)
            if seq and int(seq.split()[1]) >= target:
                break
            time.sleep(0.5)
        print("leader after 40 s:", n1.request("progress", 3))
        print("n3:", seq, "target", target)
        stalled = not (seq and int(seq.split()[1]) >= target)
    finally:
        r.finish()
    print("logs in", r.root)
    print("STALLED: n3 never caught up" if stalled else "no stall")
    return 1 if stalled else 0


if __name__ == "__main__":
    sys.exit(main())
