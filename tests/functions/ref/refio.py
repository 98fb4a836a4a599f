# SPDX-License-Identifier: MIT
"""Output side of the reference protocol that tests/functions/ref/ref.h reads (see there)."""
import sys

import numpy as np

_out = sys.stdout.buffer
_pos = 0


def emit(name, a):
    """Writes array @a (any shape, written flat in C order) as record @name."""
    global _pos
    a = np.ascontiguousarray(a)
    if a.dtype.byteorder == '>':
        a = a.astype(a.dtype.newbyteorder('<'))
    head = f"{name} {a.dtype.str} {a.size}"
    # Pad the line so the data starts 8-aligned in the reader's buffer.
    pad = (-(_pos + len(head) + 1)) % 8
    line = (head + " " * pad + "\n").encode()
    _out.write(line)
    data = a.tobytes()
    _out.write(data)
    _pos += len(line) + len(data)


def scalar(name, x):
    emit(name, np.array([x], dtype=np.float64))


def end():
    _out.write(b"end - 0\n")
    _out.flush()


def note(msg):
    print(msg, file=sys.stderr)
