# SPDX-License-Identifier: MIT
"""Speak to a Tributary cluster port the way nng's REQ over tls+tcp:// does, by hand.

Usage: sp_probe.py HOST PORT OP [--plain] [--cert FILE --key FILE] [--field K=V ...]
Prints one JSON line: {"handshake": "ok"|"<error>", "reply": {...}|null}. Used by
cluster_mtls.py to show what a peer without a cluster certificate can (not) do.
"""
import json
import socket
import ssl
import struct
import sys


def main():
    host, port, op = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    rest = sys.argv[4:]
    plain = '--plain' in rest
    cert = rest[rest.index('--cert') + 1] if '--cert' in rest else None
    key = rest[rest.index('--key') + 1] if '--key' in rest else None
    hdr = {'op': op}
    for i, a in enumerate(rest):
        if a == '--field':
            k, _, v = rest[i + 1].partition('=')
            hdr[k] = v
    out = {'handshake': 'ok', 'reply': None}
    try:
        s = socket.create_connection((host, port), timeout=5)
        if not plain:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
            if cert:
                ctx.load_cert_chain(cert, key)
            s = ctx.wrap_socket(s)
        # SP header: REQ0 (0x30) speaking to REP0 (0x31).
        s.sendall(b'\x00SP\x00\x00\x30\x00\x00')
        peer = b''
        while len(peer) < 8:
            b = s.recv(8 - len(peer))
            if not b:
                raise ConnectionError('closed before the SP header (%r)' % peer)
            peer += b
        if peer[:4] != b'\x00SP\x00':
            raise ConnectionError('no SP header: %r' % peer)
        j = json.dumps(hdr).encode()
        body = struct.pack('>I', 0x80000001) + struct.pack('<I', len(j)) + j
        s.sendall(struct.pack('>Q', len(body)) + body)
        buf = b''
        while len(buf) < 8:
            b = s.recv(65536)
            if not b:
                raise ConnectionError('closed before a reply')
            buf += b
        n = struct.unpack('>Q', buf[:8])[0]
        while len(buf) < 8 + n:
            b = s.recv(65536)
            if not b:
                raise ConnectionError('closed inside a reply')
            buf += b
        m = buf[12:8 + n]
        hl = struct.unpack('<I', m[:4])[0]
        out['reply'] = json.loads(m[4:4 + hl])
    except (OSError, ssl.SSLError, ConnectionError, ValueError) as ex:
        out['handshake'] = '%s: %s' % (type(ex).__name__, ex)
    print(json.dumps(out))


if __name__ == '__main__':
    main()
