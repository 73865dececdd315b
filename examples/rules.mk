# Examples: `make demo` runs the three-node cluster demo (examples/cluster.sh); the example
# programs build with release flags against the static library; every example runs in
# `make test` (each exits 0 when its checks pass, in well under a minute).

EXAMPLE_APP := $(BUILD)/examples/app

$(EXAMPLE_APP): examples/app.c $(BUILD)/libwalraft.a ext/walraft.h
	@mkdir -p $(dir $@)
	$(CC) $(REL_CFLAGS) -o $@ examples/app.c $(BUILD)/libwalraft.a $(LDLIBS)

examples: $(EXAMPLE_APP)

demo: $(BUILD)/walraft
	@BUILD=$(abspath $(BUILD)) examples/cluster.sh

.PHONY: examples

TEST_DEPS  += $(BUILD)/walraft $(BUILD)/walraft.so $(EXAMPLE_APP)
TEST_PROGS += tests/e2e/test_examples.py examples/cluster.sh $(EXAMPLE_APP) examples/python_example.py
