# Fault injection on 127.0.0.1 (tests/chaos/): clusters of chaosnode processes (one Raft node per
# process over an in-memory bank / append / register state machine) under kill -9, pauses,
# partitions, transfers, membership changes and wiped followers; the runner checks that nothing
# acknowledged is lost, that nothing refused took effect, that registers are linearizable and
# that every node applied the same history.
#
#   make chaos                       a bounded run (a few seeds, about 5 minutes; part of make test)
#   make chaos-long DURATION=3600    a soak: seeds one after another for DURATION seconds
#   make chaos SEED=7                replays one seed's fault schedule (timing still varies)
#   CHAOS_BUG=ack-early make chaos   a deliberate bug in chaosnode: the run must fail

CHAOSNODE := $(BUILD)/tests/chaosnode
$(CHAOSNODE): tests/chaos/chaosnode.c $(LIBS_io)
	@mkdir -p $(dir $@)
	$(CC) $(ASAN_CFLAGS) -o $@ $< $(LIBS_io) $(ASAN_LDFLAGS) $(LDLIBS)

DURATION ?= 3600

.PHONY: chaos chaos-long
chaos: $(CHAOSNODE)
	BUILD=$(abspath $(BUILD)) tests/chaos/ci.sh $(if $(SEED),--seed $(SEED))

chaos-long: $(CHAOSNODE)
	BUILD=$(abspath $(BUILD)) /usr/bin/python3 tests/chaos/chaos.py --soak $(DURATION)

TEST_DEPS  += $(CHAOSNODE)
TEST_PROGS += tests/chaos/ci.sh
