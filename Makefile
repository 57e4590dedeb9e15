# Thin wrappers: the scripts do the work. `make install PREFIX=/opt/breakwater DESTDIR=/tmp/stage` passes both on.
PREFIX ?= /usr/local
DESTDIR ?=
export PREFIX DESTDIR

.PHONY: build install uninstall test

build:
	swift build -c release

install:
	scripts/install.sh

uninstall:
	scripts/uninstall.sh

test:
	scripts/test.sh
