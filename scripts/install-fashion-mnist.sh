#!/bin/sh
# Install Debian's dataset-fashion-mnist (the official IDX files) when apt-get is usable and it is missing.
# Never fatal: without it, `aelab data ... fashion-mnist` says how to provide the files.
dpkg -s dataset-fashion-mnist >/dev/null 2>&1 && exit 0
command -v apt-get >/dev/null 2>&1 || { echo "note: no apt-get; Fashion-MNIST needs --data-dir"; exit 0; }
[ "$(id -u)" = 0 ] && SUDO= || SUDO="sudo -n"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
  || { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; } \
  || echo "note: could not install dataset-fashion-mnist; Fashion-MNIST needs --data-dir"
exit 0
