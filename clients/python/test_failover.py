# SPDX-License-Identifier: MIT
# Tests of tributary_client.py with several gateways: a silent or dead one is left for the next.
"""Run with Debian's interpreter (it has numpy) from clients/python:

    /usr/bin/python3 -m unittest -v test_failover

Stand-in servers: a "silent" gateway is a listening socket nobody accepts from (the kernel
completes the TCP handshake, then nothing answers), a dead one a port nobody listens on, and a
live one an http.server that records each update's Idempotency-Key and answers 202.
"""
import http.server
import os
import socket
import sys
import threading
import time
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tributary_client as tc  # noqa: E402


class Live(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    keys = []
    gets = 0

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).keys.append(self.headers.get("Idempotency-Key"))
        self.answer(202, b'{"round":0,"received":%d}' % len(set(type(self).keys)))

    def do_GET(self):
        type(self).gets += 1
        self.answer(200, b'{"round":0,"received":0}')

    def answer(self, status, body):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class FailoverTest(unittest.TestCase):
    def setUp(self):
        Live.keys, Live.gets = [], 0
        self.live = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Live)
        threading.Thread(target=self.live.serve_forever, daemon=True).start()
        self.addCleanup(self.live.server_close)
        self.addCleanup(self.live.shutdown)
        self.silent = socket.socket()
        self.silent.bind(("127.0.0.1", 0))
        self.silent.listen(16)
        self.addCleanup(self.silent.close)
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.dead_port = s.getsockname()[1]
        s.close()

    def url(self, port):
        return "http://127.0.0.1:%d" % port

    def client(self, urls, **kw):
        c = tc.Client(urls, "t", **kw)
        self.addCleanup(c.close)
        return c

    def test_answer_timeout_moves_to_the_next_gateway_with_the_same_key(self):
        c = self.client([self.url(self.silent.getsockname()[1]),
                         self.url(self.live.server_address[1])], timeout=1.0)
        t0 = time.monotonic()
        ack = c.job("j").submit({"w": np.zeros(3, np.float32)}, round=0, idempotency_key="k-1")
        self.assertEqual(ack, {"round": 0, "received": 1})
        self.assertLess(time.monotonic() - t0, 5.0, "one 1 s timeout, then the next gateway")
        self.assertEqual(Live.keys, ["k-1"], "the live gateway got the update once, same key")
        # Later requests stay on the gateway that answered: no second timeout.
        t0 = time.monotonic()
        c.job("j").submit({"w": np.zeros(3, np.float32)}, round=0)
        self.assertLess(time.monotonic() - t0, 0.9)
        self.assertEqual(len(Live.keys), 2)

    def test_refused_gateway_and_comma_list(self):
        c = self.client("%s, %s" % (self.url(self.dead_port),
                                    self.url(self.live.server_address[1])))
        self.assertEqual(c.job("j").submit({"w": np.zeros(3, np.float32)}, round=0)["received"], 1)

    def test_get_tries_each_gateway_once(self):
        c = self.client([self.url(self.silent.getsockname()[1]),
                         self.url(self.live.server_address[1])], timeout=1.0)
        self.assertEqual(c.job("j").status()["round"], 0)
        self.assertEqual(Live.gets, 1)
        c = self.client([self.url(self.silent.getsockname()[1]), self.url(self.dead_port)],
                        timeout=0.5)
        with self.assertRaises(tc.TributaryError) as cm:
            c.job("j").status()
        self.assertEqual(cm.exception.status, 0)

    def test_job_creation_is_not_sent_twice(self):
        c = self.client([self.url(self.silent.getsockname()[1]),
                         self.url(self.live.server_address[1])], timeout=0.5)
        with self.assertRaises(tc.TributaryError) as cm:
            c.create_job("j", clients_per_round=2, params=3)
        self.assertIn("timed out", str(cm.exception))
        self.assertEqual(Live.keys, [], "not sent to the second gateway")

    def test_every_gateway_silent_gives_up_after_resends(self):
        silent = self.url(self.silent.getsockname()[1])
        c = self.client([silent, self.url(self.dead_port)], timeout=0.3, resends=3,
                        max_retry_wait=0.05)
        with self.assertRaises(tc.TributaryError) as cm:
            c.job("j").submit({"w": np.zeros(3, np.float32)}, round=0, idempotency_key="k-9")
        self.assertEqual(cm.exception.idempotency_key, "k-9")
        self.assertIn("no answer after 4 sends", str(cm.exception))

    def test_bad_lists(self):
        with self.assertRaises(ValueError):
            tc.Client("http://a:1,,http://b:2", "t")
        with self.assertRaises(ValueError):
            tc.Client([], "t")
        with self.assertRaises(ValueError):
            tc.Client("http://a:1,ftp://b", "t")


if __name__ == "__main__":
    unittest.main()
