#!/usr/bin/env python3
"""Independent implementation of kube-apiserver's static providers, for cross-checking atrest.

Written from the format description (k8s:enc:<provider>:v1:<key name>: + payload) with Python
`cryptography` (AES-GCM, AES-CBC) and PyNaCl (XSalsa20-Poly1305), sharing no code with atrest.

  crosscheck.py decrypt CONFIG KEY < stored > plaintext
  crosscheck.py encrypt CONFIG KEY PROVIDER KEYNAME < plaintext > stored

CONFIG is read with a tiny parser that understands only the files `atrest config init` and
the tests write (one key per provider block), to keep this tool independent of atrest.
"""
import base64
import os
import sys

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives import padding
import nacl.secret


def read_keys(path):
    """Returns {(provider, key name): key bytes} from a simple EncryptionConfiguration."""
    keys, provider, name = {}, None, None
    for raw in open(path, encoding="utf-8"):
        line = raw.strip().lstrip("- ").strip()
        for p in ("aesgcm", "aescbc", "secretbox"):
            if line == p + ":":
                provider = p
        if line.startswith("name:"):
            name = line.split(":", 1)[1].strip().strip("'\"")
        if line.startswith("secret:") and provider and name:
            keys[(provider, name)] = base64.b64decode(line.split(":", 1)[1].strip().strip("'\""))
    return keys


def decrypt(keys, aad, stored):
    for (provider, name), key in keys.items():
        prefix = f"k8s:enc:{provider}:v1:{name}:".encode()
        if not stored.startswith(prefix):
            continue
        payload = stored[len(prefix):]
        if provider == "aesgcm":
            return AESGCM(key).decrypt(payload[:12], payload[12:], aad), provider, name
        if provider == "aescbc":
            dec = Cipher(algorithms.AES(key), modes.CBC(payload[:16])).decryptor()
            padded = dec.update(payload[16:]) + dec.finalize()
            unpadder = padding.PKCS7(128).unpadder()
            return unpadder.update(padded) + unpadder.finalize(), provider, name
        if provider == "secretbox":
            # NaCl secretbox: nonce(24) || tag(16) || ciphertext
            return nacl.secret.SecretBox(key).decrypt(payload[24:], payload[:24]), provider, name
    raise SystemExit("no configured provider/key matches the stored value")


def encrypt(keys, aad, provider, name, plaintext):
    key = keys[(provider, name)]
    prefix = f"k8s:enc:{provider}:v1:{name}:".encode()
    if provider == "aesgcm":
        nonce = os.urandom(12)
        return prefix + nonce + AESGCM(key).encrypt(nonce, plaintext, aad)
    if provider == "aescbc":
        iv = os.urandom(16)
        padder = padding.PKCS7(128).padder()
        padded = padder.update(plaintext) + padder.finalize()
        enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
        return prefix + iv + enc.update(padded) + enc.finalize()
    if provider == "secretbox":
        nonce = os.urandom(24)
        return prefix + nacl.secret.SecretBox(key).encrypt(plaintext, nonce)  # nonce||tag||ct
    raise SystemExit(f"unknown provider {provider}")


def main():
    op, config, key = sys.argv[1], sys.argv[2], sys.argv[3].encode()
    keys = read_keys(config)
    data = sys.stdin.buffer.read()
    if op == "decrypt":
        plaintext, provider, name = decrypt(keys, key, data)
        sys.stderr.write(f"{provider}:{name}\n")
        sys.stdout.buffer.write(plaintext)
    elif op == "encrypt":
        sys.stdout.buffer.write(encrypt(keys, key, sys.argv[4], sys.argv[5], data))
    else:
        raise SystemExit(f"unknown operation {op}")


if __name__ == "__main__":
    main()
