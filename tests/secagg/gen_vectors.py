#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Writes tests/secagg/vectors.json: the bytes that core/trib_secagg_crypto.c, core/trib_shamir.c
and clients/python/tributary_secagg.py must all produce. Inputs are fixed (SHA-256 of names);
outputs come from the Python side. The "rfc" block holds published known answers (RFC 7748 6.1,
RFC 5869 A.1, RFC 8439 A.1 #1) that both sides check too, so the file is not only self-consistent.
Run it again only when the format changes on purpose: both tests then check the new file.
"""
import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "clients", "python"))
import tributary_secagg as sa  # noqa: E402


def h(name, n=32):
    return hashlib.sha256(name.encode()).digest()[:n]


def main():
    v = {"format": "tributary-secagg-vectors-1"}
    v["rfc"] = {
        "x25519": {
            "alice_sk": "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
            "alice_pk": "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a",
            "bob_sk": "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
            "bob_pk": "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f",
            "shared": "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742",
        },
        "hkdf": {
            "ikm": "0b" * 22, "salt": bytes(range(13)).hex(),
            "info": bytes(range(0xf0, 0xfa)).hex(), "length": 42,
            "okm": "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
                   "34007208d5b887185865",
        },
        "chacha20_zero_block0": (
            "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7"
            "da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586"),
    }
    v["keys"] = []
    for i in range(3):
        sk = h(f"secagg key {i}")
        v["keys"].append({"sk": sk.hex(), "pk": sa.public_key(sk).hex()})
    v["agree"] = []
    for i, j in ((0, 1), (1, 2), (0, 2)):
        sk = bytes.fromhex(v["keys"][i]["sk"])
        pk = bytes.fromhex(v["keys"][j]["pk"])
        v["agree"].append({"i": i, "j": j, "shared": sa.agree(sk, pk).hex()})
    v["derive"] = []
    for label, rnd, a, b in (("mask", 0, 1, 2), ("mask", 7, 3, 90), ("self", 1, 5, 0),
                             ("share", 123456789012, 4294967295, 1)):
        ikm = h(f"ikm {label} {rnd}")
        v["derive"].append({"ikm": ikm.hex(), "label": label, "round": rnd, "a": a, "b": b,
                            "out": sa.derive(ikm, label, rnd, a, b).hex()})
    v["prg"] = []
    for first, n in ((0, 1), (0, 40), (5, 19), (16, 16), (17, 33), (1000003, 50),
                     ((1 << 36) - 8, 8)):
        key = h(f"prg {first} {n}")
        v["prg"].append({"key": key.hex(), "first": first, "n": n,
                         "bytes": sa.prg_bytes(key, first, 4 * n).hex()})
    v["aead"] = []
    for n in (0, 1, 104):
        key, nonce = h(f"aead key {n}"), h(f"aead nonce {n}", 12)
        pt, ad = h(f"aead pt {n}", 0) + bytes((i * 7) & 255 for i in range(n)), b"from 3 to 9"
        v["aead"].append({"key": key.hex(), "nonce": nonce.hex(), "ad": ad.hex(),
                          "pt": pt.hex(), "ct": sa.seal(key, nonce, pt, ad).hex()})
    v["shamir"] = []
    for secret, t, xs in ((h("secret a"), 3, [1, 2, 3, 4, 5]),
                          (h("secret b"), 1, [9]),
                          (h("secret c", 7), 2, [7, 2147483647]),
                          (h("secret d", 20), 5, [3, 1, 4, 15, 9, 26, 5]),
                          (bytes([255]) * 32, 4, list(range(1, 11)))):
        seed = h(f"coef {secret.hex()}")
        shares = sa.shamir_split(secret, t, xs, seed)
        v["shamir"].append({"secret": secret.hex(), "t": t, "xs": xs, "coef_seed": seed.hex(),
                            "shares": [sa.share_encode(s).hex() for s in shares]})
    path = os.path.join(os.path.dirname(__file__), "vectors.json")
    with open(path, "w") as f:
        json.dump(v, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
