# Benchmarks (tests/bench/): release builds only, never part of make test.
#
#   make bench         walraft against plain SQLite on this machine: one markdown table
#                      (BENCH_ARGS="--runs 7 --secs 3 --dir /data/x" to change the defaults)
#   make bench-raft    the runtime alone: 3 nodes on loopback, 1 KiB entries, 1 and 16 proposers
#   make bench-smoke   every workload once for about a second (does the harness still work?)

BENCH_BIN      := $(BUILD)/bench/bench
RAFTBENCH_BIN  := $(BUILD)/bench/raftbench
BENCH_CFLAGS   := $(REL_CFLAGS) -DSQLITE_CORE -Wno-format-truncation

$(BUILD)/bench/%.o: tests/bench/%.c tests/bench/common.h
	@mkdir -p $(dir $@)
	$(CC) $(BENCH_CFLAGS) -c $< -o $@

$(BENCH_BIN): $(BUILD)/bench/bench.o $(BUILD)/bench/common.o $(BUILD)/libwalraft.a
	$(CC) -o $@ $^ $(LDLIBS)

$(RAFTBENCH_BIN): $(BUILD)/bench/raftbench.o $(BUILD)/bench/common.o \
		$(call static,$(IO_SRC) $(CORE_SRC) $(WAL_SRC))
	$(CC) -o $@ $^ $(LDLIBS)

.PHONY: bench bench-raft bench-smoke
bench: $(BENCH_BIN)
	$(BENCH_BIN) $(BENCH_ARGS)

bench-raft: $(RAFTBENCH_BIN)
	$(RAFTBENCH_BIN) $(RAFTBENCH_ARGS)

bench-smoke: $(BENCH_BIN) $(RAFTBENCH_BIN)
	$(BENCH_BIN) --smoke
	$(RAFTBENCH_BIN) --smoke

# Diagnostics: LD_PRELOAD shim that sets TCP_NODELAY on outgoing TCP connections.
$(BUILD)/bench/nodelay_shim.so: tests/bench/nodelay_shim.c
	@mkdir -p $(dir $@)
	$(CC) $(WARN) -D_GNU_SOURCE -O2 -shared -fPIC -o $@ $< -ldl

bench-raft bench: $(BUILD)/bench/nodelay_shim.so
