"""Checkers for a chaos run's history: pure functions over plain data, no processes.

A history is a list of operations (dicts), each with
  id      unique op id (int; reads have ids too but never reach the log)
  kind    'bank' | 'append' | 'write' | 'cas' | 'read' | 'readbank' | 'readlist'
  args    tuple of ints: bank (from, to, amount); append (list,); write (reg, value);
          cas (reg, old, new); read (reg,); readbank (barrier,); readlist (list, barrier)
  t0, t1  monotonic invoke and completion times (t1 None while unknown)
  status  'ok' | 'fail' | 'unknown'
  result  what the node answered: the CAS/bank result (1 took effect, 2 did not, None unknown),
          the register value, the balances, the list
  node    the node that served it
The final state of each node is parsed from chaosnode's `dump`.
"""

ACCOUNTS = 5
INITIAL_BALANCE = 100
LISTS = 8
REGS = 3
WRITES = ("bank", "append", "write", "cas")


def parse_dump(text):
    """chaosnode's dump -> dict(seq, bal, reg, lists, ops=[(id, res)])."""
    d = {"lists": {}}
    for line in text.splitlines():
        f = line.split()
        if not f:
            continue
        if f[0] == "seq":
            d["seq"] = (int(f[1]), int(f[2]), f[3])
        elif f[0] == "bal":
            d["bal"] = [int(x) for x in f[1:]]
        elif f[0] == "reg":
            d["reg"] = [int(x) for x in f[1:]]
        elif f[0] == "list":
            d["lists"][int(f[1])] = [int(x) for x in f[2:]]
        elif f[0] == "ops":
            d["ops"] = [tuple(int(y) for y in x.split(":")) for x in f[1:]]
    return d


def divergence(dumps):
    """Where the applied histories of the nodes (name -> parsed dump) first differ, or None."""
    names = sorted(dumps)
    ref = dumps[names[0]]["ops"]
    for n in names[1:]:
        other = dumps[n]["ops"]
        for i in range(min(len(ref), len(other))):
            if ref[i] != other[i]:
                return ("%s and %s differ at applied op #%d: %s vs %s (ops before: %s)" %
                        (names[0], n, i, ref[i], other[i], ref[max(0, i - 3):i]))
        if len(ref) != len(other):
            return ("%s applied %d ops, %s applied %d (one is a prefix of the other)" %
                    (names[0], len(ref), n, len(other)))
    seqs = {n: dumps[n]["seq"] for n in names}
    if len(set(seqs.values())) != 1:
        return "same ops but different hash chains: %s" % seqs
    for n in names[1:]:
        for k in ("bal", "reg", "lists"):
            if dumps[n][k] != dumps[names[0]][k]:
                return "%s and %s differ in %s: %s vs %s" % (names[0], n, k, dumps[names[0]][k],
                                                              dumps[n][k])
    return None


def check_writes(history, final):
    """Every ok write applied exactly once, no failed write applied, and the final state equals
    the replay of the applied ops in log order (so the state machine applied each atomically and
    the results it returned are the ones the log order implies). Returns a list of problems."""
    problems = []
    byid = {op["id"]: op for op in history}
    order = [i for i, _ in final["ops"]]
    seen = {}
    for pos, i in enumerate(order):
        if i in seen:
            problems.append("op %d applied twice (applied ops #%d and #%d): %s" %
                            (i, seen[i], pos, describe(byid.get(i))))
        seen.setdefault(i, pos)
    for op in history:
        if op["kind"] not in WRITES:
            continue
        if op["status"] == "ok" and op["id"] not in seen:
            problems.append("acknowledged write lost: %s" % describe(op))
        elif op["status"] == "fail" and op["id"] in seen:
            problems.append("refused write took effect (applied op #%d): %s" %
                            (seen[op["id"]], describe(op)))
    # Replay.
    bal = [INITIAL_BALANCE] * ACCOUNTS
    reg = [0] * REGS
    lists = {k: [] for k in range(LISTS)}
    for i, res in final["ops"]:
        op = byid.get(i)
        if op is None:
            problems.append("applied op %d was never issued" % i)
            continue
        a = op["args"]
        if op["kind"] == "bank":
            took = bal[a[0]] >= a[2]
            if took:
                bal[a[0]] -= a[2]
                bal[a[1]] += a[2]
        elif op["kind"] == "append":
            lists[a[0]].append(i)
            took = True
        elif op["kind"] == "write":
            reg[a[0]] = a[1]
            took = True
        elif op["kind"] == "cas":
            took = reg[a[0]] == a[1]
            if took:
                reg[a[0]] = a[2]
        else:
            problems.append("applied op %d is a read: %s" % (i, describe(op)))
            continue
        want = 1 if took else 2
        if res != want:
            problems.append("op %d recorded result %d, the log order implies %d: %s" %
                            (i, res, want, describe(op)))
        if op["status"] == "ok" and op["result"] in (1, 2) and op["result"] != want:
            problems.append("op %d answered result %d, the log order implies %d: %s" %
                            (i, op["result"], want, describe(op)))
    if bal != final["bal"]:
        problems.append("balances %s, the replay gives %s" % (final["bal"], bal))
    if reg != final["reg"]:
        problems.append("registers %s, the replay gives %s" % (final["reg"], reg))
    for k in range(LISTS):
        if lists[k] != final["lists"].get(k, []):
            problems.append("list %d differs from the replay" % k)
    if sum(final["bal"]) != ACCOUNTS * INITIAL_BALANCE:
        problems.append("final bank total %d" % sum(final["bal"]))
    return problems


def check_reads(history, final):
    """Bank reads always see the constant total; list reads are prefixes of the final list."""
    problems = []
    total = ACCOUNTS * INITIAL_BALANCE
    for op in history:
        if op["status"] != "ok":
            continue
        if op["kind"] == "readbank":
            b = op["result"]
            if sum(b) != total or min(b) < 0:
                problems.append("bank read saw total %d (balances %s): %s" % (sum(b), b,
                                                                                describe(op)))
        elif op["kind"] == "readlist":
            got = op["result"]
            fin = final["lists"].get(op["args"][0], [])
            if fin[:len(got)] != got:
                k = next((j for j in range(len(got)) if j >= len(fin) or fin[j] != got[j]),
                         len(got))
                problems.append("list %d read is not a prefix of the final list: differs at "
                                "position %d (read %s, final %s): %s" %
                                (op["args"][0], k, got[k:k + 3], fin[k:k + 3], describe(op)))
    return problems


def describe(op):
    if op is None:
        return "(unknown op)"
    t1 = "%.3f" % op["t1"] if op["t1"] is not None else "-"
    return "#%d %s%s on %s [%.3f, %s] %s -> %s" % (op["id"], op["kind"], tuple(op["args"]),
                                                   op.get("node"), op["t0"], t1, op["status"],
                                                   op["result"])


# --- linearizability of one register (Wing & Gong, with Lowe's cache) -------------------------

class _Entry:
    __slots__ = ("op", "bit", "call", "match", "prev", "next", "required")


def _step(state, op):
    """(ok, new state) of applying op to the register."""
    k, a = op["kind"], op["args"]
    if k == "write":
        return True, a[1]
    if k == "cas":
        took = state == a[1]
        r = op["result"] if op["status"] == "ok" else None
        if r in (1, 2) and took != (r == 1):
            return False, state
        return True, a[2] if took else state
    if k == "read":
        return state == op["result"], state
    raise ValueError(k)


def linearizable(ops, init=0, budget=5_000_000):
    """Is the register history `ops` linearizable? ok operations must take effect between invoke
    and completion; unknown ones may take effect at any time after invoke, or never; failed ones
    are excluded by the caller. Returns (True, None), (False, explanation) or (None, note) when
    the search budget ran out."""
    events = []
    entries = []
    for n, op in enumerate(ops):
        c = _Entry()
        c.op, c.bit, c.call, c.match = op, 1 << n, True, None
        c.required = op["status"] == "ok"
        entries.append(c)
        events.append((op["t0"], 0, n, c))
        if c.required:
            r = _Entry()
            r.op, r.bit, r.call, r.match, r.required = op, c.bit, False, None, True
            c.match = r
            events.append((op["t1"], 1, n, r))
    events.sort(key=lambda e: (e[0], e[1], e[2]))
    head = _Entry()
    head.prev = None
    prev = head
    for _, _, _, e in events:
        prev.next = e
        e.prev = prev
        prev = e
    prev.next = None

    def lift(e):
        e.prev.next = e.next
        if e.next is not None:
            e.next.prev = e.prev
        m = e.match
        if m is not None:
            m.prev.next = m.next
            if m.next is not None:
                m.next.prev = m.prev

    def unlift(e):
        m = e.match
        if m is not None:
            m.prev.next = m
            if m.next is not None:
                m.next.prev = m
        e.prev.next = e
        if e.next is not None:
            e.next.prev = e

    required = sum(1 for e in entries if e.required)
    state, linearized = init, 0
    stack, cache = [], set()
    entry = head.next
    steps = 0
    deepest = (0, None)
    while required > 0:
        steps += 1
        if steps > budget:
            return None, "search budget of %d steps ran out" % budget
        if entry is not None and entry.call:
            ok, new = _step(state, entry.op)
            if ok:
                lin = linearized | entry.bit
                key = (lin, new)
                if key not in cache:
                    cache.add(key)
                    stack.append((entry, state))
                    state, linearized = new, lin
                    lift(entry)
                    if entry.required:
                        required -= 1
                    if len(stack) > deepest[0]:
                        deepest = (len(stack), _first_return(head.next))
                    entry = head.next
                    continue
            entry = entry.next
            continue
        # A completion whose operation is not linearized yet (or the end): backtrack.
        if not stack:
            return False, ("no linearization; the search got furthest with %d ops linearized, "
                           "then could not place %s" % (deepest[0], describe(deepest[1])))
        e, state = stack.pop()
        linearized &= ~e.bit
        unlift(e)
        if e.required:
            required += 1
        entry = e.next
    return True, None


def _first_return(e):
    while e is not None and e.call:
        e = e.next
    return e.op if e is not None else None


def check_registers(history):
    problems, notes = [], []
    for r in range(REGS):
        ops = [op for op in history
               if op["kind"] in ("write", "cas", "read") and op["args"][0] == r
               and (op["status"] == "ok" or (op["status"] == "unknown" and op["kind"] != "read"))]
        ok, why = linearizable(ops)
        if ok is False:
            problems.append("register %d is not linearizable (%d ops): %s" % (r, len(ops), why))
        elif ok is None:
            notes.append("register %d: linearizability not decided: %s" % (r, why))
    return problems, notes
