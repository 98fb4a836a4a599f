# SPDX-License-Identifier: MIT
"""Secure aggregation's client-side primitives, byte for byte those of core/trib_secagg_crypto.c
and core/trib_shamir.c (tests/secagg/vectors.json pins both sides).

X25519 (RFC 7748), HKDF-SHA256 (RFC 5869) key derivation, the ChaCha20 (RFC 8439, IETF) mask
PRG read as u32 little-endian words, ChaCha20-Poly1305 for shares, and Shamir secret sharing
over GF(2^61 - 1) with secrets cut into 7-byte chunks. The formats are documented once, in
core/trib_secagg_crypto.h and core/trib_shamir.h; this module follows them.

Uses Debian's python3-cryptography (and numpy for the PRG words).
"""
import hmac
import os
import struct

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

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


def keypair():
    """A fresh X25519 key: (its 32 secret bytes, the loaded key, the public key's bytes).
    Generated rather than loaded from random bytes: OpenSSL 3 loads a raw private key through
    its DER decoder, milliseconds a key, the largest cost of a client's round before this."""
    k = X25519PrivateKey.generate()
    return (k.private_bytes(_RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption()),
            k, k.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw))


def agree(sk, peer_pk: bytes) -> bytes:
    """The raw X25519 shared secret; ValueError for an all-zero result (a low-order peer key).
    sk: the 32 secret bytes, or an X25519PrivateKey made from them (loading one costs more
    than the exchange: a client with many neighbours loads its keys once)."""
    if not isinstance(sk, X25519PrivateKey):
        sk = X25519PrivateKey.from_private_bytes(sk)
    return sk.exchange(X25519PublicKey.from_public_bytes(peer_pk))


def hkdf(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 (RFC 5869) on the standard library's HMAC: the same bytes as cryptography's
    HKDF (test_secagg.py checks both), at a small part of its cost per call: a client derives
    3k + 1 keys a round (k neighbours), and the objects cryptography makes for each dominated."""
    if length <= 0 or length > 255 * 32:
        raise ValueError(f"HKDF length {length}: 1 to {255 * 32}")
    prk = hmac.digest(salt or bytes(32), ikm, "sha256")
    out, t = b"", b""
    for i in range((length + 31) // 32):
        t = hmac.digest(prk, t + info + bytes([i + 1]), "sha256")
        out += t
    return out[:length]


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


# The client side of one SecAgg+ round (runtime/node/rt_secagg.h describes the stages)

SECRET_BYTES = 32
SHARE_BYTES = 4 + 8 * ((SECRET_BYTES + CHUNK_BYTES - 1) // CHUNK_BYTES)
PT_BYTES = 16 + 2 * SHARE_BYTES
CT_BYTES = 12 + PT_BYTES + 16
REVEAL_SELF, REVEAL_SECRET = 1, 2


def quantise(x, clip: float, bits: int) -> np.ndarray:
    """q = floor((clip(x, -c, c) + c) / 2c * (2^b - 1) + 1/2), as u32. Deterministic rounding:
    the error is at most half a step, c / (2^b - 1)."""
    qmax = (1 << bits) - 1
    x = np.clip(np.asarray(x, dtype=np.float64), -clip, clip)
    return np.floor((x + clip) / (2 * clip) * qmax + 0.5).astype(np.uint32)


def dequantise_mean(sums, weight: int, clip: float, bits: int) -> np.ndarray:
    """The weighted mean from the unmasked sums of n_u * q_u and their total weight."""
    qmax = (1 << bits) - 1
    return (np.asarray(sums, dtype=np.float64) / weight * 2 * clip / qmax - clip).astype(
        np.float32)


def graph(ids, k: int, seed: bytes):
    """The server's neighbour graph over the clients that advertised (rt_secagg.c's draw_graph):
    ids shuffled by Fisher-Yates on u64 draws from seed's PRG, then a ring with k/2 on each side
    (everyone else when k >= len(ids) - 1). Returns {u: sorted neighbours}."""
    order = sorted(ids)
    m = len(order)
    word = 0
    for i in range(m - 1, 0, -1):
        w = prg_u32(seed, word, 2)
        word += 2
        j = (int(w[0]) | int(w[1]) << 32) % (i + 1)
        order[i], order[j] = order[j], order[i]
    out = {}
    for p, u in enumerate(order):
        if k >= m - 1:
            nb = [v for v in order if v != u]
        else:
            nb = []
            for j in range(1, k // 2 + 1):
                nb += [order[(p + j) % m], order[(p - j) % m]]
        out[u] = sorted(nb)
    return out


class SecAggClient:
    """One client's secrets and messages for one round. rnd(n) gives random bytes
    (os.urandom unless a test fixes it)."""

    def __init__(self, u: int, rnd_no: int, threshold: int, rnd=os.urandom):
        self.u, self.round, self.t, self.rnd = u, rnd_no, threshold, rnd
        self.c_sk, self.s_sk, self.b = rnd(32), rnd(32), rnd(32)
        self.held = {}        # v -> (share of s_sk_v, share of b_v), decrypted at masked input
        self.revealed = {}    # v -> kind already revealed (never both kinds for one v)

    def advertise(self):
        return public_key(self.c_sk), public_key(self.s_sk)

    def set_keys(self, c, s):
        """c, s: (secret bytes, loaded key) of keypair(): this round's c_sk and s_sk."""
        self.c_sk, self.s_sk = c[0], s[0]
        self.__dict__["_keys"] = {"c_sk": c, "s_sk": s}

    def _loaded(self, which):
        """The loaded key object of self.c_sk or self.s_sk (reloaded if the bytes change)."""
        sk = getattr(self, which)
        cache = self.__dict__.setdefault("_keys", {})
        if cache.get(which, (None,))[0] != sk:
            cache[which] = (sk, X25519PrivateKey.from_private_bytes(sk))
        return cache[which][1]

    def _agreed(self, which, peer_pk):
        """X25519(own key @which, peer_pk), once per peer: the share stage and the masked stage
        agree with the same c_pk (the costly step of both), so the second time is a lookup."""
        sk = self._loaded(which)
        cache = self.__dict__.setdefault("_agreed_keys", {})
        key = (which, getattr(self, which), peer_pk)
        if key not in cache:
            cache[key] = agree(sk, peer_pk)
        return cache[key]

    def _share_key(self, peer_c_pk, frm, to):
        return derive(self._agreed("c_sk", peer_c_pk), "share", self.round, frm, to)

    def share(self, neighbours):
        """neighbours: {v: (c_pk, s_pk)}. Returns {v: ciphertext (CT_BYTES)}."""
        pts = sorted(neighbours)
        ss = shamir_split(self.s_sk, self.t, [v + 1 for v in pts], self.rnd(32))
        bs = shamir_split(self.b, self.t, [v + 1 for v in pts], self.rnd(32))
        out = {}
        for v, s_sh, b_sh in zip(pts, ss, bs):
            head = struct.pack("<IIQ", self.u, v, self.round)
            pt = head + share_encode(s_sh) + share_encode(b_sh)
            nonce = self.rnd(12)
            key = self._share_key(neighbours[v][0], self.u, v)
            out[v] = nonce + seal(key, nonce, pt, head[:8])
        return out

    def masked(self, x_words, inbox, keys):
        """x_words: u32 (n_u * q, then n_u); inbox: {v: ciphertext from v}; keys: {v: (c_pk,
        s_pk)}. Returns y (u32): x + PRG(b) + pairwise masks with every v in the inbox."""
        y = np.array(x_words, dtype=np.uint32)
        n = len(y)
        y += prg_u32(derive(self.b, "self", self.round, self.u, 0), 0, n)
        for v, ct in sorted(inbox.items()):
            c_pk, s_pk = keys[v]
            head = struct.pack("<II", v, self.u)
            if len(ct) != CT_BYTES:
                raise ValueError(f"share from {v}: {len(ct)} bytes, want {CT_BYTES}")
            pt = open_(self._share_key(c_pk, v, self.u), ct[:12], ct[12:], head)
            if pt[:16] != head + struct.pack("<Q", self.round):
                raise ValueError(f"share from {v}: addressed to another client or round")
            self.held[v] = (pt[16:16 + SHARE_BYTES], pt[16 + SHARE_BYTES:])
            lo, hi = min(self.u, v), max(self.u, v)
            m = prg_u32(derive(self._agreed("s_sk", s_pk), "mask", self.round, lo, hi), 0, n)
            if self.u < v:
                y += m
            else:
                y -= m
        return y

    def reveal(self, wanted):
        """wanted: [(v, kind)]. Returns {v: share bytes}; refuses to reveal both kinds of one v
        (that would give the server v's input) and anything it does not hold."""
        out = {}
        for v, kind in wanted:
            if v not in self.held:
                raise ValueError(f"asked for the share of {v}, which did not share with us")
            if self.revealed.get(v, kind) != kind:
                raise ValueError(f"asked for both secrets of {v}: refused")
            self.revealed[v] = kind
            out[v] = self.held[v][0 if kind == REVEAL_SECRET else 1]
        return out


# --- the HTTP stages (runtime/api/rt_api_secagg.c; README "Secure aggregation") ---

def _http(url, method, path, token, body=None, ctype="application/json", timeout=30):
    import json
    import urllib.error
    import urllib.request
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url.rstrip("/") + path, data=data, method=method,
                                 headers={"Authorization": "Bearer " + token,
                                          **({"Content-Type": ctype} if data else {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, {"error": raw.decode(errors="replace")}


class SecAggError(RuntimeError):
    """The server refused a stage (status, body): a 410 means this client is out of the round."""

    def __init__(self, stage, status, body):
        super().__init__(f"secagg {stage}: HTTP {status}: {body}")
        self.status, self.body = status, body


class SecAggSession:
    """One client's round over HTTP, stage by stage (tests drive the stages one at a time to
    drop clients between them; run_secagg_round runs them all). token: a client token."""

    def __init__(self, url, job, token, poll_s=0.05, reconnect_s=30):
        self.url, self.job, self.token, self.poll_s = url, job, token, poll_s
        self.reconnect_s = reconnect_s
        self.base = f"/v1/jobs/{job}/secagg"
        self.client = None

    def _call(self, stage, method, path, body=None, ctype="application/json"):
        """One request; a lost connection (the server restarting) is retried with the same
        body for up to reconnect_s: the server keeps the round across a restart and answers a
        stage sent again with the same body as it did the first time."""
        import http.client
        import time
        end = time.monotonic() + self.reconnect_s
        while True:
            try:
                st, obj = _http(self.url, method, self.base + path, self.token, body, ctype)
                break
            # Refused, reset, closed before the answer (urllib's URLError too), or closed
            # inside it: the server sends an answer's head and body in two writes, and a
            # kill -9 between them leaves a head whose body never comes (IncompleteRead).
            except (OSError, http.client.IncompleteRead):
                if time.monotonic() > end:
                    raise
                time.sleep(0.2)
        if st != 200:
            raise SecAggError(stage, st, obj)
        return obj

    def _wait(self, what, timeout):
        import time
        end = time.monotonic() + timeout
        while True:
            obj = self._call(what, "GET", "/" + what)
            if obj.get("ready"):
                return obj
            if time.monotonic() > end:
                raise SecAggError(what, 0, f"not ready after {timeout} s: {obj}")
            time.sleep(self.poll_s)

    def join(self):
        """POST keys: fresh secrets; the server gives our index and the round's parameters."""
        # The index is the server's: make the secrets first, the client object after.
        c, s = keypair(), keypair()
        info = self._call("keys", "POST", "/keys", {"c_pk": c[2].hex(), "s_pk": s[2].hex()})
        self.info = info
        self.client = SecAggClient(info["index"], info["round"], info["threshold"])
        self.client.set_keys(c[:2], s[:2])
        return info

    def send_shares(self, timeout=60):
        obj = self._wait("keys", timeout)
        self.keys = {n["index"]: (bytes.fromhex(n["c_pk"]), bytes.fromhex(n["s_pk"]))
                     for n in obj["neighbours"]}
        cts = self.client.share(self.keys)
        return self._call("shares", "POST", "/shares",
                          {"shares": [{"to": v, "ct": ct.hex()} for v, ct in cts.items()]})

    def send_input(self, update, samples, timeout=60):
        """update: the flat float model (params values); samples: its weight n_u, 1 to the
        job's max_samples (the server cannot check a masked n_u: a larger one could wrap the
        round's sum, so it is refused here, before anything is sent)."""
        most = self.info.get("max_samples", (1 << 32) // ((1 << self.info["bits"]) - 1))
        if not 1 <= int(samples) <= most:
            raise ValueError(f"samples {samples}: this job's secure rounds take 1 to "
                             f"max_samples = {most} (README \"Secure aggregation\")")
        obj = self._wait("shares", timeout)
        inbox = {s["from"]: bytes.fromhex(s["ct"]) for s in obj["shares"]}
        q = quantise(update, self.info["clip"], self.info["bits"]).astype(np.uint64)
        x = np.concatenate([q * int(samples), [int(samples)]])
        if x.max() >= 1 << 32:
            raise ValueError("samples * (2^bits - 1) overflows a u32 word: use fewer bits")
        y = self.client.masked(x.astype(np.uint32), inbox, self.keys)
        return self._call("input", "POST", "/input", y.astype("<u4").tobytes(),
                          "application/octet-stream")

    def send_unmask(self, timeout=60):
        obj = self._wait("unmask", timeout)
        kinds = {"self": REVEAL_SELF, "secret": REVEAL_SECRET}
        shares = self.client.reveal([(r["index"], kinds[r["kind"]]) for r in obj["reveal"]])
        return self._call("unmask", "POST", "/unmask",
                          {"reveals": [{"index": v, "share": s.hex()} for v, s in shares.items()]})


def run_secagg_round(url, job, token, update, samples, timeout=60):
    """One secure round for one client: join, shares, masked input, unmask. Returns the round
    number it took part in; SecAggError if the server dropped it or the round failed."""
    s = SecAggSession(url, job, token)
    info = s.join()
    s.send_shares(timeout)
    s.send_input(update, samples, timeout)
    s.send_unmask(timeout)
    return info["round"]
