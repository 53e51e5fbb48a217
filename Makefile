# libbtcore: build and install the C library.
#
#   make                      cargo build --release -p btcore-ffi
#   make install PREFIX=/usr/local [DESTDIR=...]
#                             build, then install-files
#   make install-files        install what is built in LIBDIR (default target/release):
#                             a stripped libbtcore.so.$(VERSION) with the links
#                             libbtcore.so.0 and libbtcore.so, libbtcore.a, the
#                             header and btcore.pc
#   make header               regenerate include/btcore.h with cbindgen
#   make check                cargo test -p btcore-ffi (C, C++, sanitizers, valgrind)

PREFIX ?= /usr/local
DESTDIR ?=
CARGO ?= cargo
CARGO_TARGET_DIR ?= $(CURDIR)/target
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
SOMAJOR := 0
LIBDIR ?= $(CARGO_TARGET_DIR)/release
STRIP ?= strip

export CARGO_TARGET_DIR

.PHONY: all build install install-files header check clean-install

all: build

build:
	$(CARGO) build --release -p btcore-ffi

install: build install-files

install-files:
	install -d $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include
	install -m 644 $(LIBDIR)/libbtcore.a $(DESTDIR)$(PREFIX)/lib/libbtcore.a
	$(STRIP) --strip-debug $(DESTDIR)$(PREFIX)/lib/libbtcore.a
	install -m 755 $(LIBDIR)/libbtcore.so $(DESTDIR)$(PREFIX)/lib/libbtcore.so.$(VERSION)
	$(STRIP) --strip-unneeded $(DESTDIR)$(PREFIX)/lib/libbtcore.so.$(VERSION)
	ln -sf libbtcore.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libbtcore.so.$(SOMAJOR)
	ln -sf libbtcore.so.$(SOMAJOR) $(DESTDIR)$(PREFIX)/lib/libbtcore.so
	install -m 644 include/btcore.h $(DESTDIR)$(PREFIX)/include/btcore.h
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' btcore.pc.in \
		> $(DESTDIR)$(PREFIX)/lib/pkgconfig/btcore.pc

header:
	cbindgen --config ffi/cbindgen.toml --crate btcore-ffi --output include/btcore.h ffi

check:
	$(CARGO) test -p btcore-ffi
