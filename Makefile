# sbx: one non-recursive Makefile. Outputs go to build/.
#   make          install missing Debian packages, build build/sbx
#   make check    build and run every test (unit, fuzz smoke, end-to-end)
#   make run      build and start the server on the embedded configuration
#   make format   reformat the C sources; make format-check fails on drift
# SANITIZE=address,undefined builds everything with those sanitizers.

CC ?= cc
# Sanitizer builds keep their own objects.
BUILD ?= build$(if $(SANITIZE),-$(subst $(comma),-,$(SANITIZE)))
comma := ,
SANITIZE ?=
PYTEST_ARGS ?=
# Debian's interpreter, where python3-pytest installs (not a pyenv one).
PYTHON ?= /usr/bin/python3

# Debian packages: what the build needs, what the tests need, and the
# language runtimes the end-to-end tests run inside sandboxes.
DEBS_BUILD := gcc make pkg-config libseccomp-dev libjansson-dev \
	libmicrohttpd-dev libsqlite3-dev libcmocka-dev clang clang-format
DEBS_TEST := python3 python3-pytest bash coreutils iproute2
DEBS_LANGS := python3-numpy g++ nodejs
DEBS := $(DEBS_BUILD) $(DEBS_TEST) $(DEBS_LANGS)

PKGS := libseccomp jansson libmicrohttpd sqlite3

CFLAGS_WARN := -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wvla \
	-Wmissing-prototypes -Wstrict-prototypes -Wno-unused-parameter
CFLAGS_HARDEN := -D_FORTIFY_SOURCE=2 -fstack-protector-strong -fPIE \
	-fno-strict-aliasing
LDFLAGS_HARDEN := -pie -Wl,-z,relro,-z,now
OPT := -O2
ifneq ($(SANITIZE),)
OPT := -O1 -fno-omit-frame-pointer -fsanitize=$(SANITIZE) \
	-fno-sanitize-recover=all
LDFLAGS_SAN := -fsanitize=$(SANITIZE)
endif

PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS = $(shell pkg-config --libs $(PKGS) 2>/dev/null)

ALL_CFLAGS = -std=c11 -D_GNU_SOURCE -g $(OPT) $(CFLAGS_WARN) \
	$(CFLAGS_HARDEN) -Isrc $(PKG_CFLAGS) $(CFLAGS)
ALL_LDFLAGS = $(LDFLAGS_HARDEN) $(LDFLAGS_SAN) $(LDFLAGS)
LIBS = $(PKG_LIBS) -lpthread

LIB_SRCS := $(wildcard src/base/*.c src/sandbox/*.c src/runtime/*.c \
	src/store/*.c src/llm/*.c src/server/*.c)
CLI_SRCS := $(wildcard src/cli/*.c)
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/%.o) $(BUILD)/gen/guest.o \
	$(BUILD)/gen/init_blob.o
CLI_OBJS := $(CLI_SRCS:%.c=$(BUILD)/%.o)
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)
HELPER_SRCS := $(wildcard tests/helpers/*.c)
HELPER_BINS := $(HELPER_SRCS:tests/helpers/%.c=$(BUILD)/tests/%)
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS := $(FUZZ_SRCS:tests/fuzz/%.c=$(BUILD)/fuzz/%)

.PHONY: all deps build check unit fuzz-smoke e2e run format format-check \
	clean bench
.DEFAULT_GOAL := all

all: deps
	@$(MAKE) --no-print-directory build

build: $(BUILD)/sbx

# Installs whatever is missing; a no-op (one dpkg query) when all is there.
deps:
	@missing=$$(for p in $(DEBS); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | \
		grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		if [ "$$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
			--no-install-recommends $$missing >/dev/null; \
	fi

$(BUILD)/libsbx.a: $(LIB_OBJS)
	@mkdir -p $(@D)
	@rm -f $@
	@ar rcs $@ $^

$(BUILD)/sbx: $(CLI_OBJS) $(BUILD)/libsbx.a
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $(CLI_OBJS) $(BUILD)/libsbx.a $(LIBS)

# The sandbox's PID 1 is a small binary of its own, embedded in sbx (a
# static one unless sanitizers are on, which need the dynamic runtime).
INIT_SRCS := src/sandbox/init/main.c src/sandbox/init.c \
	src/sandbox/initserve.c src/sandbox/mnt.c src/sandbox/net.c \
	src/sandbox/rlimit.c src/sandbox/userns.c src/sandbox/wire.c \
	src/sandbox/spec.c src/sandbox/bpf.c src/base/util.c src/base/buf.c \
	src/base/log.c src/base/text.c
INIT_OBJS := $(INIT_SRCS:%.c=$(BUILD)/%.o) $(BUILD)/gen/guest.o
ifeq ($(SANITIZE),)
INIT_LINK := -static-pie -Wl,-z,relro,-z,now -l:libjansson.a
else
INIT_LINK := $(ALL_LDFLAGS) -ljansson
endif

$(BUILD)/sbx-init: $(INIT_OBJS)
	@echo "  LD $@"
	@$(CC) $(ALL_CFLAGS) -o $@ $(INIT_OBJS) $(INIT_LINK)

$(BUILD)/gen/init_blob.S: $(BUILD)/sbx-init
	@mkdir -p $(@D)
	@printf '\t.section .rodata\n\t.balign 16\n\t.globl sbx_init_blob\nsbx_init_blob:\n\t.incbin "%s"\n\t.globl sbx_init_blob_end\nsbx_init_blob_end:\n\t.section .note.GNU-stack,"",@progbits\n' "$(abspath $(BUILD)/sbx-init)" > $@

$(BUILD)/gen/init_blob.o: $(BUILD)/gen/init_blob.S $(BUILD)/sbx-init
	@$(CC) -c -o $@ $<

# What runs inside sandboxes and is not C (guest/) is embedded as strings.
$(BUILD)/gen/guest.c: guest/repl.py guest/zygote.py tools/embed.py
	@mkdir -p $(@D)
	@{ $(PYTHON) tools/embed.py guest_repl_py guest/repl.py && \
	   $(PYTHON) tools/embed.py guest_zygote_py guest/zygote.py; } > $@

$(BUILD)/gen/guest.o: $(BUILD)/gen/guest.c
	@echo "  CC $<"
	@$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/%.o: %.c
	@mkdir -p $(@D)
	@echo "  CC $<"
	@$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libsbx.a
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $< $(BUILD)/libsbx.a $(LIBS) -lcmocka

$(BUILD)/tests/%: tests/helpers/%.c $(BUILD)/libsbx.a
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $< $(BUILD)/libsbx.a $(LIBS)

# Fuzz targets: libFuzzer with clang when available; otherwise a plain
# driver (tests/fuzz/driver.c) replays the corpus, so the targets always
# build and run in `make check`.
FUZZ_CC := clang
FUZZ_FLAGS := -std=c11 -D_GNU_SOURCE -g -O1 -Isrc $(PKG_CFLAGS) \
	-fsanitize=fuzzer,address,undefined
# Parsers of client bytes live in *_parse.c and need only base/ and the
# languages table, so each target links just those.
FUZZ_LIB_SRCS = $(wildcard src/base/*.c) src/runtime/lang.c \
	$(wildcard src/server/*_parse.c) src/runtime/limits.c src/sandbox/wire.c \
	src/sandbox/spec.c \
	src/sandbox/bpf.c
$(BUILD)/fuzz/%: tests/fuzz/%.c $(LIB_SRCS)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $< $(FUZZ_LIB_SRCS) $(PKG_LIBS) -lpthread

unit: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; $$t; done

fuzz-smoke: $(FUZZ_BINS)
	@set -e; for f in $(FUZZ_BINS); do \
		n=$$(basename $$f); echo "== $$n (20000 runs)"; \
		mkdir -p $(BUILD)/fuzz/corpus-$$n; \
		$$f -runs=20000 -max_len=4096 -seed=1 \
			$(BUILD)/fuzz/corpus-$$n tests/fuzz/corpus/$$n \
			2>$(BUILD)/fuzz/$$n.log || { tail -40 $(BUILD)/fuzz/$$n.log; exit 1; }; \
	done

e2e: $(BUILD)/sbx $(HELPER_BINS)
	SBX=$(abspath $(BUILD)/sbx) SBX_BUILD=$(abspath $(BUILD)) \
		$(PYTHON) -m pytest -q -p no:cacheprovider tests/e2e $(PYTEST_ARGS)

check: deps
	@$(MAKE) --no-print-directory format-check build
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory fuzz-smoke
	@$(MAKE) --no-print-directory e2e

run: deps
	@$(MAKE) --no-print-directory build
	$(BUILD)/sbx serve

# The baselines the benchmark runs beside sbx.
DEBS_BENCH := bubblewrap firejail runsc
bench: deps
	@$(MAKE) --no-print-directory DEBS="$(DEBS_BENCH)" deps build
	$(PYTHON) bench/run_code.py --sbx $(BUILD)/sbx $(BENCH_ARGS)

C_FILES = $(shell git ls-files '*.c' '*.h' 2>/dev/null || find src tests -name '*.[ch]')
format:
	clang-format -i $(C_FILES)

format-check:
	@clang-format --dry-run -Werror $(C_FILES)

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
