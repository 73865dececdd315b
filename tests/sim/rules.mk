# The deterministic simulator of the Raft core (tests/sim/).
#
#   make sim SEEDS=N FIRST=K   runs seeds K..K+N-1 (release build), ends with "N passed, M failed"
#   make sim SEED=s TRACE=1    replays one seed, printing a trace
#   make soak                  100,000 seeds
#
# $(BUILD)/sim is built with AddressSanitizer + UBSan; $(BUILD)/sim-rel is the same code at -O2
# for seed budgets. Scenario tests (tests/unit/test_raft_*.c) link the cluster harness.

SIM_HARNESS := tests/sim/cluster.c tests/sim/drive.c
SIM_SRC     := $(SIM_HARNESS) tests/sim/main.c
# An archive rather than objects: the unit-test rule links UNIT_EXTRA_* once by name, and an
# archive is not picked up a second time by its %.o filter.
UNIT_EXTRA_raft := $(BUILD)/asan/libsim.a

$(BUILD)/asan/libsim.a: $(call asan,$(SIM_HARNESS))
	@mkdir -p $(dir $@)
	rm -f $@ && $(AR) rcs $@ $^

$(BUILD)/sim: $(call asan,$(SIM_SRC)) $(BUILD)/asan/libcore.a
	$(CC) -o $@ $^ $(ASAN_LDFLAGS) -lm

$(BUILD)/simrel/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(WARN) $(DEFS) -I. -O2 -g -MMD -MP -c $< -o $@

$(BUILD)/sim-rel: $(patsubst %.c,$(BUILD)/simrel/%.o,$(SIM_SRC) $(CORE_SRC))
	$(CC) -o $@ $^ -lm

SEEDS ?= 1000
FIRST ?= 1

sim: $(BUILD)/sim-rel $(BUILD)/sim
ifdef SEED
	$(BUILD)/sim --seed $(SEED) $(if $(TRACE),--trace)
else
	$(BUILD)/sim-rel --seeds $(SEEDS) --first $(FIRST)
endif

soak: $(BUILD)/sim-rel
	$(BUILD)/sim-rel --seeds 100000 --first $(FIRST)

TEST_PROGS += tests/sim/ci.sh
TEST_DEPS  += $(BUILD)/sim $(BUILD)/sim-rel
