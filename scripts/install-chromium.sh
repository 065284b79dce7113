#!/bin/sh
# Install Debian's chromium (the report's browser test drives it with Playwright) when apt-get is usable.
# Never `playwright install`: it downloads a browser build of its own.  Never fatal: without chromium the
# browser test says how to get it.
command -v chromium >/dev/null 2>&1 && exit 0
command -v apt-get >/dev/null 2>&1 || { echo "note: no apt-get; install chromium for the report's browser test"; exit 0; }
[ "$(id -u)" = 0 ] && SUDO= || SUDO="sudo -n"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -q chromium >/dev/null 2>&1 \
  || { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q chromium >/dev/null 2>&1; } \
  || echo "note: could not install chromium; the report's browser test will fail until it is installed"
exit 0
