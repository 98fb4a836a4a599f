# SPDX-License-Identifier: MIT
"""numpy reference for functions/fn_dp.c: ChaCha20 keystream, Box-Muller noise, RDP accountant.

usage:
  dp.py stream SEED ROUND COUNTER NBLOCKS   ks: keystream bytes (checked against libsodium too)
  dp.py noise SEED ROUND LO N STDDEV        z: normals for [LO, LO+N); x0, x: a vector before
                                            and after the noise is added
  dp.py eps Z:ROUNDS:DELTA...               eps_i, order_i per case
"""
import ctypes
import ctypes.util
import struct
import sys

import numpy as np

import refio

u32 = np.uint32


def key_nonce(seed, rnd):
    key = struct.pack("<Q", seed) + bytes(24)
    nonce = b"TrDP" + struct.pack("<Q", rnd)
    return key, nonce


def rotl(x, r):
    return (x << u32(r)) | (x >> u32(32 - r))


def chacha20(key, nonce, counter, nblocks):
    """RFC 8439 keystream, all blocks at once: state words are arrays over the blocks."""
    k = np.frombuffer(key, "<u4")
    nn = np.frombuffer(nonce, "<u4")
    init = [np.full(nblocks, c, u32) for c in (0x61707865, 0x3320646e, 0x79622d32, 0x6b206574)]
    init += [np.full(nblocks, w, u32) for w in k]
    init += [(np.arange(nblocks, dtype=np.uint64) + counter).astype(u32)]
    init += [np.full(nblocks, w, u32) for w in nn]
    x = [w.copy() for w in init]

    def qr(a, b, c, d):
        x[a] += x[b]; x[d] ^= x[a]; x[d] = rotl(x[d], 16)
        x[c] += x[d]; x[b] ^= x[c]; x[b] = rotl(x[b], 12)
        x[a] += x[b]; x[d] ^= x[a]; x[d] = rotl(x[d], 8)
        x[c] += x[d]; x[b] ^= x[c]; x[b] = rotl(x[b], 7)

    with np.errstate(over="ignore"):
        for _ in range(10):
            qr(0, 4, 8, 12); qr(1, 5, 9, 13); qr(2, 6, 10, 14); qr(3, 7, 11, 15)
            qr(0, 5, 10, 15); qr(1, 6, 11, 12); qr(2, 7, 8, 13); qr(3, 4, 9, 14)
        out = np.stack([x[i] + init[i] for i in range(16)], axis=1)  # blocks x 16 words
    return out.astype("<u4").tobytes()


def sodium_stream(key, nonce, counter, nblocks):
    """libsodium's crypto_stream_chacha20_ietf_xor_ic, if the library is on this system."""
    name = ctypes.util.find_library("sodium")
    if not name:
        return None
    lib = ctypes.CDLL(name)
    if lib.sodium_init() < 0:
        return None
    n = 64 * nblocks
    out = ctypes.create_string_buffer(n)
    zeros = bytes(n)
    f = lib.crypto_stream_chacha20_ietf_xor_ic
    f.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulonglong, ctypes.c_char_p,
                  ctypes.c_uint32, ctypes.c_char_p]
    if f(out, zeros, n, nonce, counter, key) != 0:
        raise SystemExit("dp.py: libsodium failed")
    return out.raw


def stream(seed, rnd, counter, nblocks):
    key, nonce = key_nonce(seed, rnd)
    ks = chacha20(key, nonce, counter, nblocks)
    sod = sodium_stream(key, nonce, counter, nblocks)
    if sod is None:
        refio.note("dp.py: libsodium not found; keystream checked against RFC 8439 only")
    elif sod != ks:
        raise SystemExit("dp.py: numpy ChaCha20 disagrees with libsodium")
    refio.emit("ks", np.frombuffer(ks, np.uint8))
    refio.emit("sodium", np.array([0 if sod is None else 1], np.uint64))


def normals(seed, rnd, lo, n):
    """z(c) for c in [lo, lo+n): pair p = c // 2 from stream bytes [16p, 16p+16)."""
    key, nonce = key_nonce(seed, rnd)
    p0, p1 = lo // 2, (lo + n - 1) // 2 + 1
    b0, b1 = p0 // 4, (p1 - 1) // 4 + 1
    ks = np.frombuffer(chacha20(key, nonce, b0, b1 - b0), "<u8")
    a, b = ks[0::2], ks[1::2]  # pair p uses words 2(p - 4 b0) and 2(p - 4 b0) + 1
    a, b = a[p0 - 4 * b0:p1 - 4 * b0], b[p0 - 4 * b0:p1 - 4 * b0]
    u1 = ((a >> np.uint64(11)) + np.uint64(1)).astype(np.float64) * 2.0 ** -53
    u2 = (b >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
    r = np.sqrt(-2.0 * np.log(u1))
    z = np.empty(2 * (p1 - p0))
    z[0::2] = r * np.cos(2 * np.pi * u2)
    z[1::2] = r * np.sin(2 * np.pi * u2)
    return z[lo - 2 * p0:lo - 2 * p0 + n]


def noise(seed, rnd, lo, n, stddev):
    z = normals(seed, rnd, lo, n)
    rng = np.random.default_rng(seed)
    x0 = rng.normal(0, 1, n).astype(np.float32)
    x = (x0.astype(np.float64) + stddev * z).astype(np.float32)
    refio.emit("z", z)
    refio.emit("x0", x0)
    refio.emit("x", x)


ORDERS = np.array([1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)), dtype=np.float64)


def eps(cases):
    for i, c in enumerate(cases):
        z, rounds, delta = (float(v) for v in c.split(":"))
        if rounds == 0:
            refio.scalar(f"eps_{i}", 0.0)
            refio.scalar(f"order_{i}", 0.0)
            continue
        rdp = rounds * ORDERS / (2 * z * z)
        e = rdp + np.log(1 / delta) / (ORDERS - 1)
        j = int(np.argmin(e))
        refio.scalar(f"eps_{i}", e[j])
        refio.scalar(f"order_{i}", ORDERS[j])


def main():
    mode, a = sys.argv[1], sys.argv[2:]
    if mode == "stream":
        stream(int(a[0]), int(a[1]), int(a[2]), int(a[3]))
    elif mode == "noise":
        noise(int(a[0]), int(a[1]), int(a[2]), int(a[3]), float(a[4]))
    elif mode == "eps":
        eps(a)
    else:
        raise SystemExit(f"dp.py: unknown mode {mode}")
    refio.end()


if __name__ == '__main__':
    main()
