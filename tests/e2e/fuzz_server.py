# SPDX-License-Identifier: MIT
# Random and near-valid requests against a live server: it must not crash, report no sanitizer
# error, and count exactly the updates it answered 202 (every one of them in a round).
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

BIN = os.environ.get('TRIBUTARY_BIN', 'build/tributary')
SECONDS = float(os.environ.get('FUZZ_SECONDS', '20'))
d = tempfile.mkdtemp(prefix='trib-fuzz-')
log = open(d + '/log', 'wb')
p = subprocess.Popen([BIN, 'up', '--listen', '127.0.0.1:0', '--port-file', d + '/port', '--data-dir', d + '/data', '--arena-mb', '64'], stdout=log, stderr=log)
while not os.path.exists(d + '/port') or not open(d + '/port').read().endswith('\n'):
    time.sleep(0.05)
port = int(open(d + '/port').read())
tok = open(d + '/data/admin-token').read().strip()
def req(raw, rd=True):
    s = socket.create_connection(('127.0.0.1', port), timeout=0.15)
    try:
        s.sendall(raw)
        if rd:
            try: s.recv(65536)
            except Exception: pass
    except Exception: pass
    s.close()
body = json.dumps({'name': 'f', 'clients_per_round': 3, 'tensors': [{'name': 'a', 'shape': [4, 4], 'dtype': 'F32'}, {'name': 'b', 'shape': [3], 'dtype': 'F32'}]}).encode()
req(b'POST /v1/jobs HTTP/1.1\r\nAuthorization: Bearer ' + tok.encode() + b'\r\nContent-Length: %d\r\n\r\n' % len(body) + body)
rng = random.Random(1)
paths = [b'/v1/jobs', b'/v1/jobs/f', b'/v1/jobs/f/updates', b'/v1/jobs/f/model', b'/metrics', b'/healthz', b'/v1/functions', b'/v1/jobs/f/model?after=0&timeout=0', b'/v1/jobs/f/model?round=99999999999']
# Job g takes the lifecycle's fuzz (DELETE, pause, resume), made again now and then: f's
# accounting below needs f to live.
paths += [b'/v1/jobs/g', b'/v1/jobs/g?purge=true', b'/v1/jobs/g/pause', b'/v1/jobs/g/resume',
          b'/v1/jobs/g/updates']
body_g = body.replace(b'"f"', b'"g"')
methods = [b'GET', b'POST', b'PUT', b'DELETE', b'HEAD', b'PATCH', b'XYZ']
cts = [b'application/octet-stream', b'application/x-safetensors', b'application/json', b'text/plain', b'']
def st_blob():
    n = rng.randint(0, 200)
    hdr = rng.choice([b'{"a":{"dtype":"F32","shape":[4,4],"data_offsets":[0,64]},"b":{"dtype":"F16","shape":[3],"data_offsets":[64,70]}}',
                      b'{"a":{"dtype":"I8","shape":[4,4],"data_offsets":[0,16]},"a.scale":{"dtype":"F32","shape":[],"data_offsets":[16,20]},"b":{"dtype":"BF16","shape":[3],"data_offsets":[20,26]}}',
                      os.urandom(n), b'{' * n, b'{"a":{"dtype":"F32","shape":[18446744073709551615,2],"data_offsets":[0,8]}}'])
    hl = len(hdr) if rng.random() < 0.8 else rng.randint(0, 2**64 - 1)
    return hl.to_bytes(8, 'little') + hdr + os.urandom(rng.randint(0, 120))
t_end = time.time() + SECONDS
cur_round = [0]
accepted = [0]
n = 0
while time.time() < t_end:
    n += 1
    if n % 50 == 1:
        req(b'POST /v1/jobs HTTP/1.1\r\nAuthorization: Bearer ' + tok.encode() +
            b'\r\nContent-Length: %d\r\n\r\n' % len(body_g) + body_g)
    kind = rng.random()
    if kind < 0.35:
        # Almost valid updates (some valid): raw or safetensors, one field perturbed.
        vals = [rng.uniform(-1, 1) for _ in range(19)]
        if rng.random() < 0.5:
            b = struct.pack('<19f', *vals); ct = b'application/octet-stream'
        else:
            hdr = b'{"b":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},"a":{"dtype":"F16","shape":[4,4],"data_offsets":[12,44]}}'
            hdr += b' ' * ((8 - len(hdr) % 8) % 8)
            b = len(hdr).to_bytes(8, 'little') + hdr + struct.pack('<3f', *vals[:3]) + struct.pack('<16e', *vals[3:])
            ct = b'application/x-safetensors'
        rnd = str(rng.choice([cur_round[0], cur_round[0], cur_round[0] + 1, max(cur_round[0] - 1, 0)])).encode()
        hs = [b'POST /v1/jobs/f/updates HTTP/1.1', b'Authorization: Bearer ' + tok.encode(),
              b'X-Tributary-Round: ' + rnd, b'X-Tributary-Samples: %d' % rng.randint(1, 9),
              b'Content-Type: ' + ct, b'Content-Length: %d' % len(b)]
        raw = b'\r\n'.join(hs) + b'\r\n\r\n' + b
        if rng.random() < 0.3:
            i = rng.randint(0, len(raw) - 1)
            raw = raw[:i] + bytes([rng.randint(0, 255)]) + raw[i + 1:]
        s2 = socket.create_connection(('127.0.0.1', port), timeout=0.5)
        try:
            s2.sendall(raw)
            resp = s2.recv(65536)
            if b' 202 ' in resp[:20]:
                accepted[0] += 1
            elif b' 409 ' in resp[:20] and b'"round":' in resp:
                cur_round[0] = int(resp.split(b'"round":')[1].split(b'}')[0].split(b',')[0])
        except Exception:
            pass
        s2.close()
        if p.poll() is not None:
            print('SERVER DIED after', n, 'requests'); break
        continue
    if kind < 0.45:
        raw = os.urandom(rng.randint(1, 3000))
    else:
        m = rng.choice(methods); pth = rng.choice(paths)
        if m == b'DELETE' and pth == b'/v1/jobs/f':
            pth = b'/v1/jobs/g'
        hs = [m + b' ' + pth + b' HTTP/1.' + rng.choice([b'1', b'0', b'9'])]
        if rng.random() < 0.8: hs.append(b'Authorization: Bearer ' + (tok.encode() if rng.random() < 0.7 else os.urandom(8).hex().encode()))
        if rng.random() < 0.8: hs.append(b'X-Tributary-Round: ' + rng.choice([b'0', b'1', b'-1', b'99999999999999999999', b'x', b'']))
        if rng.random() < 0.5: hs.append(b'X-Tributary-Samples: ' + rng.choice([b'0', b'1', b'5', b'1e9', b'-3']))
        ct = rng.choice(cts)
        if ct: hs.append(b'Content-Type: ' + ct)
        b = rng.choice([os.urandom(rng.randint(0, 100)), st_blob(), (b'\x00' * 76), b'\x00\x00\xc0\x7f' * 19])
        cl = len(b)
        r = rng.random()
        if r < 0.1: hs.append(b'Transfer-Encoding: chunked')
        elif r < 0.2: hs.append(b'Content-Length: ' + str(rng.randint(0, 10**9)).encode())
        elif r < 0.25: hs.append(b'Expect: 100-continue'); hs.append(b'Content-Length: %d' % cl)
        else: hs.append(b'Content-Length: %d' % cl)
        if rng.random() < 0.05: hs.append(b'X-Junk: ' + b'A' * rng.randint(0, 20000))
        raw = b'\r\n'.join(hs) + b'\r\n\r\n' + b
        if rng.random() < 0.2: raw = raw[:rng.randint(0, len(raw))]
        if rng.random() < 0.2: raw = raw + raw  # pipelined
    req(raw, rd=rng.random() < 0.7)
    if p.poll() is not None:
        print('SERVER DIED after', n, 'requests'); break
ok = p.poll() is None
print('requests', n, 'accepted', accepted[0], 'server alive' if ok else 'SERVER DIED')
st = {}
if ok:
    import urllib.request
    time.sleep(0.5)
    r = urllib.request.Request('http://127.0.0.1:%d/v1/jobs/f' % port,
                               headers={'Authorization': 'Bearer ' + tok})
    st = json.loads(urllib.request.urlopen(r, timeout=5).read())
    print('status:', {k: st[k] for k in ('round', 'model_round', 'received', 'accepted_total')})
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=40)
log.close()
text = open(d + '/log', errors='replace').read()
bad = [w for w in ('Sanitizer', 'runtime error') if w in text]
fail = []
if not ok:
    fail.append('the server died')
elif p.returncode != 0:
    fail.append('exit status %d after SIGTERM' % p.returncode)
if bad:
    fail.append('sanitizer report in the log')
if st and st['accepted_total'] != accepted[0]:
    fail.append('accepted_total %d, but %d updates got 202' % (st['accepted_total'], accepted[0]))
if st and st['round'] * 3 + st['received'] != accepted[0]:
    fail.append('%d rounds of 3 + %d received != %d accepted' % (st['round'], st['received'],
                                                                accepted[0]))
if fail:
    print(text[-4000:])
    print('FAIL: ' + '; '.join(fail))
    sys.exit(1)
shutil.rmtree(d, ignore_errors=True)
print('PASS')
