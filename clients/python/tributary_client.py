# SPDX-License-Identifier: MIT
# Python client of Tributary's HTTP API v1: create jobs, submit updates, wait for and fetch models.
"""Python client for Tributary's HTTP API v1 (standard library + numpy only).

    from tributary_client import Client

    admin = Client("http://127.0.0.1:8080", open("tributary-data/admin-token").read().strip())
    job = admin.create_job("digits", clients_per_round=20, tensors=model.state_dict())
    job.set_initial_model(model.state_dict())          # optional: the default start is zeros

    # on each client, with the job's token:
    job = Client(url, job_token).job("digits")
    version, weights = job.model()                     # version v = completed rounds
    ...train from weights...
    job.submit(model.state_dict(), round=version, samples=len(my_data))
    version, weights = job.wait_model(after=version)   # blocks until round `version` closes

    # or let the client loop do all of that, every round until the job is done:
    job.run(train, evaluate)        # train(model, config) -> (update, samples[, metrics])

The loop (:meth:`Job.run`) and its adapter for objects with Flower's NumPyClient interface
(:func:`run_numpy_client`) are described where they are defined.

Updates are a dict of name -> array: numpy arrays, anything numpy can convert, or PyTorch
tensors (a ``state_dict()`` works as is; tensors are converted with ``.detach().cpu().numpy()``
without importing torch). Every array is sent as little-endian float32 in a safetensors body,
or with ``format="npz"`` in a stored .npz (numpy's ``np.savez``); an array of another dtype
is a TypeError naming it, unless the call has ``cast=True``. Models come back as a dict of
float32 numpy arrays with the job's tensor names and shapes, in the job's tensor order.

Model versions: version ``v`` is the number of completed rounds (``v = 0`` is the starting
model). A client trains from version ``r`` and submits with ``round=r``; ``wait_model(after=r)``
returns version ``r + 1`` (or later) once round ``r`` has closed.

Every error response raises :class:`TributaryError` with the HTTP status and the server's
``"error"`` message (and, for a 409 round mismatch, the job's current ``round``). A 503 (the
server's aggregation memory is full, or it cannot store a model) is retried after its
``Retry-After``, a bounded number of times. A :class:`Client` holds one keep-alive connection
and is not thread-safe: use one per thread.

Client credentials: a job's token is shared by everyone who holds it. For one identity per
client, mint a credential per client (``job.mint_client("site-3")``, with the admin token or the
job's) and submit with it (``job.as_client(cred).submit(...)``, or ``Client(url, cred["token"])``).
The server counts one update per client per round (a second one is a 409), and a job created with
``client_auth="required"`` takes updates only from client credentials.

Idempotent resends: every ``submit`` sends an ``Idempotency-Key`` header (the IETF
httpapi-idempotency-key header), a fresh random key per update (22 characters of URL-safe
base64, 128 random bits) or the caller's own (``idempotency_key=``). The server answers a
second request with the same key, for the same job and round, with the first answer, and counts
the update once, across a crash too. So when the connection breaks around an update (reset,
closed before or in the middle of the answer, timed out, refused while the server restarts),
``submit`` sends the same bytes again with the same key (to the next gateway, when the Client
lists several), up to ``resends`` times, waiting
0.1 s, 0.2 s, 0.4 s, ... (at most ``max_retry_wait``) in between; then it raises
:class:`TributaryError` with status 0, whose ``idempotency_key`` lets you resend it later
yourself. A 503 is retried with the same key too; any other answer (a 4xx) is final.

HTTPS: an ``https://`` URL is verified against the system's CA store (hostname included), or
against ``ca_file=`` (PEM), or pinned with ``pin_sha256=`` (the SHA-256 of the server
certificate's DER, 64 hex digits, as ``tributary up --tls self-signed`` prints it): with a pin
the chain and name are not checked (unless ``ca_file`` is given too), the fingerprint is
compared right after the handshake, before any request byte is sent, and a mismatch raises
:class:`TLSVerifyError` (never resent). Standard library ``ssl`` only; TLS 1.2 or newer.
"""
import base64
import hashlib
import hmac
import http.client
import io
import json
import math
import os
import re
import socket
import ssl
import struct
import time
import urllib.parse

import numpy as np

__all__ = ["Client", "Job", "TributaryError", "TLSVerifyError", "encode_safetensors", "encode_npz",
           "decode_safetensors", "new_idempotency_key", "check_samples", "metrics_header",
           "run_numpy_client", "frl_ranking", "encode_rankings"]

SAFETENSORS_TYPE = "application/x-safetensors"
NPZ_TYPE = "application/x-npz"
IDEMPOTENCY_HEADER = "Idempotency-Key"
# What the server takes as a key: 1 to 64 bytes of visible ASCII.
IDEMPOTENCY_KEY_MAX = 64
# The first wait before a resend after a broken connection, doubled each time.
RESEND_FIRST_WAIT_S = 0.1
# The server ends a long poll with 304 after at most this many seconds.
LONG_POLL_MAX_S = 60
# What the server takes as X-Tributary-Samples and as an evaluation's "samples".
SAMPLES_MAX = 1 << 40
# X-Tributary-Metrics: at most this many numbers, named by _METRIC_NAME, in this many bytes.
METRICS_HEADER = "X-Tributary-Metrics"
METRICS_MAX = 16
METRICS_HEADER_MAX = 1024
_METRIC_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")


class TributaryError(Exception):
    """An error answer from the server, or a transport failure (status 0).

    Attributes:
        status:  the HTTP status (401, 409, ...), or 0 when no answer could be had.
        message: the server's ``"error"`` text (or a description of the failure).
        round:   on a 409 round mismatch, the job's current round; otherwise None.
        body:    the parsed JSON body, when there was one.
        idempotency_key: the ``Idempotency-Key`` the request carried (an update's), or None.
                 After a status 0 the update may or may not have been counted: submit it
                 again with ``idempotency_key=`` this key, and it is counted once.
    """

    def __init__(self, status, message, round=None, body=None, idempotency_key=None):
        super().__init__(status, message)
        self.status = status
        self.message = message
        self.round = round
        self.body = body
        self.idempotency_key = idempotency_key

    def __str__(self):
        s = "HTTP %d: %s" % (self.status, self.message) if self.status else self.message
        if self.round is not None:
            s += " (server round %d)" % self.round
        return s


class TLSVerifyError(TributaryError):
    """The https:// server's certificate did not verify, or did not match ``pin_sha256``.

    Status 0 (no HTTP answer); never resent: the same server would fail the same way.
    """

    def __init__(self, message):
        super().__init__(0, message)


def _parse_pin(pin):
    """A SHA-256 fingerprint (64 hex digits, ':' between pairs allowed) as 32 bytes."""
    if pin is None:
        return None
    text = pin.replace(":", "") if len(pin) == 95 else pin
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 32 or (len(pin) == 95 and pin[2::3] != ":" * 31):
        raise ValueError("pin_sha256 must be a SHA-256 fingerprint, 64 hex digits: %r" % pin)
    return raw


def _ssl_context(ca_file, pin):
    """The context of an https:// client (see the module's HTTPS paragraph)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    if ca_file is not None:
        ctx.load_verify_locations(cafile=ca_file)
    elif pin is None:
        ctx.load_default_certs()
    if pin is not None:
        # The pin stands for the name (and for the chain, unless a CA file is given too).
        ctx.check_hostname = False
        if ca_file is None:
            ctx.verify_mode = ssl.CERT_NONE
    return ctx


class _HTTPConnection(http.client.HTTPConnection):
    """An HTTPConnection whose connect has its own, shorter timeout."""

    def __init__(self, host, port, connect_timeout, **kw):
        super().__init__(host, port, **kw)
        self._connect_timeout = connect_timeout

    def connect(self):
        answer, self.timeout = self.timeout, self._connect_timeout
        try:
            super().connect()
        finally:
            self.timeout = answer
        self.sock.settimeout(answer)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """An HTTPSConnection that checks the peer certificate's SHA-256 after the handshake."""

    def __init__(self, host, port, pin, trust, connect_timeout, **kw):
        super().__init__(host, port, **kw)
        self._pin = pin
        self._trust = trust
        self._connect_timeout = connect_timeout

    def connect(self):
        # The TCP connect and the TLS handshake under the connect timeout.
        answer, self.timeout = self.timeout, self._connect_timeout
        try:
            super().connect()
        except ssl.SSLCertVerificationError as e:
            self.close()
            raise TLSVerifyError("TLS: the certificate of %s:%d did not verify against %s: %s"
                                 % (self.host, self.port, self._trust,
                                    e.verify_message or e)) from e
        finally:
            self.timeout = answer
        self.sock.settimeout(answer)
        if self._pin is None:
            return
        der = self.sock.getpeercert(binary_form=True)
        got = hashlib.sha256(der).digest() if der else b""
        if not hmac.compare_digest(got, self._pin):
            self.close()
            raise TLSVerifyError("TLS: the certificate of %s:%d does not match pin_sha256: its "
                                 "SHA-256 is %s, the pin %s" % (self.host, self.port,
                                                                got.hex() or "(none)",
                                                                self._pin.hex()))


def new_idempotency_key():
    """Returns a fresh random Idempotency-Key: 22 characters of URL-safe base64 (128 bits)."""
    return base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode("ascii")


def _check_idempotency_key(key):
    """Returns @key if the server takes it (1 to 64 bytes of visible ASCII), else ValueError."""
    if not isinstance(key, str) or not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX or \
            any(not 0x21 <= ord(ch) <= 0x7e for ch in key):
        raise ValueError("an idempotency key is 1 to %d visible ASCII characters, not %r" %
                         (IDEMPOTENCY_KEY_MAX, key))
    return key


def check_samples(samples, what="samples"):
    """Returns @samples as an int if it is a whole number of examples, 1 to 2**40.

    An int or a numpy integer only: a float (even 3.0), a bool or a string is a TypeError,
    so that 2.5 is never sent as 2 and ``True`` never as 1.
    """
    if isinstance(samples, (bool, np.bool_)) or not isinstance(samples, (int, np.integer)):
        raise TypeError("%s must be an integer number of examples (int or numpy integer), "
                        "not %s %r" % (what, type(samples).__name__, samples))
    n = int(samples)
    if not 1 <= n <= SAMPLES_MAX:
        raise ValueError("%s must be 1 to 2**40, not %d" % (what, n))
    return n


def metrics_header(metrics, what="metrics"):
    """Returns @metrics (a dict of name -> number) as the compact JSON the server takes in
    X-Tributary-Metrics and in an evaluation, or raises TypeError / ValueError saying why not:
    at most 16 entries, names of 1 to 64 characters ``A-Z a-z 0-9 _ . -``, values finite
    int or float (numpy scalars too; not bool, not a tensor: use ``.item()``), 1 KiB in all.
    """
    if not hasattr(metrics, "items"):
        raise TypeError("%s must be a dict of name -> number, not %s" %
                        (what, type(metrics).__name__))
    if len(metrics) > METRICS_MAX:
        raise ValueError("%s has %d entries; at most %d are sent" %
                         (what, len(metrics), METRICS_MAX))
    out = {}
    for name, value in metrics.items():
        if not isinstance(name, str) or not _METRIC_NAME.match(name):
            raise ValueError("%s: the name %r is not 1 to 64 characters of A-Z a-z 0-9 _ . -" %
                             (what, name))
        if isinstance(value, (bool, np.bool_)) or \
                not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError("%s[%r] must be a number (int or float; .item() a tensor), not "
                            "%s %r" % (what, name, type(value).__name__, value))
        f = float(value)
        if not math.isfinite(f):
            raise ValueError("%s[%r] is %r; only finite numbers are sent" % (what, name, f))
        out[name] = int(value) if isinstance(value, (int, np.integer)) else f
    text = json.dumps(out, separators=(",", ":"))
    if len(text.encode("utf-8")) > METRICS_HEADER_MAX:
        raise ValueError("%s take %d bytes as JSON; at most %d are sent" %
                         (what, len(text.encode("utf-8")), METRICS_HEADER_MAX))
    return text


# --- safetensors ---

def _is_f32(dtype):
    return dtype.kind == "f" and dtype.itemsize == 4


def _to_numpy(value, label="a tensor", cast=False):
    """Returns @value as a C-contiguous little-endian float32 numpy array (a copy if needed).

    An array or tensor of another dtype (float64, float16, an integer type) raises TypeError
    naming it (@label), unless @cast: precision is never dropped behind the caller's back.
    A value without a dtype of its own (a list, a Python number) is converted to float32.
    PyTorch tensors are recognised by duck typing (``.detach().cpu().numpy()``), so torch is
    never imported here.
    """
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu()
        kind = str(getattr(value, "dtype", ""))
        # A bfloat16 tensor has no numpy form: torch converts it, when asked to.
        if kind.startswith("torch.") and kind != "torch.float32":
            if not cast:
                raise TypeError(_dtype_refusal(label, kind))
            value = value.float()
        value = value.numpy()
    elif not isinstance(value, np.ndarray) and hasattr(value, "numpy"):
        value = value.numpy()
    dtype = getattr(value, "dtype", None)
    if dtype is not None and not cast:
        try:
            dtype = np.dtype(dtype)
        except TypeError:
            dtype = None
        if dtype is not None and not _is_f32(dtype):
            raise TypeError(_dtype_refusal(label, str(dtype)))
    return np.asarray(value, dtype="<f4", order="C")


def _dtype_refusal(label, dtype):
    msg = ("%s is %s, and Tributary's tensors are float32: convert it yourself "
           "(.astype(numpy.float32), .float()) or pass cast=True to let the client do it"
           % (label, dtype))
    if "int" in str(dtype):  # an frl client's ranking, sent the float way
        msg += "; an frl job's int32 rankings go through Job.submit_ranking()"
    return msg


def _items(update, cast=False):
    """Yields (name, float32 array) for a dict (or state_dict) of name -> array-like."""
    if not hasattr(update, "items"):
        raise TypeError("an update is a dict (or state_dict) of tensor name -> array, not %s" %
                        type(update).__name__)
    for name, value in update.items():
        if not isinstance(name, str):
            raise TypeError("tensor names are strings, not %r" % (name,))
        yield name, _to_numpy(value, "tensor %r" % name, cast)


def _sparse_items(sparse, dense_names=()):
    """Yields (name + ".indices", int array) and (name + ".values", float32 array) for a dict
    of name -> (indices, values): flat indices into the tensor (int32 or int64; other integer
    arrays become int64), sorted here with their values. ValueError for a repeated index, a
    length mismatch or a name also sent dense; the server checks the range."""
    if sparse is None:
        return
    if not hasattr(sparse, "items"):
        raise TypeError("sparse is a dict of tensor name -> (indices, values), not %s" %
                        type(sparse).__name__)
    for name, pair in sparse.items():
        if not isinstance(name, str):
            raise TypeError("tensor names are strings, not %r" % (name,))
        if name in dense_names:
            raise ValueError("tensor %r is in both the update and sparse: send it once" % name)
        try:
            idx, vals = pair
        except (TypeError, ValueError):
            raise TypeError("sparse[%r] is a pair (indices, values)" % name) from None
        idx = np.asarray(idx.detach().cpu().numpy() if hasattr(idx, "detach") else idx)
        if idx.dtype.kind not in "iu":
            raise TypeError("sparse[%r]: indices are integers, not %s" % (name, idx.dtype))
        idx = idx.reshape(-1).astype("<i4" if idx.dtype == np.int32 else "<i8")
        vals = _to_numpy(vals, "sparse[%r] values" % name).reshape(-1)
        if idx.shape != vals.shape:
            raise ValueError("sparse[%r]: %d indices and %d values" %
                             (name, idx.size, vals.size))
        order = np.argsort(idx, kind="stable")
        idx, vals = idx[order], vals[order]
        dup = np.flatnonzero(idx[1:] == idx[:-1])
        if dup.size:
            raise ValueError("sparse[%r]: index %d appears twice" % (name, int(idx[dup[0]])))
        yield name + ".indices", np.ascontiguousarray(idx)
        yield name + ".values", np.ascontiguousarray(vals)


_ST_DTYPES = {np.dtype("<f4"): "F32", np.dtype("<i4"): "I32", np.dtype("<i8"): "I64"}


def encode_safetensors(update, cast=False, sparse=None):
    """Returns the safetensors encoding (bytes) of a dict of name -> array, all as F32.

    Arrays must be float32 already (TypeError naming the tensor otherwise), or @cast is True
    and they are converted.

    Layout: an 8-byte little-endian header length N, N bytes of JSON (padded with spaces so
    that the data starts 8-byte aligned), then the tensors' little-endian float32 data in the
    dict's order, each at the ``data_offsets`` its header entry names.

    @sparse, optional, is a dict of name -> (indices, values): tensor ``name`` sent as
    ``name.indices`` (I32 or I64 flat indices, sorted here) and ``name.values`` (F32); the
    server adds the values at those coordinates and counts the others as 0.
    """
    header = {}
    blobs = []
    offset = 0
    dense = list(_items(update, cast))
    for name, arr in dense + list(_sparse_items(sparse, {n for n, _ in dense})):
        n = arr.nbytes
        pad = -offset % arr.itemsize  # int64 indices start 8-byte aligned
        if pad:
            blobs.append(b"\0" * pad)
            offset += pad
        header[name] = {"dtype": _ST_DTYPES[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + n]}
        blobs.append(arr.tobytes())
        offset += n
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    head += b" " * (-len(head) % 8)
    return b"".join([struct.pack("<Q", len(head)), head] + blobs)


def encode_npz(update, cast=False, sparse=None):
    """Returns a stored (uncompressed) .npz (bytes) of a dict of name -> array, all float32:
    numpy's own ``np.savez`` into memory, one member ``<name>.npy`` per tensor. The same
    dtype rules and @sparse as :func:`encode_safetensors`."""
    arrays = dict(_items(update, cast))
    arrays.update(_sparse_items(sparse, set(arrays)))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def frl_ranking(scores):
    """FRL (``"algorithm": "frl"``): a client's ranking of one tensor from its scores, as the
    server takes it: ``np.argsort(scores.ravel(), kind="stable").astype(np.int32)``, the
    lowest score first (position j of the ranking holds the index with the j-th smallest
    score; the server gives that index j points, so the best-scored parameters are last)."""
    arr = np.asarray(scores)
    if arr.size > 2**31:
        raise ValueError("frl: a ranking has at most 2^31 entries (int32 indices), not %d" %
                         arr.size)
    return np.argsort(arr.ravel(), kind="stable").astype(np.int32)


def _ranking_items(rankings):
    """Yields (name, int32 array) for a dict of tensor name -> ranking. Only integer arrays
    are taken (a float array is values, not a ranking: TypeError naming the tensor); int64
    and the other integer types must fit int32 (ValueError naming the tensor otherwise)."""
    if not hasattr(rankings, "items"):
        raise TypeError("rankings are a dict of tensor name -> int32 array, not %s" %
                        type(rankings).__name__)
    for name, value in rankings.items():
        if not isinstance(name, str):
            raise TypeError("tensor names are strings, not %r" % (name,))
        if hasattr(value, "detach") and hasattr(value, "cpu"):
            value = value.detach().cpu().numpy()
        arr = np.asarray(value)
        if arr.dtype.kind not in "iu":
            raise TypeError("ranking %r is %s; an frl ranking is an integer permutation "
                            "(frl_ranking(scores) makes one)" % (name, arr.dtype))
        if arr.size and (arr.min() < 0 or arr.max() > np.iinfo(np.int32).max):
            raise ValueError("ranking %r holds %d, outside int32's range" %
                             (name, arr.min() if arr.min() < 0 else arr.max()))
        yield name, np.ascontiguousarray(arr, dtype="<i4")


def encode_rankings(rankings):
    """Returns the safetensors encoding (bytes) of a dict of tensor name -> ranking, all as I32:
    the update of an frl job (one permutation of the tensor's indices per tensor, flat or in
    the tensor's shape). Layout as :func:`encode_safetensors`."""
    header = {}
    blobs = []
    offset = 0
    for name, arr in _ranking_items(rankings):
        n = arr.nbytes
        header[name] = {"dtype": "I32", "shape": list(arr.shape),
                        "data_offsets": [offset, offset + n]}
        blobs.append(arr.tobytes())
        offset += n
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    head += b" " * (-len(head) % 8)
    return b"".join([struct.pack("<Q", len(head)), head] + blobs)


_BODY_FORMATS = {"safetensors": (SAFETENSORS_TYPE, encode_safetensors),
                 "npz": (NPZ_TYPE, encode_npz)}


def _body_format(format):
    try:
        return _BODY_FORMATS[format]
    except (KeyError, TypeError):
        raise ValueError("format must be one of %s, not %r" %
                         (", ".join(sorted(_BODY_FORMATS)), format)) from None


def decode_safetensors(data):
    """Returns a dict of name -> float32 numpy array (writable copies) from safetensors bytes.

    Tensors come in the header's order; F32, and I32 as an int32 array (an frl job's model,
    the global ranking; a flora model's ``<pair>.rank``) are accepted. Raises ValueError on a
    malformed body.
    """
    view = memoryview(data)
    if len(view) < 8:
        raise ValueError("safetensors: shorter than its 8-byte header length")
    (hlen,) = struct.unpack_from("<Q", view, 0)
    if hlen > len(view) - 8:
        raise ValueError("safetensors: header length %d past the end of %d bytes" %
                         (hlen, len(view)))
    try:
        header = json.loads(bytes(view[8:8 + hlen]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError("safetensors: bad header JSON: %s" % e) from None
    if not isinstance(header, dict):
        raise ValueError("safetensors: the header is not a JSON object")
    base = 8 + hlen
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info.get("dtype") not in ("F32", "I32"):
            raise ValueError("safetensors: tensor %r has dtype %r, want F32 (or I32)" %
                             (name, info.get("dtype")))
        np_dtype = "<i4" if info["dtype"] == "I32" else "<f4"
        shape = tuple(int(d) for d in info["shape"])
        start, end = (int(x) for x in info["data_offsets"])
        count = math.prod(shape)
        if end - start != 4 * count or start < 0 or base + end > len(view):
            raise ValueError("safetensors: tensor %r has bad data_offsets %r" %
                             (name, info["data_offsets"]))
        arr = np.frombuffer(view[base + start:base + end], dtype=np_dtype, count=count)
        out[name] = arr.reshape(shape).astype(np.dtype(np_dtype).newbyteorder("="), copy=True)
    return out


def _tensor_schema(tensors):
    """Returns the JSON "tensors" list for create_job from what the caller gave.

    Accepts a list of {"name", "shape"[, "dtype"]} dicts, a list of (name, shape) pairs, or a
    dict / state_dict of name -> array (its shapes are used).
    """
    if hasattr(tensors, "items"):
        # Only the shapes count here: any dtype describes the job's F32 tensor.
        return [{"name": name, "shape": list(arr.shape), "dtype": "F32"}
                for name, arr in _items(tensors, cast=True)]
    out = []
    for t in tensors:
        if isinstance(t, dict):
            d = dict(t)
            d.setdefault("dtype", "F32")
            d["shape"] = [int(x) for x in d["shape"]]
            out.append(d)
        else:
            name, shape = t
            out.append({"name": name, "shape": [int(x) for x in shape], "dtype": "F32"})
    return out


# --- the client ---

def _gateway(url):
    """(https, host, port, path prefix) of one base URL."""
    u = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
    if u.scheme not in ("http", "https"):
        raise ValueError("url must be http:// or https://, not %r" % url)
    if not u.hostname:
        raise ValueError("url names no host: %r" % url)
    https = u.scheme == "https"
    return https, u.hostname, u.port or (443 if https else 80), u.path.rstrip("/")


class Client:
    """A connection to one Tributary server, authenticated with one bearer token.

    Args:
        url:     the server's base URL, e.g. ``http://127.0.0.1:8080`` (http or https); or
                 several gateways of one cluster, as a list or comma-separated: requests go
                 to the first, and move to the next when one does not connect or answer
                 (below).
        token:   the admin token (to create jobs) or a job's token.
        ca_file: https only: verify the server against the CA certificates (PEM) in this
                 file instead of the system's store.
        pin_sha256: https only: the server certificate's SHA-256 fingerprint (hex); see the
                 module's HTTPS paragraph.
        timeout: seconds to wait for each answer (long polls add their own wait on top).
        connect_timeout: seconds to wait for a connection (and its TLS handshake); default
                 ``min(timeout, 5)``.
        retries: how many times a 503 (``Retry-After``) is retried before it is raised.
        max_retry_wait: the longest single wait for a 503's ``Retry-After``, or between two
                 resends after a broken connection, in seconds.
        resends: how many times a request with an Idempotency-Key (an update) is sent again
                 after its connection broke (reset, closed, timed out, refused) before
                 TributaryError (status 0) is raised. The waits double from 0.1 s up to
                 ``max_retry_wait``: the default 8 covers about 23 s, a server restart.

    The connection is kept alive between requests and reopened when the server has closed it.

    Several gateways: a request that gets no answer (refused, reset, or no connection within
    ``connect_timeout`` or answer within ``timeout``) moves on to the next gateway, and later
    requests stay there. An update goes with the same Idempotency-Key (up to ``resends``
    times in all), so the cluster counts it once even if the silent gateway had counted it; a
    GET tries each gateway once; other requests (job creation) are not sent again.
    """

    def __init__(self, url, token, timeout=30.0, retries=5, max_retry_wait=10.0, resends=8,
                 ca_file=None, pin_sha256=None, connect_timeout=None):
        urls = [x.strip() for x in (url.split(",") if isinstance(url, str) else url)]
        if not urls or not all(urls):
            raise ValueError("url names no gateway, or an empty one: %r" % (url,))
        self._gws = [_gateway(x) for x in urls]
        https = any(g[0] for g in self._gws)
        if not https and (ca_file is not None or pin_sha256 is not None):
            raise ValueError("ca_file and pin_sha256 need an https:// url, not %r" % (url,))
        self._pin = _parse_pin(pin_sha256)
        self._ssl = _ssl_context(ca_file, self._pin) if https else None
        self._trust = ca_file if ca_file is not None else "the system's CA store"
        self.url = url
        self.token = token
        self.timeout = float(timeout)
        self.connect_timeout = float(min(self.timeout, 5.0) if connect_timeout is None
                                     else connect_timeout)
        self.retries = int(retries)
        self.max_retry_wait = float(max_retry_wait)
        self.resends = int(resends)
        self._gw = 0  # the gateway in use: its index in self._gws
        self._conn = None
        self._used = False  # the open connection has carried a request already

    # --- connection ---

    def close(self):
        """Closes the keep-alive connection (the next request opens a new one)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _connection(self, timeout):
        if self._conn is None:
            https, host, port, _ = self._gws[self._gw]
            if https:
                self._conn = _PinnedHTTPSConnection(host, port, self._pin, self._trust,
                                                    self.connect_timeout, timeout=timeout,
                                                    context=self._ssl)
            else:
                self._conn = _HTTPConnection(host, port, self.connect_timeout, timeout=timeout)
            self._used = False
        else:
            self._conn.timeout = timeout
            if self._conn.sock is not None:
                self._conn.sock.settimeout(timeout)
        return self._conn

    def _once(self, method, path, body, headers, timeout):
        """One request and its answer: (status, headers dict lower-case, body bytes).

        A request that fails on a reused keep-alive connection before any answer arrives (the
        server closed it while idle) is sent once more on a fresh connection.
        """
        for attempt in (0, 1):
            conn = self._connection(timeout)
            reused = self._used
            try:
                conn.request(method, self._gws[self._gw][3] + path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except TLSVerifyError:
                self.close()
                raise
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                    ConnectionAbortedError, http.client.BadStatusLine) as e:
                self.close()
                if reused and attempt == 0:
                    continue
                raise TributaryError(0, "%s %s: connection failed: %s" % (method, path, e)) \
                    from e
            except (OSError, http.client.HTTPException) as e:
                self.close()
                kind = "timed out" if isinstance(e, socket.timeout) else "failed"
                raise TributaryError(0, "%s %s: %s: %s" % (method, path, kind, e)) from e
            self._used = True
            hdrs = {k.lower(): v for k, v in resp.getheaders()}
            if resp.will_close:
                self.close()
            return resp.status, hdrs, data
        raise AssertionError("unreachable")

    def request(self, method, path, body=None, headers=None, token=None, timeout=None,
                ok=(200, 201, 202), idempotency_key=None):
        """Sends one request; returns (status, headers dict lower-case, body bytes).

        @path is relative to the server's base URL (``/v1/jobs``). The bearer token is
        @token or the client's. A status outside @ok raises TributaryError with the server's
        message; a 503 is first retried up to ``retries`` times after its Retry-After.
        With @idempotency_key the request carries it as ``Idempotency-Key``, and a broken
        connection is also met by sending the same request again, up to ``resends`` times.
        """
        h = {"Authorization": "Bearer " + (token or self.token)}
        if headers:
            h.update(headers)
        if idempotency_key is not None:
            h[IDEMPOTENCY_HEADER] = _check_idempotency_key(idempotency_key)
        if body is not None:
            h["Content-Length"] = str(len(body))
        tmo = self.timeout if timeout is None else timeout
        busy = broken = 0
        while True:
            try:
                status, hdrs, data = self._once(method, path, body, h, tmo)
            except TributaryError as e:
                # Status 0: no answer, so the update may or may not have been counted. Only
                # a key makes sending it again safe (the server answers its first answer).
                e.idempotency_key = idempotency_key
                n = len(self._gws)
                if isinstance(e, TLSVerifyError) or (idempotency_key is None and
                                                     (method != "GET" or n == 1)):
                    raise
                limit = self.resends if idempotency_key is not None else n - 1
                if broken >= limit:
                    if idempotency_key is None:
                        raise
                    raise TributaryError(
                        0, "%s; no answer after %d sends with Idempotency-Key %s" %
                        (e.message, broken + 1, idempotency_key),
                        idempotency_key=idempotency_key) from e
                if n > 1:
                    # The next gateway at once; a pause only after each full circle.
                    self.close()
                    self._gw = (self._gw + 1) % n
                if n == 1 or (broken + 1) % n == 0:
                    time.sleep(min(RESEND_FIRST_WAIT_S * 2.0 ** (broken // n),
                                   self.max_retry_wait))
                broken += 1
                continue
            if status in ok:
                return status, hdrs, data
            if status == 503 and busy < self.retries:
                time.sleep(self._retry_after(hdrs, busy))
                busy += 1
                continue
            e = self._error(status, data, method, path)
            e.idempotency_key = idempotency_key
            raise e

    def _retry_after(self, hdrs, attempt):
        try:
            wait = float(hdrs.get("retry-after", ""))
        except ValueError:
            wait = min(2.0 ** attempt, 8.0)
        return max(0.0, min(wait, self.max_retry_wait))

    @staticmethod
    def _error(status, data, method, path):
        body = None
        try:
            body = json.loads(data.decode("utf-8")) if data else None
        except (UnicodeDecodeError, ValueError):
            pass
        if isinstance(body, dict) and "error" in body:
            msg = str(body["error"])
        else:
            text = data.decode("utf-8", "replace").strip() if data else ""
            msg = text or "%s %s: %s" % (method, path, http.client.responses.get(status, "?"))
        rnd = body.get("round") if isinstance(body, dict) and status == 409 else None
        return TributaryError(status, msg, round=rnd, body=body)

    def json(self, method, path, obj=None, token=None, ok=(200, 201, 202)):
        """Sends @obj as JSON (or nothing) and returns the parsed JSON answer."""
        body = None if obj is None else json.dumps(obj).encode("utf-8")
        headers = {"Content-Type": "application/json"} if body is not None else None
        _, _, data = self.request(method, path, body, headers, token=token, ok=ok)
        return json.loads(data.decode("utf-8")) if data else None

    # --- API ---

    def health(self):
        """GET /healthz: the server's health, ``{"status": "ok"}``."""
        return self.json("GET", "/healthz")

    def jobs(self):
        """GET /v1/jobs (admin token): the list of jobs, as the server gives it."""
        return self.json("GET", "/v1/jobs")

    def create_job(self, name, clients_per_round=None, tensors=None, params=None,
                   algorithm="fedavg", **extra):
        """Creates a job (admin token) and returns its :class:`Job`, holding the job's token.

        Give either @tensors (a state_dict or dict of name -> array, whose shapes are used; or
        a list of {"name", "shape"} dicts or (name, shape) pairs) or @params (one F32 tensor
        ``weights`` of that many elements). @clients_per_round may be left out when the job
        says it otherwise (``selection={"per_round": K}``, fedbuff's ``buffer_size``).
        @extra goes into the request as is (``fan_in=8``, ``num_rounds=20``,
        ``client_config={...}``, ``selection={...}``). Raises TributaryError (409 if the
        name is taken, 400 naming a bad field).
        """
        if (tensors is None) == (params is None):
            raise ValueError("create_job takes tensors= or params=, exactly one")
        req = {"name": name, "algorithm": algorithm}
        if clients_per_round is not None:
            req["clients_per_round"] = int(clients_per_round)
        if params is not None:
            req["params"] = int(params)
        else:
            req["tensors"] = _tensor_schema(tensors)
        req.update(extra)
        ans = self.json("POST", "/v1/jobs", req)
        return Job(self, ans["job"], ans["token"])

    def job(self, name, token=None):
        """Returns the :class:`Job` @name, used with @token (default: this client's token)."""
        return Job(self, name, token)


class Job:
    """One job on a server, reached through a :class:`Client`.

    Attributes:
        name:  the job's name.
        token: the job's bearer token when known (create_job gives it); requests use it, or
               the client's own token when it is None.
    """

    def __init__(self, client, name, token=None):
        self.client = client
        self.name = name
        self.token = token
        self._path = "/v1/jobs/" + urllib.parse.quote(name, safe="")

    def __repr__(self):
        return "Job(%r)" % self.name

    def status(self):
        """GET /v1/jobs/{job}: ``round`` (open round), ``model_round``, ``received``,
        ``clients_per_round``, ``params``, ``tensors``, ..."""
        return self.client.json("GET", self._path, token=self.token)

    def submit(self, update, round, samples=1, idempotency_key=None, metrics=None,
               cast=False, format="safetensors", sparse=None):
        """Submits a client's model (dict or state_dict of name -> array) for round @round.

        @samples (an integer >= 1: int or numpy integer; TypeError for anything else, bool
        and 2.5 included) weighs it in the round's mean. @metrics, optional, is a dict of at
        most 16 numbers (``{"loss": 0.31}``), sent as ``X-Tributary-Metrics`` and averaged
        into the round's record. The arrays must be float32 (TypeError naming the tensor
        otherwise) unless @cast is True. Returns the server's JSON answer,
        ``{"round": r, "received": k}``. Raises TributaryError: 409 with ``.round`` (the
        open round) when @round is stale or in the future, 422 on a wrong tensor name or
        shape, 401 on a wrong token; status 0 when no answer came after ``resends`` sends.

        The update carries ``Idempotency-Key: @idempotency_key`` (1 to 64 visible ASCII
        characters; default: a fresh :func:`new_idempotency_key`). When the connection
        breaks, the same bytes are sent again with the same key, and the server counts the
        update once. To resend an update yourself later (after a status 0, or across a
        restart of your own process), pass the key it had: ``e.idempotency_key``. An update
        that :meth:`outcome` says to resend is a new submission: give it a new key.

        @format is the body's: ``"safetensors"`` (default) or ``"npz"`` (a stored .npz,
        numpy's ``np.savez``, sent as application/x-npz); ValueError for anything else.

        @sparse, optional: a dict of tensor name -> (indices, values), for tensors sent
        sparse instead of in @update (flat int32/int64 indices, float32 values; see
        :func:`encode_safetensors`). Meant for ``"update": "delta"`` jobs: a coordinate not
        sent counts as 0 in the mean. ``submit({}, r, sparse={"w": (idx, vals)})`` sends
        only those.
        """
        ctype, encode = _body_format(format)
        key = new_idempotency_key() if idempotency_key is None else idempotency_key
        n = check_samples(samples)
        headers = {"Content-Type": ctype, "X-Tributary-Round": str(int(round)),
                   "X-Tributary-Samples": str(n)}
        if metrics is not None:
            headers[METRICS_HEADER] = metrics_header(metrics)
        body = encode(update, cast=cast, sparse=sparse)
        _, _, data = self.client.request("POST", self._path + "/updates", body, headers,
                                         token=self.token, idempotency_key=key)
        return json.loads(data.decode("utf-8"))

    def submit_ranking(self, rankings, round, idempotency_key=None):
        """Submits an frl client's rankings for round @round: a dict of tensor name -> int32
        permutation of that tensor's indices (:func:`frl_ranking` makes one from scores),
        sent as I32 safetensors. Every ranking counts once (no samples). Float arrays raise
        TypeError (values are not a ranking). The server answers 422 naming the tensor and
        the position of a bad entry (``e.body["tensor"]``, ``e.body["index"]``). Resends and
        the answer as :meth:`submit`."""
        key = new_idempotency_key() if idempotency_key is None else idempotency_key
        headers = {"Content-Type": SAFETENSORS_TYPE, "X-Tributary-Round": str(int(round))}
        _, _, data = self.client.request("POST", self._path + "/updates",
                                         encode_rankings(rankings), headers,
                                         token=self.token, idempotency_key=key)
        return json.loads(data.decode("utf-8"))

    def submit_evaluation(self, version, samples, metrics, idempotency_key=None):
        """Reports a federated evaluation of model version @version (POST
        /v1/jobs/{job}/evaluations): @samples (an integer >= 1) examples evaluated, @metrics
        a dict of at most 16 numbers (``{"loss": 0.2, "accuracy": 0.93}``). The server keeps
        the sample-weighted means per version, in the record of the round that made it and
        in ``status()["evaluation"]``. One evaluation per client credential and version: a
        second one is a 409; a resend with the same Idempotency-Key (default: a fresh one,
        resent on a broken connection as for updates) gets the first answer. Returns
        ``{"version": v, "clients": k}``.
        """
        key = new_idempotency_key() if idempotency_key is None else idempotency_key
        body = json.dumps({"version": int(version), "samples": check_samples(samples),
                           "metrics": json.loads(metrics_header(metrics))}).encode("utf-8")
        _, _, data = self.client.request("POST", self._path + "/evaluations", body,
                                         {"Content-Type": "application/json"},
                                         token=self.token, idempotency_key=key)
        return json.loads(data.decode("utf-8")) if data else None

    def task(self):
        """What this client should do now (GET /v1/jobs/{job}/task), one of:
        ``{"action": "train", "round": r, "version": v, "config": {...}, "deadline_s": s,
        "task": id}`` (train from version v for round r with that config),
        ``{"action": "wait", "round": r, "retry_after_s": n}`` (the round has its trainers:
        ask again later) or ``{"action": "done", "rounds": N}`` (the job has finished).
        A job with ``selection`` hands tasks to client credentials only (the job token is a
        403) and takes updates only from clients holding a task for the round."""
        return self.client.json("GET", self._path + "/task", token=self.token)

    def rounds(self, start=0, limit=None):
        """The job's round records, oldest first from round @start (GET
        /v1/jobs/{job}/rounds): a list of dicts with ``round``, ``state``, ``received``,
        ``clients``, ``opened_at``, ``closed_at``, ``duration_s``, ``bytes``, ``metrics``
        (sample-weighted means of the updates' metrics) and ``evaluation`` (``{"version",
        "clients", "samples", "metrics"}`` or None). At most @limit records; all of them
        (page after page) when @limit is None."""
        out, nxt = [], int(start)
        while nxt is not None and (limit is None or len(out) < limit):
            want = 1000 if limit is None else min(1000, int(limit) - len(out))
            page = self.client.json("GET", "%s/rounds?from=%d&limit=%d" %
                                    (self._path, nxt, want), token=self.token)
            out.extend(page.get("rounds", []))
            nxt = page.get("next")
            if not page.get("rounds"):
                break
        return out

    def mint_client(self, client=None, ttl_s=None):
        """Mints a client credential (POST /v1/jobs/{job}/clients, with the admin token or the
        job's): returns ``{"client": id, "token": ..., "expires": unix_s}``.

        @client names it (1 to 32 characters of A-Z a-z 0-9 _ -; default: the server makes
        an id), @ttl_s is its lifetime (default 7 days, at most 365). The token is signed by
        the job's key, checked by every node without a round trip, and counts as one client:
        one update per round. Raises TributaryError 409 for an id that was revoked.
        """
        req = {}
        if client is not None:
            req["client"] = client
        if ttl_s is not None:
            req["ttl_s"] = int(ttl_s)
        return self.client.json("POST", self._path + "/clients", req or None,
                                token=self.token, ok=(201,))

    def revoke_client(self, client):
        """Revokes client credential @client (admin token or the job's): its token gets 401
        on every node from now on, and the id is never issued again."""
        return self.client.json("DELETE", "%s/clients/%s" % (
            self._path, urllib.parse.quote(client, safe="")), token=self.token)

    def as_client(self, credential):
        """This job used with a client credential (mint_client()'s answer, or its token):
        submit() then sends as that client, as a job with ``client_auth: "required"`` asks."""
        token = credential["token"] if isinstance(credential, dict) else credential
        return Job(self.client, self.name, token)

    def round_record(self, round):
        """The record of @round (GET /v1/jobs/{job}/rounds/{r}): ``state`` (open, closed,
        done), ``received``, ``updates``, ``clients``, ``opened_at``, ``closed_at``,
        ``duration_s``; a single node adds ``bytes``, ``metrics`` and ``evaluation``, a
        cluster's controller ``top``, ``edges``, ``lost_nodes`` and ``lost``
        (``[{"node", "epoch", "updates"}]``). An unknown round is a 404 (TributaryError)."""
        return self.client.json("GET", "%s/rounds/%d" % (self._path, int(round)),
                                token=self.token)

    def outcome(self, ack):
        """What became of an update that submit() answered with @ack (its JSON).

        On a single node a 202 is final: returns "accepted". In a cluster the 202 names the
        node that folds the update and that node's run (``epoch``); if that node dies before
        the round's top has its sum, the update is lost, and the round's record says so.
        Returns "in_model" (the round is done and the update is in its model), "pending"
        (not done yet, nothing lost), "resend" (lost while the round is still open: submit
        the same update again, to any gateway) or "lost" (the round closed without it:
        submit one in a later round). A round whose record has ``failed`` (a robust rule left
        with too few updates after a lost node) made no model of its own: "lost" too.
        """
        if "node" not in ack:
            return "accepted"
        rec = self.round_record(ack["round"])
        lost = any(x.get("node") == ack["node"] and x.get("epoch") == ack.get("epoch")
                   for x in rec.get("lost", []))
        if lost:
            return "resend" if rec.get("state") == "open" else "lost"
        if rec.get("failed"):
            return "lost"
        return "in_model" if rec.get("state") == "done" else "pending"

    def set_initial_model(self, model, cast=False, format="safetensors"):
        """Sets the starting model (version 0) from a dict or state_dict, before any update.

        The arrays must be float32 unless @cast is True (as for submit); @format as for
        :meth:`submit`. Returns the server's JSON answer. Raises TributaryError 409 once an
        update was taken.
        """
        ctype, encode = _body_format(format)
        body = encode(model, cast=cast)
        _, _, data = self.client.request("PUT", self._path + "/model", body,
                                         {"Content-Type": ctype},
                                         token=self.token)
        return json.loads(data.decode("utf-8")) if data else None

    @staticmethod
    def _version(hdrs):
        try:
            return int(hdrs["x-tributary-round"])
        except (KeyError, ValueError):
            raise TributaryError(0, "the model answer has no X-Tributary-Round") from None

    def model(self, round=None):
        """Fetches the latest model, or version @round; returns (version, dict of arrays).

        The arrays are float32 (an frl job's: int32, the global ranking), writable, with the
        job's tensor names and shapes. Raises
        TributaryError 404 for a version that does not exist (yet).
        """
        q = "" if round is None else "?round=%d" % int(round)
        _, hdrs, data = self.client.request("GET", self._path + "/model" + q,
                                            token=self.token)
        return self._version(hdrs), decode_safetensors(data)

    def wait_model(self, after, timeout=300.0):
        """Waits for a model newer than version @after; returns (version, dict of arrays).

        Long-polls ``?after=`` (each poll at most 60 s, the server's limit, answered 304 when
        nothing came) until a newer version exists or @timeout seconds have passed, then
        raises TimeoutError.
        """
        deadline = time.monotonic() + float(timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("job %s: no model after version %d within %g s" %
                                   (self.name, after, timeout))
            wait = max(1, min(LONG_POLL_MAX_S, int(math.ceil(left))))
            status, hdrs, data = self.client.request(
                "GET", self._path + "/model?after=%d&timeout=%d" % (int(after), wait),
                token=self.token, timeout=self.client.timeout + wait, ok=(200, 304))
            if status == 200:
                return self._version(hdrs), decode_safetensors(data)

    # --- the client loop ---

    def run(self, train, evaluate=None, rounds=None, timeout=600.0, cast=False, log=None,
            format="safetensors"):
        """Takes part in the job's rounds until it is done (or for @rounds rounds): the loop
        a federated client would otherwise write itself. Each turn:

        1. asks for a task (:meth:`task`): ``wait`` is met by long-polling the next model
           version for ``retry_after_s``, then asking again; ``done`` ends the loop;
        2. fetches the model version the task names and calls ``train(model, config)``:
           @model is a dict of float32 arrays in the job's tensor order, @config the round's
           ``client_config`` (``{}`` without one), plus ``proximal_mu`` in a fedprox job
           (the task carries it: add ``mu/2 * ||w - model||^2`` to the local loss; it
           replaces a ``client_config`` key of that name); it returns ``(update, samples)`` or
           ``(update, samples, metrics)``: a dict or state_dict, an integer (TypeError
           otherwise) and None or a dict of at most 16 numbers;
        3. submits the update for the task's round with a fresh Idempotency-Key and the
           metrics as X-Tributary-Metrics (float32 arrays only, unless @cast);
        4. waits for the version that round makes (or a later one) and, with @evaluate,
           calls ``evaluate(model, config)`` on it, which returns ``(samples, metrics)``,
           posted with :meth:`submit_evaluation` for that version.

        Failures: a broken connection or a 503 (the server is busy, or the job is paused)
        is retried, an update always with its own key, so that the server counts it once,
        until nothing has moved for @timeout seconds (then the last error is raised;
        waiting for a model that long is a TimeoutError). A 409 on an update (the round
        closed without it, or this client already sent one for that round) skips to the
        next round; a 410 (the job is done) ends the loop. Anything else raises.

        @format is the updates' body format (see :meth:`submit`).
        @log, if given, is called with one line of text per event. Returns one dict per round
        this client trained in: ``round``, ``version`` (trained from), ``samples``,
        ``metrics``, ``received`` (updates in the round when the server took this one),
        ``next_version`` (the model waited for) and ``evaluation`` (the metrics posted for
        it, or None).
        """
        if not callable(train):
            raise TypeError("train must be callable: train(model, config) -> "
                            "(update, samples[, metrics])")
        if evaluate is not None and not callable(evaluate):
            raise TypeError("evaluate must be None or callable: evaluate(model, config) -> "
                            "(samples, metrics)")
        if rounds is not None and (isinstance(rounds, bool) or
                                   not isinstance(rounds, (int, np.integer)) or rounds < 1):
            raise TypeError("rounds must be None or an integer >= 1, not %r" % (rounds,))
        _body_format(format)
        say = log if log is not None else (lambda line: None)
        history = []
        last = None          # the last round this client submitted for
        evaluated = set()    # the versions this client has posted an evaluation of
        moved = time.monotonic()  # when a round last moved (a task trained, a new version)
        while rounds is None or len(history) < rounds:
            task = self._patiently(self.task, timeout)
            action = task.get("action")
            if action == "done":
                say("job %s is done after %s rounds" % (self.name, task.get("rounds")))
                break
            if action == "wait":
                wait = max(1, min(LONG_POLL_MAX_S, int(task.get("retry_after_s") or 1)))
                if time.monotonic() - moved > timeout:
                    raise TimeoutError("job %s: told to wait in round %s for over %g s" %
                                       (self.name, task.get("round"), timeout))
                say("round %s: no task for this client; waiting up to %d s" %
                    (task.get("round"), wait))
                if self._poll_version(int(task["round"]), wait, timeout):
                    moved = time.monotonic()
                continue
            if action != "train":
                raise TributaryError(0, "GET %s/task: unknown action %r in %r" %
                                     (self._path, action, task))
            rnd, version = int(task["round"]), int(task["version"])
            config = dict(task.get("config") or {})
            if "proximal_mu" in task:
                config["proximal_mu"] = task["proximal_mu"]
            if last is not None and rnd <= last:
                # Without selection the task is advisory: it names the open round even
                # after this client's update is in. Its model comes when the round closes.
                if self._poll_version(last, LONG_POLL_MAX_S, timeout):
                    moved = time.monotonic()
                elif time.monotonic() - moved > timeout:
                    raise TimeoutError("job %s: round %d did not close within %g s" %
                                       (self.name, last, timeout))
                continue
            got, model = self._patiently(lambda: self.model(round=version), timeout)
            out = train(model, dict(config))
            update, samples, metrics = _train_result(out)
            key = new_idempotency_key()
            try:
                ack = self._patiently(lambda: self.submit(
                    update, rnd, samples, idempotency_key=key, metrics=metrics, cast=cast,
                    format=format),
                    timeout)
            except TributaryError as e:
                if e.status == 410:
                    say("round %d: the job is done (%s)" % (rnd, e.message))
                    break
                if e.status != 409:
                    raise
                say("round %d: update not taken (%s); on to the next round" %
                    (rnd, e.message))
                last = rnd
                continue
            last = rnd
            moved = time.monotonic()
            entry = {"round": rnd, "version": got, "samples": int(samples),
                     "metrics": metrics, "received": ack.get("received"),
                     "next_version": None, "evaluation": None}
            say("round %d: trained from version %d on %d samples, update %d of the round" %
                (rnd, got, samples, ack.get("received", 0)))
            nv, new_model = self._patiently(
                lambda: self.wait_model(after=rnd, timeout=timeout), timeout)
            moved = time.monotonic()
            entry["next_version"] = nv
            if evaluate is not None and nv not in evaluated:
                evaluated.add(nv)
                es, em = _evaluate_result(evaluate(new_model, dict(config)))
                ekey = new_idempotency_key()
                try:
                    self._patiently(lambda: self.submit_evaluation(nv, es, em, ekey), timeout)
                    entry["evaluation"] = em
                    say("version %d: evaluated on %d samples: %s" % (nv, es, em))
                except TributaryError as e:
                    if e.status not in (409, 410):
                        raise
                    say("version %d: evaluation not taken (%s)" % (nv, e.message))
            history.append(entry)
        return history

    def _patiently(self, call, timeout):
        """call() again after a transport failure (status 0) or a 503, until @timeout
        seconds have passed without an answer; other errors and the last failure raise."""
        deadline = time.monotonic() + float(timeout)
        wait = RESEND_FIRST_WAIT_S
        while True:
            try:
                return call()
            except TributaryError as e:
                if isinstance(e, TLSVerifyError) or e.status not in (0, 503) or \
                        time.monotonic() + wait > deadline:
                    raise
            time.sleep(wait)
            wait = min(wait * 2, self.client.max_retry_wait)

    def _poll_version(self, after, seconds, timeout):
        """Waits up to @seconds for a model version newer than @after (one long poll);
        transport failures and 503s are retried within @timeout."""
        def poll():
            status, _, _ = self.client.request(
                "GET", self._path + "/model?after=%d&timeout=%d" % (int(after), int(seconds)),
                token=self.token, timeout=self.client.timeout + seconds, ok=(200, 304))
            return status
        return self._patiently(poll, timeout) == 200


def _train_result(out):
    """(update, samples, metrics) from what train() returned, checked."""
    if not isinstance(out, (tuple, list)) or len(out) not in (2, 3):
        raise TypeError("train() must return (update, samples) or (update, samples, metrics), "
                        "not %r" % (type(out).__name__,))
    update, samples = out[0], out[1]
    metrics = out[2] if len(out) == 3 else None
    if not hasattr(update, "items"):
        raise TypeError("train() returned an update of type %s; it must be a dict or "
                        "state_dict of tensor name -> array" % type(update).__name__)
    check_samples(samples, "train()'s samples")
    if metrics is not None:
        metrics_header(metrics, "train()'s metrics")
    return update, samples, metrics


def _evaluate_result(out):
    """(samples, metrics) from what evaluate() returned, checked."""
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise TypeError("evaluate() must return (samples, metrics), not %r" % (out,))
    check_samples(out[0], "evaluate()'s samples")
    metrics_header(out[1], "evaluate()'s metrics")
    return out[0], out[1]


# --- Flower's NumPyClient interface ---

def _describe(tensors):
    return ", ".join("%s %s" % (t["name"], list(t["shape"])) for t in tensors)


def _arrays_to_update(arrays, tensors, cast, who):
    """The dict name -> float32 array of a list of arrays given in the job's tensor order;
    TypeError / ValueError naming the array and the tensor when they do not fit."""
    if isinstance(arrays, np.ndarray) or not isinstance(arrays, (list, tuple)):
        raise TypeError("%s must return a list of numpy arrays (one per tensor of the job, "
                        "in its order), not %s" % (who, type(arrays).__name__))
    if len(arrays) != len(tensors):
        raise ValueError("%s returned %d arrays; the job has %d tensors, in this order: %s" %
                         (who, len(arrays), len(tensors), _describe(tensors)))
    out = {}
    for i, (arr, t) in enumerate(zip(arrays, tensors)):
        name = t["name"]
        a = _to_numpy(arr, "%s[%d] (the job's tensor %r)" % (who, i, name), cast)
        if tuple(a.shape) != tuple(t["shape"]):
            raise ValueError("%s[%d] has shape %s; the job's tensor %d, %r, has shape %s "
                             "(the arrays map to the job's tensors in order: %s)" %
                             (who, i, list(a.shape), i, name, list(t["shape"]),
                              _describe(tensors)))
        out[name] = a
    return out


def run_numpy_client(job, client, rounds=None, cast=False, evaluate=True, **run_args):
    """Runs @client, an object with Flower's ``NumPyClient`` interface, against @job (a
    :class:`Job` used with a client credential or the job's token), without Flower:

    - ``client.get_parameters(config)`` is called once with ``{}``, to check before any
      training that its arrays fit the job's tensors;
    - ``client.fit(parameters, config)`` trains each round: @parameters is the model as a
      list of float32 arrays in the job's tensor order, @config the round's
      ``client_config`` (with ``proximal_mu`` in a fedprox job, as Flower's FedProx
      strategy hands it to ``fit``); it returns ``(parameters, num_examples, metrics)``;
    - ``client.evaluate(parameters, config)``, when the client has it and @evaluate is
      true, evaluates each new model version: ``(loss, num_examples, metrics)`` is posted
      as an evaluation with the metrics plus ``"loss"``.

    Arrays map to the job's tensors by position (Flower's parameters carry no names); a wrong
    count or shape raises ValueError listing the job's tensors, a dtype other than float32
    a TypeError unless @cast. Metrics must be numbers (Tributary's metrics are). @rounds and
    the rest (``timeout``, ``log``) are :meth:`Job.run`'s; returns its list of rounds.
    """
    tensors = job.status().get("tensors") or []
    if not tensors:
        raise TributaryError(0, "job %s: its status lists no tensors" % job.name)
    names = [t["name"] for t in tensors]
    _arrays_to_update(client.get_parameters({}), tensors, cast, "get_parameters()")

    def train(model, config):
        out = client.fit([model[n] for n in names], config)
        if not isinstance(out, (tuple, list)) or len(out) != 3:
            raise TypeError("fit() must return (parameters, num_examples, metrics), not %r" %
                            (type(out).__name__,))
        params, n, metrics = out
        check_samples(n, "fit()'s num_examples")
        return _arrays_to_update(params, tensors, cast, "fit()"), n, dict(metrics or {})

    def evaluate_version(model, config):
        out = client.evaluate([model[n] for n in names], config)
        if not isinstance(out, (tuple, list)) or len(out) != 3:
            raise TypeError("evaluate() must return (loss, num_examples, metrics), not %r" %
                            (type(out).__name__,))
        loss, n, metrics = out
        check_samples(n, "evaluate()'s num_examples")
        merged = {"loss": loss}
        merged.update(metrics or {})
        return n, merged

    use_eval = evaluate and callable(getattr(client, "evaluate", None))
    return job.run(train, evaluate_version if use_eval else None, rounds=rounds, cast=cast,
                   **run_args)
