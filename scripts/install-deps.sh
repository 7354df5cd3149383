#!/usr/bin/env bash
# Installs what atrest's build and tests need on a Debian machine. Build: protoc (etcd-client's
# build), libsodium and pkg-config (secretbox). Tests: etcd (server and etcdctl), openssl and
# curl, headless Chromium and ChromeDriver (the status page's browser tests), Python's
# cryptography + PyNaCl (the independent cross-check under tests/interop), SoftHSM (the KMS
# plugin's PKCS#11 backend is tested against a SoftHSM token).
# Safe to run again: it installs only what is missing.
set -euo pipefail

need_apt=()
command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need_apt+=(etcd-client)
command -v protoc >/dev/null 2>&1 || need_apt+=(protobuf-compiler)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
[ -e /usr/include/sodium.h ] || need_apt+=(libsodium-dev)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
[ -x /usr/bin/chromedriver ] || need_apt+=(chromium-driver)
{ command -v softhsm2-util >/dev/null 2>&1 && [ -e /usr/lib/softhsm/libsofthsm2.so ]; } || need_apt+=(softhsm2)

if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-deps: missing ${need_apt[*]}; run as root or install them yourself" >&2
        exit 1
    fi
    echo "install-deps: apt-get install ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! python3 -c 'import cryptography, nacl' >/dev/null 2>&1; then
    echo "install-deps: pip install cryptography pynacl"
    python3 -m pip install --quiet --disable-pip-version-check cryptography pynacl
fi
