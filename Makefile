# walraft — build, test and check.
#
#   make            release build: build/walraft.so, build/libwalraft.a, build/walraft
#   make test       every test, built with AddressSanitizer + UndefinedBehaviorSanitizer
#   make check-deps module boundaries of DESIGN §2 (part of make test)
#   make deps       apt-get install what is missing (Debian, as root)
#   make clean
#
# Each module is its own static library so a module's tests link only what they need:
#   wal/ -> libwal, consensus/*.c -> libcore, consensus/io/ -> libio, vfs/ -> libvfs, ext/ -> libext.
# Unit tests are tests/unit/test_<module>_<topic>.c; <module> picks the libraries they link.
# Further rules live in fragments (*/rules.mk, */*/rules.mk), one per area, included below.

BUILD   ?= build
CC      ?= gcc
AR      ?= ar
PKGS    := sqlite3 libuv liblz4 libxxhash
DEBPKGS := libsqlite3-dev sqlite3 libuv1-dev libxxhash-dev liblz4-dev libcmocka-dev pkg-config
# The multi-process tests, the examples and the WAL checker are Python 3 (standard library only).
TESTPKGS := python3

PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CMOCKA_CFLAGS := $(shell pkg-config --cflags cmocka 2>/dev/null)
CMOCKA_LIBS   := $(shell pkg-config --libs cmocka 2>/dev/null || echo -lcmocka)

WARN    := -std=c11 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
# -Wconversion where the code is pure arithmetic over bytes: the WAL codec and the Raft core.
STRICT  := -Wconversion -Wsign-conversion
DEFS    := -D_GNU_SOURCE
INC     := -I. $(PKG_CFLAGS)
# Release objects drop assert() (it re-verifies every log record it encodes, for one); the
# sanitized test builds keep every assertion.
REL_CFLAGS  := $(WARN) $(DEFS) $(INC) -O2 -g -fPIC -fvisibility=hidden -DNDEBUG
ASAN_CFLAGS := $(WARN) $(DEFS) $(INC) -O1 -g -fno-omit-frame-pointer \
               -fsanitize=address,undefined -fno-sanitize-recover=undefined -fPIC
ASAN_LDFLAGS := -fsanitize=address,undefined
LDLIBS  := $(PKG_LIBS) -lpthread -lm
# The loadable extension takes SQLite from its host process, never from a second copy.
SO_LIBS := $(shell pkg-config --libs libuv liblz4 libxxhash 2>/dev/null) -lpthread -lm

WAL_SRC  := $(sort $(wildcard wal/*.c))
CORE_SRC := $(sort $(wildcard consensus/*.c))
IO_SRC   := $(sort $(wildcard consensus/io/*.c))
VFS_SRC  := $(sort $(wildcard vfs/*.c))
EXT_SRC  := $(sort $(wildcard ext/*.c))
SHELL_SRC := $(sort $(wildcard shell/*.c))
ALL_LIB_SRC := $(WAL_SRC) $(CORE_SRC) $(IO_SRC) $(VFS_SRC) $(EXT_SRC)

# Object lists: the loadable extension in $(BUILD)/rel (SQLite API through sqlite3ext.h's routine
# table, so it works in any host process), the static library in $(BUILD)/static (-DSQLITE_CORE:
# direct calls, for applications that link SQLite themselves), sanitized test code in $(BUILD)/asan.
rel    = $(patsubst %.c,$(BUILD)/rel/%.o,$(1))
static = $(patsubst %.c,$(BUILD)/static/%.o,$(1))
asan   = $(patsubst %.c,$(BUILD)/asan/%.o,$(1))

STRICT_DIRS := wal/ consensus/
strict_for = $(if $(filter $(STRICT_DIRS),$(dir $(1))),$(STRICT))

.PHONY: all test check-deps deps clean unit-tests format sim soak bench chaos demo
all: $(BUILD)/walraft.so $(BUILD)/libwalraft.a $(if $(SHELL_SRC),$(BUILD)/walraft)

$(BUILD)/rel/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(REL_CFLAGS) $(call strict_for,$<) -MMD -MP -c $< -o $@

$(BUILD)/static/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(REL_CFLAGS) -DSQLITE_CORE $(call strict_for,$<) $(if $(filter shell/%,$<),$(SHELL_CFLAGS)) -MMD -MP -c $< -o $@

$(BUILD)/asan/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ASAN_CFLAGS) -DSQLITE_CORE $(call strict_for,$<) -MMD -MP -c $< -o $@

# --- release artifacts --------------------------------------------------------------------------
$(BUILD)/walraft.so: $(call rel,$(ALL_LIB_SRC))
	$(CC) -shared -o $@ $^ $(SO_LIBS)

$(BUILD)/libwalraft.a: $(call static,$(ALL_LIB_SRC))
	rm -f $@ && $(AR) rcs $@ $^

# shell/rules.mk may set SHELL_CFLAGS / SHELL_LIBS (e.g. line editing when a library is present).
$(BUILD)/walraft: $(call static,$(SHELL_SRC)) $(BUILD)/libwalraft.a
	$(CC) -o $@ $^ $(SHELL_LIBS) $(LDLIBS)

# --- sanitized module libraries for tests ------------------------------------------------------
$(BUILD)/asan/libwal.a:  $(call asan,$(WAL_SRC))
$(BUILD)/asan/libcore.a: $(call asan,$(CORE_SRC))
$(BUILD)/asan/libio.a:   $(call asan,$(IO_SRC))
$(BUILD)/asan/libvfs.a:  $(call asan,$(VFS_SRC))
$(BUILD)/asan/libext.a:  $(call asan,$(EXT_SRC))
$(BUILD)/asan/lib%.a:
	@mkdir -p $(dir $@)
	rm -f $@ && $(AR) rcs $@ $^

LIBS_wal  := $(BUILD)/asan/libwal.a
LIBS_raft := $(BUILD)/asan/libcore.a
LIBS_io   := $(BUILD)/asan/libio.a $(BUILD)/asan/libcore.a $(BUILD)/asan/libwal.a
LIBS_vfs  := $(BUILD)/asan/libext.a $(BUILD)/asan/libvfs.a $(LIBS_io)
LIBS_ext  := $(LIBS_vfs)

# Test helpers shared by unit tests: tests/unit/helpers/*.c (linked into every unit test).
UNIT_HELPER_SRC := $(sort $(wildcard tests/unit/helpers/*.c))
UNIT_SRC  := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BINS := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))
test_module = $(word 2,$(subst _, ,$(notdir $(1))))

# Extra per-module objects a unit test of that module links (set by fragments, e.g. the simulator).
UNIT_EXTRA_raft ?=

.SECONDEXPANSION:
$(BUILD)/tests/test_%: tests/unit/test_%.c $(call asan,$(UNIT_HELPER_SRC)) \
		$$(UNIT_EXTRA_$$(call test_module,$$@)) $$(LIBS_$$(call test_module,$$@))
	@mkdir -p $(dir $@)
	$(CC) $(ASAN_CFLAGS) $(CMOCKA_CFLAGS) -MMD -MP -MF $@.d -o $@ $(filter %.c %.o,$^) \
		$(UNIT_EXTRA_$(call test_module,$@)) $(LIBS_$(call test_module,$@)) \
		$(ASAN_LDFLAGS) $(CMOCKA_LIBS) $(LDLIBS)

unit-tests: $(UNIT_BINS)

# Programs the test runner runs, in order. Fragments append to TEST_PROGS (executables that
# exit 0 on success; they see BUILD in the environment) and to TEST_DEPS (what must be built).
TEST_PROGS := $(UNIT_BINS)
TEST_DEPS  := $(UNIT_BINS)

include $(sort $(wildcard */rules.mk */*/rules.mk))

test: check-deps $(TEST_DEPS)
	@BUILD=$(abspath $(BUILD)) tests/run.sh $(TEST_PROGS)

check-deps:
	@tests/check-deps.sh

deps:
	@missing=""; for p in $(DEBPKGS) $(TESTPKGS) build-essential; do \
		dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	else echo "all build dependencies present"; fi

format:
	clang-format -i $(ALL_LIB_SRC) $(SHELL_SRC) $(wildcard */*.h */*/*.h tests/*/*.c)

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
