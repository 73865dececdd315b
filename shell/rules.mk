# The walraft program (shell/*.c; the main Makefile builds $(BUILD)/walraft from them).
# Line editing and history come from libreadline, else libedit, when its headers and library
# are on the build machine; without either the prompt reads plain lines. Neither is a
# dependency of `make deps`.

SHELL_LIBDIRS := /usr/lib /usr/lib64 /usr/lib/$(shell $(CC) -dumpmachine 2>/dev/null) /usr/local/lib
ifneq ($(and $(wildcard /usr/include/readline/readline.h),$(wildcard $(addsuffix /libreadline.so,$(SHELL_LIBDIRS)))),)
SHELL_CFLAGS += -DWALRAFT_READLINE
SHELL_LIBS   += -lreadline
else ifneq ($(and $(wildcard /usr/include/editline/readline.h),$(wildcard $(addsuffix /libedit.so,$(SHELL_LIBDIRS)))),)
SHELL_CFLAGS += -DWALRAFT_EDITLINE
SHELL_LIBS   += -ledit
endif
