# sbx: one non-recursive Makefile. Outputs go to build/.
#   make          install missing Debian packages, build build/sbx
#   make check    build and run every test (unit, fuzz smoke, end-to-end)
#   make run      build and start the server on the embedded configuration
#   make install  install sbx into $(PREFIX)/bin (and its node packages
#                 into $(PREFIX)/lib/sbx/npm); DESTDIR for staging
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
	libmicrohttpd-dev libsqlite3-dev libcurl4-openssl-dev libcmocka-dev \
	clang clang-format python3-dev
# python3-venv and python3-wheel: the Python client installs into a venv
# with no download (README, tests/e2e/test_newcomer.py).
DEBS_TEST := python3 python3-pytest bash coreutils iproute2 python3-venv \
	python3-wheel python3-pip python3-requests

# Language runtimes, by /run_code language name. `make deps LANGS="python
# go"` installs only those; the default (all) is what `make check` needs
# so that no language test is skipped. typescript and jest are npm
# packages (tools/npm), installed into $(BUILD)/npm, beside build/sbx.
LANGS ?= all
DEBS_LANG_python := python3 python3-numpy
DEBS_LANG_pytest := python3 python3-pytest
DEBS_LANG_bash := bash
DEBS_LANG_c := gcc
DEBS_LANG_cpp := g++
DEBS_LANG_nodejs := nodejs
DEBS_LANG_typescript := nodejs
DEBS_LANG_jest := nodejs
DEBS_LANG_java := default-jdk-headless
DEBS_LANG_junit := default-jdk-headless junit5
DEBS_LANG_go := golang-go golang-github-stretchr-testify-dev
DEBS_LANG_go_test := $(DEBS_LANG_go)
DEBS_LANG_rust := rustc
DEBS_LANG_perl := perl
DEBS_LANG_ruby := ruby
DEBS_LANG_php := php-cli
DEBS_LANG_lua := lua5.4
DEBS_LANG_R := r-base-core
DEBS_LANG_D_ut := ldc
DEBS_LANG_scala := default-jdk-headless scala
DEBS_LANG_kotlin_script := default-jdk-headless kotlin
DEBS_LANG_csharp := mono-mcs mono-runtime
DEBS_LANG_racket := racket
DEBS_LANG_verilog := iverilog
ALL_LANGS := python pytest bash c cpp nodejs typescript jest java junit go \
	go_test rust perl ruby php lua R D_ut scala kotlin_script csharp \
	racket verilog
SEL_LANGS := $(if $(filter all,$(LANGS)),$(ALL_LANGS),$(LANGS))
BAD_LANGS := $(filter-out $(ALL_LANGS),$(SEL_LANGS))
ifneq ($(BAD_LANGS),)
$(error LANGS: no Debian or npm runtime for '$(BAD_LANGS)'; choose from: $(ALL_LANGS))
endif
DEBS_LANGS := $(sort $(foreach l,$(SEL_LANGS),$(DEBS_LANG_$(l))))
NPM_DIR := $(BUILD)/npm
NPM_STAMP := $(if $(filter typescript jest,$(SEL_LANGS)),$(NPM_DIR)/.installed)
DEBS := $(DEBS_BUILD) $(DEBS_TEST) $(DEBS_LANGS)

PKGS := libseccomp jansson libmicrohttpd sqlite3 libcurl

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
	$(BUILD)/gen/init_blob.o $(BUILD)/gen/zygote_blob.o
CLI_OBJS := $(CLI_SRCS:%.c=$(BUILD)/%.o)
# The rollout runner of execution pools (guest/rollout.py), embedded.
LIB_OBJS += $(BUILD)/gen/guest_rollout.o
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)
HELPER_SRCS := $(wildcard tests/helpers/*.c)
HELPER_BINS := $(HELPER_SRCS:tests/helpers/%.c=$(BUILD)/tests/%)
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS := $(FUZZ_SRCS:tests/fuzz/%.c=$(BUILD)/fuzz/%)

.PHONY: all deps build check unit fuzz-smoke e2e run format format-check \
	clean bench install uninstall
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
	@$(if $(NPM_STAMP),$(MAKE) -s --no-print-directory $(NPM_STAMP))

# The node packages of the typescript and jest recipes, pinned by the lock
# file; sandboxes see this directory read-only at /opt/sbx-node.
$(NPM_DIR)/.installed: tools/npm/package.json tools/npm/package-lock.json \
		tools/npm/jest.config.js
	@command -v npm >/dev/null || { \
		if [ "$$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi; \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
			--no-install-recommends npm >/dev/null; }
	@mkdir -p $(NPM_DIR)
	@cp $^ $(NPM_DIR)/
	@echo "installing npm packages into $(NPM_DIR)"
	@cd $(NPM_DIR) && npm ci --no-audit --no-fund --loglevel=error >/dev/null
	@touch $@

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
	src/sandbox/spec.c src/sandbox/bpf.c src/sandbox/procmask.c \
	src/sandbox/runinit.c src/base/util.c src/base/buf.c \
	src/base/log.c src/base/text.c
INIT_OBJS := $(INIT_SRCS:%.c=$(BUILD)/%.o) $(BUILD)/gen/guest.o \
	$(BUILD)/gen/zygote_blob.o
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

# The native half of the forking Python zygote: a Python extension built
# against Debian's python3 headers (never with sanitizers: it is loaded
# into the sandbox's interpreter), embedded in sbx-init. Without the
# headers it is empty and warm sandboxes keep one-run zygotes.
PYEXT_INC := $(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_paths()["include"])' 2>/dev/null)
PYEXT_SRCS := src/pyext/zygote.c src/sandbox/procmask.c src/sandbox/runinit.c \
	src/sandbox/rlimit.c src/sandbox/userns.c src/sandbox/bpf.c \
	src/base/util.c
$(BUILD)/sbx_zygote.so: $(PYEXT_SRCS) src/sandbox/zygote_proto.h \
		src/sandbox/internal.h
	@mkdir -p $(@D)
	@echo "  CC $@"
	@if [ -f "$(PYEXT_INC)/Python.h" ]; then \
		$(CC) -std=c11 -D_GNU_SOURCE -g -O2 $(CFLAGS_WARN) \
			-fstack-protector-strong -fPIC -shared -Isrc \
			-I$(PYEXT_INC) -o $@ $(PYEXT_SRCS); \
	else echo "  (no Python headers: forking zygote off)"; : > $@; fi

$(BUILD)/gen/zygote_blob.S: $(BUILD)/sbx_zygote.so
	@mkdir -p $(@D)
	@printf '\t.section .rodata\n\t.balign 16\n\t.globl sbx_zygote_blob\nsbx_zygote_blob:\n\t.incbin "%s"\n\t.globl sbx_zygote_blob_end\nsbx_zygote_blob_end:\n\t.section .note.GNU-stack,"",@progbits\n' "$(abspath $(BUILD)/sbx_zygote.so)" > $@

$(BUILD)/gen/zygote_blob.o: $(BUILD)/gen/zygote_blob.S $(BUILD)/sbx_zygote.so
	@$(CC) -c -o $@ $<

# What runs inside sandboxes and is not C (guest/) is embedded as strings.
$(BUILD)/gen/guest.c: guest/repl.py guest/zygote.py guest/rpc.py \
		guest/sbx_guest.py tools/embed.py
	@mkdir -p $(@D)
	@{ $(PYTHON) tools/embed.py guest_repl_py guest/repl.py && \
	   $(PYTHON) tools/embed.py guest_zygote_py guest/zygote.py && \
	   $(PYTHON) tools/embed.py guest_rpc_py guest/rpc.py && \
	   $(PYTHON) tools/embed.py guest_sbx_guest_py guest/sbx_guest.py; } > $@

$(BUILD)/gen/guest.o: $(BUILD)/gen/guest.c
	@echo "  CC $<"
	@$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/%.o: %.c
	@mkdir -p $(@D)
	@echo "  CC $<"
	@$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/gen/guest_rollout.c: guest/rollout.py tools/embed.py
	@mkdir -p $(@D)
	@$(PYTHON) tools/embed.py guest_rollout_py guest/rollout.py > $@

$(BUILD)/gen/guest_rollout.o: $(BUILD)/gen/guest_rollout.c
	@echo "  CC $<"
	@$(CC) $(ALL_CFLAGS) -c -o $@ $<

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
	src/sandbox/bpf.c src/llm/slug.c src/llm/sse.c src/llm/extract.c
# Compiled once (instrumented, without libFuzzer's main) and linked into
# every target.
FUZZ_LIB_OBJS = $(FUZZ_LIB_SRCS:%.c=$(BUILD)/fuzz/obj/%.o)
$(BUILD)/fuzz/obj/%.o: %.c
	@mkdir -p $(@D)
	@echo "  CC (fuzz) $<"
	@$(FUZZ_CC) $(subst -fsanitize=fuzzer$(comma),-fsanitize=fuzzer-no-link$(comma),$(FUZZ_FLAGS)) \
		-MMD -MP -c -o $@ $<
$(BUILD)/fuzz/%: tests/fuzz/%.c $(FUZZ_LIB_OBJS)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $< $(FUZZ_LIB_OBJS) $(PKG_LIBS) -lpthread
.SECONDARY: $(FUZZ_LIB_OBJS)

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
		SBX_SANITIZE=$(SANITIZE) $(PYTHON) -m pytest -q -p no:cacheprovider tests/e2e $(PYTEST_ARGS)

check: deps
	@$(MAKE) --no-print-directory format-check build
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory fuzz-smoke
	@$(MAKE) --no-print-directory e2e

run: deps
	@$(MAKE) --no-print-directory build
	$(BUILD)/sbx serve

# make install [PREFIX=/usr/local] [DESTDIR=]: the binary, and the node
# packages of typescript and jest where sbx looks for them from an
# installed binary (../lib/sbx/npm beside bin/).
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
LIBDIR ?= $(PREFIX)/lib
install: build
	install -d $(DESTDIR)$(BINDIR)
	install -m 0755 $(BUILD)/sbx $(DESTDIR)$(BINDIR)/sbx
	@if [ -f $(NPM_DIR)/.installed ]; then \
		echo "installing node packages into $(DESTDIR)$(LIBDIR)/sbx/npm"; \
		rm -rf $(DESTDIR)$(LIBDIR)/sbx/npm && \
		install -d $(DESTDIR)$(LIBDIR)/sbx && \
		cp -R $(NPM_DIR) $(DESTDIR)$(LIBDIR)/sbx/npm; \
	fi

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/sbx
	rm -rf $(DESTDIR)$(LIBDIR)/sbx

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
