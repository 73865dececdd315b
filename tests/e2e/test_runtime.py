#!/usr/bin/env python3
"""Multi-process tests of the Raft runtime (consensus/io/) on 127.0.0.1, with kvnode processes.

Each scenario starts its own cluster in a temporary directory and kills every process it started,
by pid, whatever happens. Election timeout 500 ms, heartbeat 50 ms, unless a scenario passes its own.
"""
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import Cluster, Failure, check, free_ports, leader_of, run_tests, status, wait_for  # noqa: E402

BUILD = os.environ.get("BUILD", "build")
KVNODE = os.path.join(BUILD, "tests", "kvnode")


def start3(c, *extra):
    """n1 bootstraps, n2 and n3 join through it; returns the nodes and their ports."""
    ports = free_ports(5)
    n1 = c.node("n1", ports[0], "--bootstrap", *extra)
    wait_for("n1 to lead", lambda: n1.cmd("role") == "leader", 10)
    n2 = c.node("n2", ports[1], "--join", "127.0.0.1:%d" % ports[0], *extra)
    n3 = c.node("n3", ports[2], "--join", "127.0.0.1:%d" % ports[0], *extra)
    return [n1, n2, n3], ports


def same_history(nodes, what):
    """Every node applied the same sequence: equal (applied index, count, chained hash)."""
    leader = leader_of(nodes)
    check(leader is not None, "no leader for " + what)
    r = leader.cmd("barrier")
    check(r.startswith("ok"), "barrier on the leader: " + r)
    target = int(r.split()[1])
    for n in nodes:
        r = n.cmd("barrier")
        check(r.startswith("ok"), "barrier on %s: %s" % (n.name, r))
    for n in nodes:
        wait_for("%s to apply %d" % (n.name, target),
                 lambda n=n: status(n)["applied_index"] >= target)
    seqs = {n.name: n.cmd("seq") for n in nodes}
    check(len(set(seqs.values())) == 1, "histories differ after %s: %s" % (what, seqs))
    return leader


def test_three_nodes_replicate_and_agree():
    c = Cluster(KVNODE)
    ok = False
    try:
        nodes, _ = start3(c)
        n1 = nodes[0]
        for i in range(50):
            r = n1.cmd("put k%d v%d" % (i, i))
            check(r.startswith("ok"), "put: " + r)
        same_history(nodes, "50 puts")
        for n in nodes:
            check(n.cmd("get k49") == "val v49", "k49 on " + n.name)
        st = status(n1)
        check(len(st["nodes"]) == 3, "3 members: %s" % st["nodes"])
        check(all(p["role"] == "voter" for p in st["nodes"]), "all voters: %s" % st["nodes"])
        # A follower refuses proposals and names the leader.
        r = nodes[1].cmd("put x y")
        check(r.startswith("err 2") and "n1" in r, "follower put: " + r)
        for n in nodes:
            n.quit()
        ok = True
    finally:
        c.cleanup(ok)


def test_follower_learns_a_quiet_commit_without_waiting_for_a_heartbeat():
    """With heartbeats 1 s apart, a put that no other follows is visible on both followers within
    tens of milliseconds: the leader tells them of the commit itself (RAFT_EVENT_TELL_COMMIT),
    where they would otherwise learn it with the next heartbeat, on average half a second later."""
    c = Cluster(KVNODE)
    ok = False
    try:
        nodes, _ = start3(c, "--heartbeat-ms", "1000", "--election-ms", "2500")
        n1 = nodes[0]
        check(n1.cmd("put warm 0").startswith("ok"), "put")
        same_history(nodes, "the first put")
        worst = 0.0
        for i in range(10):
            time.sleep(0.05)
            check(n1.cmd("put q%d v%d" % (i, i)).startswith("ok"), "put q%d" % i)
            t0 = time.monotonic()
            for n in nodes[1:]:
                wait_for("q%d on %s" % (i, n.name),
                         lambda n=n: n.cmd("get q%d" % i) == "val v%d" % i, 5, 0.002)
            worst = max(worst, time.monotonic() - t0)
        check(worst < 0.25, "a quiet commit reached the followers only after %.0f ms" % (worst * 1e3))
        print("    slowest of 10 quiet commits visible on both followers: %.1f ms" % (worst * 1e3))
        for n in nodes:
            n.quit()
        ok = True
    finally:
        c.cleanup(ok)


def test_ten_thousand_proposals_from_threads_commit_in_one_order():
    c = Cluster(KVNODE)
    ok = False
    try:
        nodes, _ = start3(c)
        r = nodes[0].cmd("load 10000 8", timeout=300)
        check(r == "ok 10000 0 0", "load: " + r)
        same_history(nodes, "10,000 proposals")
        seq = nodes[1].cmd("seq").split()
        check(int(seq[2]) == 10000, "10,000 entries applied: %s" % seq)
        for n in nodes:
            n.quit()
        ok = True
    finally:
        c.cleanup(ok)


def test_single_node_commits_on_proposer_threads_and_keeps_everything():
    """A node alone in its configuration commits on the proposing threads themselves (no hand-off
    to the loop or disk thread): 8 threads at once must still give one order, every entry applied
    once, and a restart from the directory must replay the same history."""
    c = Cluster(KVNODE)
    ok = False
    try:
        port = free_ports(1)[0]
        n1 = c.node("n1", port, "--bootstrap")
        wait_for("n1 to lead", lambda: n1.cmd("role") == "leader", 10)
        r = n1.cmd("load 4000 8", timeout=300)
        check(r == "ok 4000 0 0", "load: " + r)
        check(n1.cmd("barrier").startswith("ok"), "barrier")
        seq = n1.cmd("seq")
        check(int(seq.split()[2]) == 4000, "4,000 entries applied once each: %s" % seq)
        st = status(n1)
        check(st["applied_index"] == st["commit_index"] == st["last_index"],
              "applied = committed = last: %s" % st)
        n1.quit()
        n1 = c.node("n1", port)  # restart: the state machine is rebuilt from the log
        wait_for("n1 to lead again", lambda: n1.cmd("role") == "leader", 10)
        check(n1.cmd("barrier").startswith("ok"), "barrier after restart")
        check(n1.cmd("seq") == seq, "same history after a restart: %s vs %s" % (n1.cmd("seq"), seq))
        n1.quit()
        ok = True
    finally:
        c.cleanup(ok)


def replace_leader(leader, nodes, sig=signal.SIGKILL, timeout=10):
    """Sends `sig` to the leader; returns the other nodes, the leader they elect, and the seconds
    that took."""
    leader.kill(sig)
    t0 = time.monotonic()
    rest = [n for n in nodes if n is not leader]
    new = wait_for("a new leader", lambda: leader_of(rest), timeout)
    return rest, new, time.monotonic() - t0


def kill_leader_mid_stream(*extra):
    c = Cluster(KVNODE)
    ok = False
    lazy = "--lazy-sync" in extra
    try:
        nodes, ports = start3(c, *extra)
        acked = []
        leader = nodes[0]
        held = 0
        for i in range(100):
            r = leader.cmd("put a%d %d" % (i, i))
            check(r.startswith("ok"), "put: " + r)
            acked.append("a%d" % i)
            if lazy and i % 2:
                st = status(leader)
                held += st["persisted_index"] < st["commit_index"]
        if lazy:
            # The leader's own copies of committed entries wait for its next batched sync.
            check(held > 0, "a lazy leader never held committed entries unsynced")
            print("    lazy leader: committed entries not yet durable locally in %d of 50 "
                  "samples" % held)
        # One more in flight when the leader dies: its outcome is unknown.
        leader.p.stdin.write(b"put inflight 1\n")
        leader.p.stdin.flush()
        rest, new, elapsed = replace_leader(leader, nodes)
        check(elapsed < 5, "new leader after %.1fs" % elapsed)
        for i in range(100, 150):
            r = new.cmd("put a%d %d" % (i, i))
            check(r.startswith("ok"), "put on the new leader: " + r)
            acked.append("a%d" % i)
        for n in rest:
            n.cmd("barrier")
            for k in acked:
                check(n.cmd("get " + k) == "val " + k[1:], "%s lost %s" % (n.name, k))
        # The old leader restarts from its directory (a lazy one has lost the tail it had not
        # synced), rejoins as a follower and converges.
        old = c.node("n1", ports[0], *extra)  # restart: no --bootstrap
        nodes = rest + [old]
        same_history(nodes, "after the old leader restarted")
        for k in acked:
            check(old.cmd("get " + k) == "val " + k[1:], "restarted n1 lost " + k)
        for n in nodes:
            n.quit()
        ok = True
    finally:
        c.cleanup(ok)


def test_kill_leader_mid_stream_loses_nothing_acknowledged():
    kill_leader_mid_stream()


def test_kill_lazy_leader_mid_stream_loses_nothing_acknowledged():
    """With the lazy leader sync the leader's own log lags its commits (followers made them
    durable): killing it then must lose nothing acknowledged either."""
    kill_leader_mid_stream("--lazy-sync")


def test_killed_leader_is_replaced_within_heartbeats():
    """kill -9 closes the leader's sockets, so its followers campaign within a few heartbeats
    (100 ms here) instead of an election timeout (2 s, at least). SIGSTOP closes nothing: then
    the timeout has to run out."""
    c = Cluster(KVNODE)
    ok = False
    try:
        timing = ("--election-ms", "2000", "--heartbeat-ms", "100")
        nodes, ports = start3(c, *timing)
        leader = nodes[0]
        wait_for("three voters", lambda: [p["role"] for p in status(leader)["nodes"]]
                 == ["voter"] * 3, 20)
        for i in range(20):
            check(leader.cmd("put k%d %d" % (i, i)).startswith("ok"), "put")
        rest, new, elapsed = replace_leader(leader, nodes)
        check(elapsed < 1.0, "new leader %.3f s after the kill (the timeout is 2-4 s)" % elapsed)
        print("    killed: new leader after %.3f s" % elapsed)
        check(new.cmd("put after-kill 1").startswith("ok"), "put on the new leader")

        # Stopped, not killed: the connections stay open and the survivor alone cannot win, so
        # restart the killed node first to keep a quorum once the stopped one is gone.
        old = c.node(leader.name, ports[nodes.index(leader)], *timing)
        nodes = rest + [old]
        same_history(nodes, "after the killed leader restarted")
        leader = leader_of(nodes)
        rest, new, elapsed = replace_leader(leader, nodes, signal.SIGSTOP, 15)
        check(elapsed >= 1.5, "new leader %.3f s after SIGSTOP: before the timeout" % elapsed)
        print("    stopped: new leader after %.3f s" % elapsed)
        leader.kill()
        for n in rest:
            n.quit()
        ok = True
    finally:
        c.cleanup(ok)


def test_node_down_across_compaction_catches_up_by_snapshot():
    c = Cluster(KVNODE)
    ok = False
    try:
        nodes, ports = start3(c, "--trailing", "5")
        n1, n2, n3 = nodes
        for i in range(20):
            check(n1.cmd("put b%d %d" % (i, i)).startswith("ok"), "put")
        same_history(nodes, "before n3 stops")
        n3.quit()
        for i in range(20, 300):
            check(n1.cmd("put b%d %d" % (i, i)).startswith("ok"), "put while n3 is down")
        n1.cmd("barrier")
        n2.cmd("barrier")
        for n in (n1, n2):
            r = n.cmd("checkpoint")
            check(r.startswith("ok"), "checkpoint: " + r)
        wait_for("n1 to compact", lambda: status(n1)["first_index"] > 30, 10)
        n3 = c.node("n3", ports[2], "--trailing", "5")
        nodes = [n1, n2, n3]
        same_history(nodes, "after n3 came back")
        st = status(n3)
        check(st["stats"]["snapshots_installed"] >= 1, "n3 installed a snapshot: %s" % st["stats"])
        check(n3.cmd("get b299") == "val 299", "n3 has the newest key")
        check(n3.cmd("get b0") == "val 0", "n3 has the oldest key")
        # Killed right after the install, before any checkpoint of its own: the node recorded
        # the snapshot as its log's base, so the state machine must have made the image durable
        # (io_fsm.install_end), or the entries it covers are gone after the restart.
        n3.kill()
        n3 = c.node("n3", ports[2], "--trailing", "5")
        nodes = [n1, n2, n3]
        same_history(nodes, "after n3 was killed and restarted")
        check(n3.cmd("get b0") == "val 0", "n3 kept the oldest key across the restart")
        for n in nodes:
            n.quit()
        ok = True
    finally:
        c.cleanup(ok)


def test_snapshot_overtaken_by_a_newer_one_changes_nothing():
    """A follower can receive a snapshot stream older than one it is installing: here n3 is
    installing n1's snapshot (slowly) when leadership moves to n2, whose applied floor, the index
    it labels snapshots with, is lower; n2 still sees n3's log from before the install and streams
    its own. The node must not take its log's base or its state back: with the older record the
    log no longer follows it and the node cannot restart."""
    c = Cluster(KVNODE)
    ok = False
    try:
        nodes, ports = start3(c, "--trailing", "5")
        n1, n2, n3 = nodes
        for i in range(20):
            check(n1.cmd("put o%d %d" % (i, i)).startswith("ok"), "put")
        same_history(nodes, "before n3 stops")
        n3.quit()
        for i in range(20, 150):
            check(n1.cmd("put o%d %d" % (i, i)).startswith("ok"), "put while n3 is down")
        n2.cmd("barrier")
        r = n2.cmd("checkpoint")
        check(r.startswith("ok"), "checkpoint on n2: " + r)
        low = int(r.split()[1])
        for i in range(150, 300):
            check(n1.cmd("put o%d %d" % (i, i)).startswith("ok"), "put while n3 is down")
        n1.cmd("barrier")
        r = n1.cmd("checkpoint")
        check(r.startswith("ok"), "checkpoint on n1: " + r)
        high = int(r.split()[1])
        wait_for("n1 and n2 to compact",
                 lambda: status(n1)["first_index"] > 30 and status(n2)["first_index"] > 30, 10)
        n3 = c.node("n3", ports[2], "--trailing", "5", "--install-ms", "1500")

        def n3_log():
            with open(n3.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        wait_for("n3 to receive n1's snapshot",
                 lambda: ("receiving snapshot %d" % high) in n3_log(), 10)
        check(n1.cmd("transfer n2").startswith("ok"), "transfer to n2")
        wait_for("n3 to install both snapshots",
                 lambda: ("ended after snapshot %d" % high) in n3_log()
                 or ("refusing snapshot %d" % low) in n3_log(), 15)
        log = n3_log()
        check(("receiving snapshot %d" % low) in log or ("refusing snapshot %d" % low) in log,
              "n2 streamed its snapshot %d to n3: %s" % (low, n3.log_path))
        nodes = [n1, n2, n3]
        same_history(nodes, "after both snapshots")
        st = status(n3)
        check(st["first_index"] >= high, "n3's log starts after %d: %s" % (high, st["first_index"]))
        n3.kill()
        n3 = c.node("n3", ports[2], "--trailing", "5")
        nodes = [n1, n2, n3]
        same_history(nodes, "after n3 restarted")
        for i in (0, 149, 299):
            check(n3.cmd("get o%d" % i) == "val %d" % i, "n3 has o%d" % i)
        for n in nodes:
            n.quit()
        ok = True
    finally:
        c.cleanup(ok)


def test_snapshot_refused_while_a_chunk_is_read_ends_cleanly():
    """The leader reads a snapshot ahead of the network on libuv's work pool, chunk by chunk. A
    receiver that refuses the stream while the next chunk is being read ends the stream early:
    the stream must outlive that read (the leader used to free it under the read, a
    use-after-free that the ASan-built kvnode reports). Reads take 300 ms here, so every refusal
    lands during one. Then the receiver accepts and catches up."""
    c = Cluster(KVNODE)
    ok = False
    try:
        slow = ("--trailing", "5", "--snapshot-read-ms", "300")
        nodes, ports = start3(c, "--trailing", "5")
        n1, n2, n3 = nodes
        check(n1.cmd("put a 1").startswith("ok"), "put")
        same_history(nodes, "before n3 stops")  # n3 knows its peers' addresses
        n3.quit()
        n1.quit()  # restart the leader with slow snapshot reads
        n1 = c.node("n1", ports[0], *slow)
        wait_for("a leader", lambda: leader_of([n1, n2]), 10)
        if leader_of([n1, n2]) is not n1:  # the slow reads are n1's: make it the sender
            check(n2.cmd("transfer n1").startswith("ok"), "transfer to n1")
            wait_for("n1 to lead", lambda: n1.cmd("role") == "leader", 10)
        value = "v" * 1000
        for i in range(1200):  # 1.2 MB of state: more than one 1 MiB chunk
            r = n1.cmd("put s%d %s" % (i, value))
            check(r.startswith("ok"), "put: " + r)
        for n in (n1, n2):
            n.cmd("barrier")
            check(n.cmd("checkpoint").startswith("ok"), "checkpoint")
        wait_for("n1 to compact", lambda: status(n1)["first_index"] > 30, 10)
        n3 = c.node("n3", ports[2], "--trailing", "5", "--refuse-snapshots")

        def refusals():
            with open(n1.log_path, "rb") as f:
                return f.read().count(b"failed at byte")
        wait_for("n1 to see two refused streams", lambda: refusals() >= 2, 30)
        time.sleep(0.7)  # the reads in flight at the refusals finish
        check(n1.p.poll() is None, "n1 exited (see %s)" % n1.log_path)
        check(n1.cmd("put after refusal").startswith("ok"), "n1 still leads and commits")
        n3.quit()
        n3 = c.node("n3", ports[2], "--trailing", "5")
        nodes = [n1, n2, n3]
        same_history(nodes, "after n3 accepted the snapshot")
        check(n3.cmd("get s1199") == "val " + value, "n3 has the state")
        for n in nodes:
            n.quit()
        with open(n1.log_path, "rb") as f:
            check(b"AddressSanitizer" not in f.read(), "ASan report in " + n1.log_path)
        ok = True
    finally:
        c.cleanup(ok)


def test_node_back_from_downtime_follows_a_leader_added_meanwhile():
    """n3 is down while n4 joins and takes the lead. Back, n3's configuration does not name n4:
    it must still answer n4 (at the address n4 advertised when it connected), or it never gets
    the entries that would tell it about n4, and stays behind for good."""
    c = Cluster(KVNODE)
    ok = False
    try:
        nodes, ports = start3(c)
        n1, n2, n3 = nodes
        check(n1.cmd("put a 1").startswith("ok"), "put")
        same_history(nodes, "before n3 stops")
        n3.quit()
        n4 = c.node("n4", ports[3], "--join", "127.0.0.1:%d" % ports[0])
        same_history([n1, n2, n4], "after n4 joined")
        r = n1.cmd("transfer n4")
        check(r.startswith("ok"), "transfer to n4: " + r)
        wait_for("n4 to lead", lambda: n4.cmd("role") == "leader", 10)
        for i in range(20):
            check(n4.cmd("put b%d %d" % (i, i)).startswith("ok"), "put on n4")
        n3 = c.node("n3", ports[2])
        nodes = [n1, n2, n3, n4]
        same_history(nodes, "after n3 came back")
        check(n3.cmd("get b19") == "val 19", "n3 has what n4 wrote")
        for n in nodes:
            n.quit()
        ok = True
    finally:
        c.cleanup(ok)


def test_state_machine_back_older_than_its_floor():
    """n3's state machine comes back older than the floor the node recorded for it (its state
    file replaced by an older copy). The node replays its log from the state's own index while
    the log on disk still holds those entries (io_fsm.state_index); once they are gone (the node
    caught up by snapshot since) it refuses to start and says why, instead of building on a state
    with a gap."""
    c = Cluster(KVNODE)
    ok = False
    try:
        nodes, ports = start3(c, "--trailing", "5")
        n1, n2, n3 = nodes
        state = os.path.join(c.root, "n3", "kv.state")

        def puts(lo, hi):
            for i in range(lo, hi):
                check(n1.cmd("put s%d %d" % (i, i)).startswith("ok"), "put s%d" % i)

        def saved():
            r = n3.cmd("checkpoint")
            check(r.startswith("ok"), "checkpoint on n3: " + r)
            with open(state, "rb") as f:
                return f.read()

        def restore(data):
            with open(state, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())

        puts(0, 20)
        same_history(nodes, "the first puts")
        old = saved()
        puts(20, 60)
        same_history(nodes, "more puts")
        saved()
        n3.kill()
        restore(old)
        n3 = c.node("n3", ports[2], "--trailing", "5")
        nodes = [n1, n2, n3]
        same_history(nodes, "n3 came back with an older state")  # differs without state_index
        check(n3.cmd("get s30") == "val 30", "n3 replayed what its older state lacked")

        old = saved()
        n3.quit()
        puts(60, 300)
        for n in (n1, n2):
            check(n.cmd("barrier").startswith("ok"), "barrier")
            check(n.cmd("checkpoint").startswith("ok"), "checkpoint")
        wait_for("n1 to compact", lambda: status(n1)["first_index"] > 100, 10)
        n3 = c.node("n3", ports[2], "--trailing", "5")
        nodes = [n1, n2, n3]
        same_history(nodes, "n3 caught up by snapshot")
        check(status(n3)["stats"]["snapshots_installed"] >= 1, "n3 installed a snapshot")
        n3.kill()
        restore(old)
        try:
            c.node("n3", ports[2], "--trailing", "5")
            raise Failure("n3 started on a state older than its log's base")
        except Failure as e:
            msg = str(e)
            check("err 107" in msg and "the entries in between are gone" in msg,
                  "n3's refusal says why: " + msg)
        for n in (n1, n2):
            n.quit()
        ok = True
    finally:
        c.cleanup(ok)


def test_membership_and_transfer_over_the_network():
    c = Cluster(KVNODE)
    ok = False
    try:
        nodes, ports = start3(c)
        n1, n2, n3 = nodes
        check(n1.cmd("put m 1").startswith("ok"), "put")
        # Transfer to a named node.
        r = n1.cmd("transfer n2")
        check(r.startswith("ok"), "transfer: " + r)
        wait_for("n2 to lead", lambda: n2.cmd("role") == "leader", 10)
        check(n2.cmd("put m 2").startswith("ok"), "put on n2")
        # A read replica joins and stays a non-voter.
        n4 = c.node("n4", ports[3], "--join", "127.0.0.1:%d" % ports[1], "--replica")
        nodes.append(n4)
        same_history(nodes, "after n4 joined")
        roles = {p["id"]: p["role"] for p in status(n2)["nodes"]}
        check(roles.get("n4") == "replica", "n4 is a replica: %s" % roles)
        check(n4.cmd("get m") == "val 2", "n4 reads the replicated value")
        # Remove a follower, then the leader itself (it steps down after committing it).
        check(n2.cmd("remove n3").startswith("ok"), "remove n3")
        n3.quit()
        nodes.remove(n3)
        r = n2.cmd("remove n2")
        check(r.startswith("ok"), "remove the leader: " + r)
        new = wait_for("a leader among n1", lambda: n1.cmd("role") == "leader" and n1, 10)
        check(new.cmd("put m 3").startswith("ok"), "put after the leader left")
        roles = {p["id"]: p["role"] for p in status(new)["nodes"]}
        check(set(roles) == {"n1", "n4"}, "members are n1 and n4: %s" % roles)
        for n in (n1, n2, n4):
            n.quit()
        ok = True
    finally:
        c.cleanup(ok)


if __name__ == "__main__":
    tests = [
        ("three nodes replicate and agree", test_three_nodes_replicate_and_agree),
        ("10,000 proposals from 8 threads commit in one order",
         test_ten_thousand_proposals_from_threads_commit_in_one_order),
        ("a single node commits on its proposers' threads and keeps everything",
         test_single_node_commits_on_proposer_threads_and_keeps_everything),
        ("kill -9 the leader mid-stream: nothing acknowledged is lost",
         test_kill_leader_mid_stream_loses_nothing_acknowledged),
        ("kill -9 a lazy-sync leader mid-stream: nothing acknowledged is lost",
         test_kill_lazy_leader_mid_stream_loses_nothing_acknowledged),
        ("a snapshot refused while a chunk is read ends cleanly",
         test_snapshot_refused_while_a_chunk_is_read_ends_cleanly),
        ("a snapshot overtaken by a newer one changes nothing",
         test_snapshot_overtaken_by_a_newer_one_changes_nothing),
        ("a node back from downtime follows a leader added meanwhile",
         test_node_back_from_downtime_follows_a_leader_added_meanwhile),
        ("a killed leader is replaced within heartbeats, a stopped one after the timeout",
         test_killed_leader_is_replaced_within_heartbeats),
        ("a node down across a compaction catches up by snapshot",
         test_node_down_across_compaction_catches_up_by_snapshot),
        ("a state machine back older than its floor is replayed, or refused once compacted",
         test_state_machine_back_older_than_its_floor),
        ("a follower learns a quiet commit without waiting for a heartbeat",
         test_follower_learns_a_quiet_commit_without_waiting_for_a_heartbeat),
        ("membership and leader transfer over the network",
         test_membership_and_transfer_over_the_network),
    ]
    only = os.environ.get("ONLY")
    if only:
        tests = [t for t in tests if only in t[0]]
    sys.exit(run_tests(tests))
