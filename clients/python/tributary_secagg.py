# SPDX-License-Identifier: MIT
"""Secure aggregation's client-side primitives, byte for byte those of core/trib_secagg_crypto.c
and core/trib_shamir.c (tests/secagg/vectors.json pins both sides).

X25519 (RFC 7748), HKDF-SHA256 (RFC 5869) key derivation, the ChaCha20 (RFC 8439, IETF) mask
PRG read as u32 little-endian words, ChaCha20-Poly1305 for shares, and Shamir secret sharing
over GF(2^61 - 1) with secrets cut into 7-byte chunks. The formats are documented once, in
core/trib_secagg_crypto.h and core/trib_shamir.h; this module follows them.

Uses Debian's python3-cryptography (and numpy for the PRG words).
"""
import os
import struct

import numpy as np
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SALT = b"tributary-secagg-v1"
LABEL_MAX = 32
PRG_MAX_WORDS = 1 << 36

P = (1 << 61) - 1
CHUNK_BYTES = 7
SECRET_MAX = 64
T_MAX = 255
X_MAX = 0x7FFFFFFF

_RAW = serialization.Encoding.Raw


def public_key(sk: bytes) -> bytes:
    """pk = X25519(sk, basepoint)."""
    return X25519PrivateKey.from_private_bytes(sk).public_key().public_bytes(
        _RAW, serialization.PublicFormat.Raw)


def agree(sk: bytes, peer_pk: bytes) -> bytes:
    """The raw X25519 shared secret; ValueError for an all-zero result (a low-order peer key)."""
    return X25519PrivateKey.from_private_bytes(sk).exchange(
        X25519PublicKey.from_public_bytes(peer_pk))


def hkdf(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def derive(ikm: bytes, label: str, rnd: int, a: int, b: int) -> bytes:
    """The 32-byte key of (label, round, a, b): HKDF-SHA256, salt SALT,
    info = label || 0x00 || u64 LE round || u32 LE a || u32 LE b."""
    lb = label.encode()
    if not 0 < len(lb) <= LABEL_MAX:
        raise ValueError(f"label {label!r}: 1 to {LABEL_MAX} bytes")
    info = lb + b"\0" + struct.pack("<QII", rnd, a, b)
    return hkdf(ikm, SALT, info, 32)


def prg_bytes(key: bytes, first_word: int, length: int) -> bytes:
    """Bytes [4*first_word, 4*first_word + length) of the key's ChaCha20 stream (zero nonce)."""
    if first_word < 0 or first_word + (length + 3) // 4 > PRG_MAX_WORDS:
        raise ValueError("PRG range past 2^36 words")
    start = 4 * first_word
    block, skip = divmod(start, 64)
    nonce16 = struct.pack("<I", block) + bytes(12)
    enc = Cipher(algorithms.ChaCha20(key, nonce16), mode=None).encryptor()
    return enc.update(bytes(skip + length))[skip:]


def prg_u32(key: bytes, first: int, n: int) -> np.ndarray:
    """Words [first, first + n) of the key's stream, u32 little-endian."""
    return np.frombuffer(prg_bytes(key, first, 4 * n), dtype="<u4").astype(np.uint32)


def seal(key: bytes, nonce: bytes, pt: bytes, ad: bytes) -> bytes:
    return ChaCha20Poly1305(key).encrypt(nonce, pt, ad)


def open_(key: bytes, nonce: bytes, ct: bytes, ad: bytes) -> bytes:
    """Raises cryptography.exceptions.InvalidTag when the tag does not verify."""
    return ChaCha20Poly1305(key).decrypt(nonce, ct, ad)


# Shamir over GF(2^61 - 1)

def _chunks(secret: bytes):
    return [int.from_bytes(secret[o:o + CHUNK_BYTES], "little")
            for o in range(0, len(secret), CHUNK_BYTES)]


def _coef_stream(seed: bytes):
    """u64 LE words of seed's PRG stream masked to 61 bits, P rejected (as trib_shamir.c)."""
    word = 0
    while True:
        buf = prg_bytes(seed, word, 64)
        word += 16
        for o in range(0, 64, 8):
            v = int.from_bytes(buf[o:o + 8], "little") & P
            if v != P:
                yield v


def _check(secret_len, t, xs):
    if not 0 < secret_len <= SECRET_MAX:
        raise ValueError(f"secret of {secret_len} bytes: 1 to {SECRET_MAX}")
    if not 0 < t <= T_MAX:
        raise ValueError(f"threshold {t}: 1 to {T_MAX}")
    if len(xs) < t:
        raise ValueError(f"{len(xs)} points for threshold {t}")
    if any(not 0 < x <= X_MAX for x in xs) or len(set(xs)) != len(xs):
        raise ValueError(f"points must be distinct, 1 to {X_MAX}")


def shamir_split(secret: bytes, t: int, xs, coef_seed: bytes = None):
    """Shares [(x, [y_c...])] of secret at points xs, threshold t. coef_seed (32 bytes) fixes
    the coefficients (tests); None draws it from os.urandom."""
    _check(len(secret), t, list(xs))
    if coef_seed is None:
        coef_seed = os.urandom(32)
    cs = _coef_stream(coef_seed)
    ys = {x: [] for x in xs}
    for s in _chunks(secret):
        coef = [s] + [next(cs) for _ in range(t - 1)]
        for x in xs:
            y = 0
            for a in reversed(coef):
                y = (y * x + a) % P
            ys[x].append(y)
    return [(x, ys[x]) for x in xs]


def shamir_combine(shares, t: int, secret_len: int) -> bytes:
    """The secret from the first t shares; ValueError if they are not of one secret."""
    shares = list(shares)[:t]
    _check(secret_len, t, [x for x, _ in shares])
    xs = [x for x, _ in shares]
    lam = []
    for i, xi in enumerate(xs):
        num = den = 1
        for j, xj in enumerate(xs):
            if j != i:
                num = num * xj % P
                den = den * (xj - xi) % P
        lam.append(num * pow(den, P - 2, P) % P)
    out = b""
    for c in range((secret_len + CHUNK_BYTES - 1) // CHUNK_BYTES):
        nb = min(CHUNK_BYTES, secret_len - c * CHUNK_BYTES)
        s = sum(l * y[c] for l, (_, y) in zip(lam, shares)) % P
        if s >> (8 * nb):
            raise ValueError("shares do not rebuild a secret (too few, or not of one secret)")
        out += s.to_bytes(nb, "little")
    return out


def share_encode(share) -> bytes:
    x, ys = share
    return struct.pack("<I", x) + b"".join(struct.pack("<Q", y) for y in ys)


def share_decode(data: bytes, secret_len: int):
    n = (secret_len + CHUNK_BYTES - 1) // CHUNK_BYTES
    if len(data) != 4 + 8 * n:
        raise ValueError(f"share of {len(data)} bytes, want {4 + 8 * n}")
    x, = struct.unpack_from("<I", data)
    ys = list(struct.unpack_from(f"<{n}Q", data, 4))
    if not 0 < x <= X_MAX or any(y >= P for y in ys):
        raise ValueError("share out of range")
    return (x, ys)
