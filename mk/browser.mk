# The chat page's browser tests (tests/e2e/test_chat_page.py): Debian's Chromium and
# the Playwright package. Playwright never downloads a browser here: the tests launch
# $(CHROMIUM_BIN). `make browser` installs both (Chromium only where it is missing);
# `make test` depends on it, so there the browser tests run instead of skipping.

CHROMIUM_BIN ?= /usr/bin/chromium
APT_SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: browser browser-test

$(CHROMIUM_BIN):
	$(APT_SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(APT_SUDO) apt-get install -y -qq --no-install-recommends chromium

$(BIN)/.browser-installed: requirements-browser.txt $(BIN)/.installed
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-browser.txt
	touch $@

browser: $(CHROMIUM_BIN) $(BIN)/.browser-installed  ## Install Chromium (Debian) and Playwright for the page's tests

browser-test: install browser  ## Only the chat page's tests, in headless Chromium
	THREADLINE_CHROMIUM=$(CHROMIUM_BIN) THREADLINE_BROWSER_TESTS=required $(BIN)/pytest tests/e2e/test_chat_page.py
