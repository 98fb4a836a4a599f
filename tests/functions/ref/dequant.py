# SPDX-License-Identifier: MIT
"""numpy reference for functions/fn_dequant.c: decoding tables and dequantising folds.

usage:
  dequant.py tables               f16, bf16: the f32 value of every 16-bit pattern; i8: every byte
  dequant.py fold DTYPE N SEED    acc, x (raw bytes), w, scale, decoded, want: acc + w * decoded in
                                  f32 with two roundings (numpy's order); DTYPE: f16 bf16 i8
"""
import sys

import numpy as np

import refio

f32 = np.float32


def bf16_decode(u):
    return (u.astype(np.uint32) << np.uint32(16)).view(f32)


def tables():
    pat = np.arange(65536, dtype=np.uint16)
    refio.emit("f16", pat.view(np.float16).astype(f32))
    refio.emit("bf16", bf16_decode(pat))
    refio.emit("i8", np.arange(-128, 128, dtype=np.int8).astype(f32))


def fold(dtype, n, seed):
    rng = np.random.default_rng(seed)
    acc = rng.normal(0, 4, n).astype(f32)
    w = f32(rng.uniform(0.05, 3))
    scale = f32(1)
    if dtype == "f16":
        # Half random bit patterns (subnormals, +-65504, zeros), half realistic values.
        u = rng.integers(0, 65536, n, dtype=np.uint16)
        u[(u & 0x7c00) == 0x7c00] &= 0xbfff  # no Inf/NaN: clear an exponent bit
        real = rng.normal(0, 0.05, n).astype(np.float16).view(np.uint16)
        u[1::2] = real[1::2]
        x, dec = u, u.view(np.float16).astype(f32)
    elif dtype == "bf16":
        u = rng.integers(0, 65536, n, dtype=np.uint16)
        u[(u & 0x7f80) == 0x7f80] &= 0xbfff
        u[(u & 0x7f80) > 0x4700] &= 0xf0ff  # keep w * x finite
        real = (rng.normal(0, 0.05, n).astype(f32).view(np.uint32) >> np.uint32(16))
        u[1::2] = real[1::2].astype(np.uint16)
        x, dec = u, bf16_decode(u)
    elif dtype == "i8":
        x = rng.integers(-128, 128, n, dtype=np.int8)
        scale = f32(rng.uniform(1e-3, 1))
        dec = x.astype(f32)
    else:
        raise SystemExit(f"dequant.py: unknown dtype {dtype}")
    ws = w * scale if dtype == "i8" else w  # f32 * f32: rounded once, as fn_fold_i8
    want = acc + ws * dec
    assert want.dtype == f32 and np.all(np.isfinite(want))
    refio.emit("acc", acc)
    refio.emit("x", np.frombuffer(x.tobytes(), np.uint8))
    refio.emit("w", np.array([w], f32))
    refio.emit("scale", np.array([scale], f32))
    refio.emit("decoded", dec)
    refio.emit("want", want)


def main():
    mode, a = sys.argv[1], sys.argv[2:]
    if mode == "tables":
        tables()
    elif mode == "fold":
        fold(a[0], int(a[1]), int(a[2]))
    else:
        raise SystemExit(f"dequant.py: unknown mode {mode}")
    refio.end()


main()
