#!/usr/bin/env bash
# Set up a fresh machine: Debian packages (adb, aapt, framework-res, junit4), a virtualenv in
# .venv with the pinned Python stack, and this project installed editable. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v adb >/dev/null 2>&1 || need_apt+=(adb)
command -v aapt >/dev/null 2>&1 || need_apt+=(aapt)
[ -f /usr/share/android-framework-res/framework-res.apk ] || need_apt+=(android-framework-res)
[ -f /usr/share/java/junit4.jar ] || need_apt+=(junit4)
# The emulator's Android userland (issue 14): mksh as /system/bin/sh, toybox, busybox for what
# Debian's toybox lacks (dd ...), bubblewrap for the sandbox, a static C toolchain for its helpers.
command -v bwrap >/dev/null 2>&1 || need_apt+=(bubblewrap)
command -v mksh >/dev/null 2>&1 || need_apt+=(mksh)
command -v toybox >/dev/null 2>&1 || need_apt+=(toybox)
command -v busybox >/dev/null 2>&1 || need_apt+=(busybox-static)
command -v nsenter >/dev/null 2>&1 || need_apt+=(util-linux)
command -v losetup >/dev/null 2>&1 || need_apt+=(mount)
command -v mkfs.ext4 >/dev/null 2>&1 || need_apt+=(e2fsprogs)  # /data: an ext4 image of the profile's size
command -v cc >/dev/null 2>&1 || need_apt+=(gcc)
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || [ "$(uname -m)" != x86_64 ] || need_apt+=(libc6-dev)
# md5sum ... sha512sum over OpenSSL's libcrypto.a (a phone's toybox hashes with BoringSSL's hardware SHA)
[ -f /usr/include/openssl/evp.h ] || need_apt+=(libssl-dev)
if ((${#need_apt[@]})); then
  echo "setup: installing Debian packages: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q "${need_apt[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
# torch is pinned to the CPU wheel that lies on this machine's disk (an unpinned torch pulls CUDA).
echo "setup: checking the Python stack in .venv"
if ! .venv/bin/python -c "import litert_lm, litert_torch, adb_shell, typer, sdk_tools" >/dev/null 2>&1; then
  echo "setup: installing the Python stack (several minutes on a fresh machine)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[test]"
fi
echo "setup: ready ($(.venv/bin/python -c 'import importlib.metadata as m; print("litert-torch", m.version("litert-torch"), "| litert-lm-api", m.version("litert-lm-api"), "| torch", m.version("torch"))'))"
