#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The baseline: an FL aggregation server written the way Python FL servers are, same HTTP API.

It implements the subset of Tributary's HTTP API v1 that `tributary simulate` and
`bench_ingest` use (README.md, "HTTP API v1"):

  POST /v1/jobs                        (admin) create a job -> 201 {"job", "token", "round": 0}
  GET  /v1/jobs/{job}                  status: round, model_round, received, clients_per_round,
                                       params, tensors
  POST /v1/jobs/{job}/updates          raw little-endian f32 or safetensors, X-Tributary-Round,
                                       X-Tributary-Samples -> 202 {"round", "received"}
  GET  /v1/jobs/{job}/model            latest model, safetensors, X-Tributary-Round, ETag
  GET  /v1/jobs/{job}/model?round=v    model version v (404 if unknown or dropped)
  GET  /v1/jobs/{job}/model?after=r[&timeout=s]  long poll (<= 60 s) for a version > r; 304

and aggregates as Flower's FedAvg does (flwr.server.strategy.aggregate.aggregate): every update
of the round is kept in memory as a numpy array with its sample count, and when the round has
`clients_per_round` updates the model is sum(n_i * x_i) / sum(n_i), computed over the whole list
(the weighted copies are made first, then reduced with np.add, as Flower does). The aggregation
runs in a worker thread (numpy releases the GIL) so the event loop keeps answering; the next
round opens at once, as in Tributary. Validation matches Tributary's: token, round (409), size
(413/422), tensor names/shape/dtype (422), finite values (422).

The HTTP server is aiohttp (Debian's python3-aiohttp); without it, the standard library's
ThreadingHTTPServer (--server stdlib forces it). Models live in memory, the last KEEP_VERSIONS
of each job.

usage: py_server.py [--listen HOST:PORT] [--port-file FILE] [--data-dir DIR]
                    [--admin-token-file FILE] [--server aiohttp|stdlib]
"""

import argparse
import asyncio
import json
import os
import re
import secrets
import socket
import sys
import threading
from functools import reduce

import numpy as np

KEEP_VERSIONS = 4
LONG_POLL_MAX_S = 60
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,62}$")


class HttpError(Exception):
    """An answer other than success: status and message, and extra JSON fields."""

    def __init__(self, status, msg, **extra):
        super().__init__(msg)
        self.status = status
        self.body = dict(error=msg, **extra)


def safetensors_bytes(schema, flat):
    """The model as a safetensors file: header (8-byte length, JSON padded to 8), then data."""
    hdr, off = {}, 0
    for name, shape, n in schema:
        hdr[name] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + 4 * n]}
        off += 4 * n
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return len(h).to_bytes(8, "little") + h + flat.astype("<f4", copy=False).tobytes()


def aggregate(results):
    """Flower's FedAvg: results is a list of (ndarray, num_examples); returns the weighted mean."""
    total = sum(n for _, n in results)
    weighted = [x * np.float32(n) for x, n in results]
    return reduce(np.add, weighted) / np.float32(total)


class Job:
    def __init__(self, name, cpr, schema):
        self.name = name
        self.token = secrets.token_hex(16)
        self.cpr = cpr
        self.schema = schema  # [(name, shape list, n_elem)]
        self.n_elem = sum(n for _, _, n in schema)
        self.round = 0  # the open round
        self.completed = 0  # model versions made (version v = completed rounds)
        self.updates = []  # [(ndarray f32, samples)] of the open round
        self.models = {0: safetensors_bytes(schema, np.zeros(self.n_elem, np.float32))}

    def status(self):
        return {"job": self.name, "round": self.round, "model_round": self.completed,
                "received": len(self.updates), "clients_per_round": self.cpr,
                "params": self.n_elem, "tensors": len(self.schema), "algorithm": "fedavg"}


class Core:
    """The server's state and request logic, independent of the HTTP framework. One lock."""

    def __init__(self, admin):
        self.admin = admin
        self.jobs = {}
        self.lock = threading.Lock()
        self.on_model = None  # called (job) after a new version is published

    def auth(self, headers, job=None):
        a = headers.get("Authorization", "")
        tok = a[7:].strip() if a[:7].lower() == "bearer " else None
        if tok is None:
            raise HttpError(401, "missing bearer token")
        if tok == self.admin or (job is not None and tok == job.token):
            return
        raise HttpError(401, "wrong token")

    def job(self, name):
        j = self.jobs.get(name)
        if j is None:
            raise HttpError(404, "no such job")
        return j

    def create(self, headers, body):
        self.auth(headers)
        try:
            o = json.loads(body)
        except ValueError as e:
            raise HttpError(400, "body is not a JSON object: %s" % e)
        if not isinstance(o, dict):
            raise HttpError(400, "body is not a JSON object")
        name, cpr = o.get("name"), o.get("clients_per_round")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise HttpError(400, "name: required, 1-63 characters of A-Z a-z 0-9 . _ -")
        if not isinstance(cpr, int) or not 1 <= cpr <= 1000000:
            raise HttpError(400, "clients_per_round: required, an integer from 1 to 1000000")
        if o.get("algorithm", "fedavg") != "fedavg":
            raise HttpError(400, "algorithm: unsupported (supported: \"fedavg\")")
        if ("params" in o) == ("tensors" in o):
            raise HttpError(400, "give exactly one of \"params\" and \"tensors\"")
        if "params" in o:
            p = o["params"]
            if not isinstance(p, int) or not 1 <= p <= 1 << 32:
                raise HttpError(400, "params: an integer from 1 to 2^32")
            schema = [("weights", [p], p)]
        else:
            schema = []
            for t in o["tensors"] if isinstance(o["tensors"], list) else [None]:
                if (not isinstance(t, dict) or not isinstance(t.get("name"), str)
                        or t.get("dtype", "F32") != "F32"
                        or not isinstance(t.get("shape"), list)
                        or not all(isinstance(d, int) and d > 0 for d in t["shape"])):
                    raise HttpError(400, "tensors: a list of {name, shape, dtype: F32}")
                schema.append((t["name"], t["shape"], int(np.prod(t["shape"]))))
        with self.lock:
            if name in self.jobs:
                raise HttpError(409, "a job with this name exists")
            j = self.jobs[name] = Job(name, cpr, schema)
        return 201, {"job": name, "token": j.token, "round": 0}

    def status(self, headers, name):
        j = self.job(name)
        self.auth(headers, j)
        with self.lock:
            return 200, j.status()

    def check_head(self, headers, name):
        """Checks before the body. Returns (job, round, samples, content type, length)."""
        j = self.job(name)
        self.auth(headers, j)
        ctype = headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype not in ("application/octet-stream", "application/x-safetensors"):
            raise HttpError(415, "Content-Type: application/octet-stream or "
                            "application/x-safetensors")
        try:
            rnd = int(headers["X-Tributary-Round"])
            samples = int(headers.get("X-Tributary-Samples", "1"))
        except (KeyError, ValueError):
            raise HttpError(400, "X-Tributary-Round and X-Tributary-Samples: integers")
        if samples < 1:
            raise HttpError(400, "X-Tributary-Samples: a positive integer")
        if "Content-Length" not in headers:
            raise HttpError(411, "Content-Length required")
        clen = int(headers["Content-Length"])
        with self.lock:
            if rnd != j.round:
                raise HttpError(409, "round %d is open, not %d" % (j.round, rnd), round=j.round)
        if ctype == "application/octet-stream" and clen != 4 * j.n_elem:
            raise HttpError(422 if clen < 4 * j.n_elem else 413,
                            "raw body must hold %d f32 values" % j.n_elem)
        if clen > 4 * j.n_elem + (1 << 20):
            raise HttpError(413, "body larger than the model")
        return j, rnd, samples, ctype, clen

    def decode(self, j, ctype, body):
        """The update as one flat f32 array (a view of body where possible)."""
        if ctype == "application/octet-stream":
            x = np.frombuffer(body, dtype="<f4")
        else:
            if len(body) < 8:
                raise HttpError(400, "safetensors: short body")
            hlen = int.from_bytes(body[:8], "little")
            try:
                hdr = json.loads(bytes(body[8:8 + hlen]))
            except ValueError:
                raise HttpError(400, "safetensors: bad header")
            base, parts = 8 + hlen, []
            for name, shape, n in j.schema:
                t = hdr.get(name)
                if not isinstance(t, dict) or t.get("dtype") != "F32" or t.get("shape") != shape:
                    raise HttpError(422, "tensor %s: missing, or wrong dtype or shape" % name)
                b, e = t["data_offsets"]
                if e - b != 4 * n or base + e > len(body):
                    raise HttpError(422, "tensor %s: wrong size" % name)
                parts.append(np.frombuffer(body, dtype="<f4", count=n, offset=base + b))
            x = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if not np.isfinite(x).all():
            raise HttpError(422, "a NaN or Inf value")
        return x

    def accept(self, j, rnd, samples, x):
        """Keep the update. Returns (status, body, closed) with closed = list to aggregate."""
        with self.lock:
            if rnd != j.round:
                raise HttpError(409, "round %d is open, not %d" % (j.round, rnd), round=j.round)
            j.updates.append((x, samples))
            received = len(j.updates)
            closed = None
            if received == j.cpr:
                closed, j.updates = j.updates, []
                j.round += 1
        return 202, {"round": rnd, "received": received}, closed

    def publish(self, j, rnd, model):
        """Install version rnd + 1 (rounds complete in order: one aggregation at a time)."""
        data = safetensors_bytes(j.schema, model)
        with self.lock:
            j.models[rnd + 1] = data
            j.completed = max(j.completed, rnd + 1)
            for v in [v for v in j.models if v <= j.completed - KEEP_VERSIONS]:
                del j.models[v]
        if self.on_model:
            self.on_model(j)

    def model_query(self, headers, name, query):
        """Returns ('now', version) or ('wait', after, timeout)."""
        j = self.job(name)
        self.auth(headers, j)
        if "round" in query:
            try:
                v = int(query["round"])
            except ValueError:
                raise HttpError(400, "round: a model version")
            return "now", j, v
        if "after" in query:
            try:
                after = int(query["after"])
                timeout = int(query.get("timeout", LONG_POLL_MAX_S))
            except ValueError:
                raise HttpError(400, "after, timeout: integers")
            if not 0 <= timeout <= LONG_POLL_MAX_S:
                raise HttpError(400, "timeout: seconds, at most 60")
            return "wait", j, after, timeout
        return "now", j, None

    def model(self, j, v):
        """(status, headers, body) for version v (None: latest)."""
        with self.lock:
            v = j.completed if v is None else v
            data = j.models.get(v)
        if data is None:
            raise HttpError(404, "no model version %d" % v)
        return 200, {"X-Tributary-Round": str(v), "ETag": '"%s-%d"' % (j.name, v),
                     "Content-Type": "application/x-safetensors"}, data


def json_body(obj):
    return json.dumps(obj).encode()


# ---- aiohttp front end ----

def run_aiohttp(core, sock):
    from aiohttp import web

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    waiters = {}  # job name -> asyncio.Event, set and replaced on every new version
    agg_lock = asyncio.Lock()  # one aggregation at a time: versions complete in order

    def wake(j):
        def fire():
            ev = waiters.pop(j.name, None)
            if ev:
                ev.set()
        loop.call_soon_threadsafe(fire)

    core.on_model = wake

    def answer(status, body, headers=None):
        return web.Response(status=status, body=json_body(body), headers=headers,
                            content_type="application/json")

    def guard(fn):
        async def handler(request):
            try:
                return await fn(request)
            except HttpError as e:
                return answer(e.status, e.body)
        return handler

    async def aggregate_round(j, rnd, closed):
        async with agg_lock:
            model = await loop.run_in_executor(None, aggregate, closed)
            del closed[:]
            await loop.run_in_executor(None, core.publish, j, rnd, model)

    @guard
    async def create(request):
        return answer(*core.create(request.headers, await request.read()))

    @guard
    async def status(request):
        return answer(*core.status(request.headers, request.match_info["job"]))

    @guard
    async def update(request):
        j, rnd, samples, ctype, clen = core.check_head(request.headers,
                                                       request.match_info["job"])
        body = await request.content.readexactly(clen)
        x = core.decode(j, ctype, body)
        st, out, closed = core.accept(j, rnd, samples, x)
        if closed is not None:
            asyncio.ensure_future(aggregate_round(j, rnd, closed))
        return answer(st, out)

    @guard
    async def model(request):
        q = core.model_query(request.headers, request.match_info["job"], request.query)
        if q[0] == "wait":
            _, j, after, timeout = q
            deadline = loop.time() + timeout
            while j.completed <= after:
                ev = waiters.setdefault(j.name, asyncio.Event())
                left = deadline - loop.time()
                if left <= 0:
                    return web.Response(status=304)
                try:
                    await asyncio.wait_for(ev.wait(), left)
                except asyncio.TimeoutError:
                    return web.Response(status=304)
            st, hdrs, data = core.model(j, None)
        else:
            st, hdrs, data = core.model(q[1], q[2])
        return web.Response(status=st, body=data, headers=hdrs)

    app = web.Application(client_max_size=1 << 34)
    app.add_routes([web.post("/v1/jobs", create), web.get("/v1/jobs/{job}", status),
                    web.post("/v1/jobs/{job}/updates", update),
                    web.get("/v1/jobs/{job}/model", model)])
    web.run_app(app, sock=sock, access_log=None, print=None, handle_signals=True, loop=loop)


# ---- standard-library front end ----

def run_stdlib(core, sock):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qsl, urlsplit

    cond = threading.Condition()
    agg_lock = threading.Lock()

    def wake(j):
        with cond:
            cond.notify_all()

    core.on_model = wake

    def aggregate_round(j, rnd, closed):
        with agg_lock:
            model = aggregate(closed)
            del closed[:]
            core.publish(j, rnd, model)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def send(self, status, body, headers=None, ctype="application/json"):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def route(self):
            u = urlsplit(self.path)
            return u.path.rstrip("/").split("/")[1:], dict(parse_qsl(u.query))

        def read_body(self):
            return self.rfile.read(int(self.headers.get("Content-Length", "0")))

        def do_POST(self):
            parts, _ = self.route()
            try:
                if parts == ["v1", "jobs"]:
                    st, out = core.create(self.headers, self.read_body())
                elif len(parts) == 4 and parts[:2] == ["v1", "jobs"] and parts[3] == "updates":
                    j, rnd, samples, ctype, clen = core.check_head(self.headers, parts[2])
                    x = core.decode(j, ctype, self.rfile.read(clen))
                    st, out, closed = core.accept(j, rnd, samples, x)
                    if closed is not None:
                        threading.Thread(target=aggregate_round, args=(j, rnd, closed),
                                         daemon=True).start()
                else:
                    raise HttpError(404, "no such endpoint")
            except HttpError as e:
                st, out = e.status, e.body
                self.close_connection = True  # the body may be unread
            self.send(st, json_body(out))

        def do_GET(self):
            parts, query = self.route()
            try:
                if len(parts) == 3 and parts[:2] == ["v1", "jobs"]:
                    st, out = core.status(self.headers, parts[2])
                    self.send(st, json_body(out))
                    return
                if len(parts) != 4 or parts[:2] != ["v1", "jobs"] or parts[3] != "model":
                    raise HttpError(404, "no such endpoint")
                q = core.model_query(self.headers, parts[2], query)
                if q[0] == "wait":
                    _, j, after, timeout = q
                    with cond:
                        if not cond.wait_for(lambda: j.completed > after, timeout):
                            self.send(304, b"")
                            return
                    st, hdrs, data = core.model(j, None)
                else:
                    st, hdrs, data = core.model(q[1], q[2])
                self.send(st, data, hdrs, "application/x-safetensors")
            except HttpError as e:
                self.send(e.status, json_body(e.body))

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def server_bind(self):
            pass  # the socket is bound already

    srv = Server(sock.getsockname(), Handler, bind_and_activate=False)
    srv.socket.close()
    srv.socket = sock
    srv.server_address = sock.getsockname()
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--listen", default="127.0.0.1:8080")
    ap.add_argument("--port-file")
    ap.add_argument("--data-dir", default="./py-server-data",
                    help="where admin-token is written (if --admin-token-file is not given)")
    ap.add_argument("--admin-token-file")
    ap.add_argument("--server", choices=["aiohttp", "stdlib"], default=None)
    a = ap.parse_args()

    host, _, port = a.listen.rpartition(":")
    tokfile = a.admin_token_file or os.path.join(a.data_dir, "admin-token")
    if os.path.exists(tokfile):
        with open(tokfile) as f:
            admin = f.readline().strip()
    else:
        os.makedirs(os.path.dirname(os.path.abspath(tokfile)), exist_ok=True)
        admin = secrets.token_hex(16)
        fd = os.open(tokfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(admin + "\n")
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host.strip("[]"), int(port)))
    sock.listen(1024)

    kind = a.server
    if kind is None:
        try:
            import aiohttp  # noqa: F401
            kind = "aiohttp"
        except ImportError:
            kind = "stdlib"
    print("py_server: %s on %s:%d, numpy %s" % (kind, host, sock.getsockname()[1],
                                                np.__version__), file=sys.stderr, flush=True)
    if a.port_file:
        tmp = a.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % sock.getsockname()[1])
        os.rename(tmp, a.port_file)
    core = Core(admin)
    if kind == "aiohttp":
        run_aiohttp(core, sock)
    else:
        run_stdlib(core, sock)


if __name__ == "__main__":
    main()
