# SPDX-License-Identifier: MIT
# Tests of tributary_client.py over https://: a CA file, a pinned fingerprint, and their failures.
"""Run with Debian's interpreter (it has numpy) from clients/python:

    /usr/bin/python3 -m unittest -v test_tls

A stand-in HTTPS server (http.server behind the standard library's ssl) answers the updates;
certificates are made with the openssl command: a CA, a server certificate it signed for
DNS:localhost only, and an unrelated CA.
"""
import hashlib
import http.server
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tributary_client as tc  # noqa: E402


def make_certs(d):
    k = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"]
    run = lambda *a: subprocess.run(["openssl", *a], cwd=d, check=True,  # noqa: E731
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run("req", "-x509", *k, "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=test-ca")
    run("req", "-x509", *k, "-keyout", "other.key", "-out", "other.pem", "-subj", "/CN=other")
    run("req", *k[:5], "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=localhost")
    with open(os.path.join(d, "ext"), "w") as f:
        f.write("subjectAltName=DNS:localhost\n")
    run("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "srv.pem", "-days", "2", "-extfile", "ext")
    with open(os.path.join(d, "srv.pem")) as f:
        der = ssl.PEM_cert_to_DER_cert(f.read())
    return hashlib.sha256(der).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    """Records each request's method and Idempotency-Key; answers 202 to every POST."""
    protocol_version = "HTTP/1.1"
    seen = []

    def do_POST(self):
        n = int(self.headers["Content-Length"])
        self.rfile.read(n)
        type(self).seen.append(("POST", self.headers.get("Idempotency-Key"), n))
        body = b'{"round":0,"received":%d}' % len(type(self).seen)
        self.send_response(202)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class TLSTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="trib-pytls-")
        cls.pin = make_certs(cls.dir)
        cls.ca = os.path.join(cls.dir, "ca.pem")
        cls.other = os.path.join(cls.dir, "other.pem")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.path.join(cls.dir, "srv.pem"), os.path.join(cls.dir, "srv.key"))
        cls.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        cls.srv.socket = ctx.wrap_socket(cls.srv.socket, server_side=True)
        cls.port = cls.srv.server_address[1]
        threading.Thread(target=cls.srv.serve_forever, daemon=True).start()

    @classmethod
    def tearDownClass(cls):
        cls.srv.shutdown()
        cls.srv.server_close()
        shutil.rmtree(cls.dir, ignore_errors=True)

    def setUp(self):
        Handler.seen = []

    def submit(self, host, **kw):
        c = tc.Client("https://%s:%d" % (host, self.port), "tok", **kw)
        self.addCleanup(c.close)
        return c.job("j").submit({"w": np.arange(1000, dtype=np.float32)}, round=0)

    def test_ca_file_verifies_chain_and_name(self):
        self.assertEqual(self.submit("localhost", ca_file=self.ca)["received"], 1)
        self.assertEqual(self.submit("localhost", ca_file=self.ca)["received"], 2)
        self.assertEqual([s[0] for s in Handler.seen], ["POST", "POST"])
        self.assertRegex(Handler.seen[0][1], r"^[A-Za-z0-9_-]{22}$", "the key goes over TLS")

    def test_keep_alive_over_tls(self):
        c = tc.Client("https://localhost:%d" % self.port, "tok", ca_file=self.ca)
        self.addCleanup(c.close)
        job = c.job("j")
        job.submit({"w": np.zeros(4, np.float32)}, round=0)
        sock = c._conn.sock
        job.submit({"w": np.zeros(4, np.float32)}, round=0)
        self.assertIs(c._conn.sock, sock, "one TLS connection for both updates")

    def test_pin_alone_needs_no_chain_or_name(self):
        self.assertEqual(self.submit("127.0.0.1", pin_sha256=self.pin)["received"], 1)
        colons = ":".join(self.pin[i:i + 2] for i in range(0, 64, 2)).upper()
        self.assertEqual(self.submit("127.0.0.1", pin_sha256=colons)["received"], 2)

    def test_wrong_pin_fails_before_any_request_byte(self):
        wrong = self.pin[:-1] + ("0" if self.pin[-1] != "0" else "1")
        t0 = time.monotonic()
        with self.assertRaises(tc.TLSVerifyError) as cm:
            self.submit("127.0.0.1", pin_sha256=wrong)
        self.assertIn("does not match pin_sha256", str(cm.exception))
        self.assertIn("its SHA-256 is " + self.pin, str(cm.exception))
        self.assertEqual(cm.exception.status, 0)
        self.assertEqual(Handler.seen, [], "no request reached the server")
        self.assertLess(time.monotonic() - t0, 2.0, "a pin mismatch is not resent")

    def test_wrong_ca_name_and_system_store_fail(self):
        for host, kw, why in (("localhost", {"ca_file": self.other}, self.other),
                              ("127.0.0.1", {"ca_file": self.ca}, "127.0.0.1"),
                              ("localhost", {}, "the system's CA store")):
            with self.assertRaises(tc.TLSVerifyError) as cm:
                self.submit(host, **kw)
            self.assertIn("did not verify", str(cm.exception))
            self.assertIn(why, str(cm.exception))
        self.assertEqual(Handler.seen, [])

    def test_pin_and_ca_must_both_hold(self):
        with self.assertRaises(tc.TLSVerifyError):
            self.submit("localhost", ca_file=self.other, pin_sha256=self.pin)
        self.assertEqual(self.submit("localhost", ca_file=self.ca, pin_sha256=self.pin)
                         ["received"], 1)

    def test_bad_arguments(self):
        with self.assertRaises(ValueError):
            tc.Client("https://localhost:1", "t", pin_sha256="abcd")
        with self.assertRaises(ValueError):
            tc.Client("http://localhost:1", "t", pin_sha256=self.pin)
        with self.assertRaises(ValueError):
            tc.Client("http://localhost:1", "t", ca_file=self.ca)


if __name__ == "__main__":
    unittest.main()
