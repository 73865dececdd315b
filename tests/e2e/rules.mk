# Multi-process tests on 127.0.0.1. kvnode runs one Raft node per process over an in-memory
# key-value state machine (the runtime without SQLite); test_runtime.py drives clusters of it.

KVNODE := $(BUILD)/tests/kvnode
$(KVNODE): tests/e2e/kvnode.c $(LIBS_io)
	@mkdir -p $(dir $@)
	$(CC) $(ASAN_CFLAGS) -o $@ $< $(LIBS_io) $(ASAN_LDFLAGS) $(LDLIBS)

TEST_DEPS  += $(KVNODE)
TEST_PROGS += tests/e2e/test_runtime.py

# SQL-level tests: Python's sqlite3 loads the release extension (an ASan build would need
# LD_PRELOAD of the ASan runtime in an uninstrumented interpreter).
TEST_DEPS  += $(BUILD)/walraft.so
TEST_PROGS += tests/e2e/test_sql.py
TEST_PROGS += tests/e2e/test_sqlite3_shell.py

# LD_PRELOAD shim for the power-cut scenarios of test_sql.py: records what a power cut would lose
# of a node's Raft files. Preloaded into /usr/bin/python3, so built without sanitizers.
POWERCUT_SHIM := $(BUILD)/tests/powercut_shim.so
$(POWERCUT_SHIM): tests/e2e/powercut_shim.c
	@mkdir -p $(dir $@)
	$(CC) $(WARN) -D_GNU_SOURCE -O2 -fPIC -shared -o $@ $< -ldl -lpthread

TEST_DEPS += $(POWERCUT_SHIM)

# A soak of the bank scenario of test_sql.py on SQL nodes (SIGKILL, SIGSTOP and leader transfers
# under a stream of transfers) for DURATION seconds; here any error code besides the expected
# ones (not the leader, outcome unknown, a killed node) fails it too. SEED replays the choices.
.PHONY: chaos-sql
chaos-sql: $(BUILD)/walraft.so $(POWERCUT_SHIM)
	CHAOS_SECS=$(DURATION) WALRAFT_STRICT=1 ONLY=bank $(if $(SEED),WALRAFT_SEED=$(SEED)) \
		BUILD=$(abspath $(BUILD)) /usr/bin/python3 tests/e2e/test_sql.py
