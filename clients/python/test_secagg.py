# SPDX-License-Identifier: MIT
"""tributary_secagg against tests/secagg/vectors.json (the file core's test_secagg.c checks too)
and the Shamir properties. No server needed."""
import itertools
import json
import os
import unittest

import numpy as np
from cryptography.exceptions import InvalidTag

import tributary_secagg as sa

VECTORS = os.environ.get("TRIB_SECAGG_VECTORS") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "secagg", "vectors.json")


def hx(s):
    return bytes.fromhex(s)


class Vectors(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(VECTORS) as f:
            cls.v = json.load(f)

    def test_rfc_known_answers(self):
        r = self.v["rfc"]
        x = r["x25519"]
        self.assertEqual(sa.public_key(hx(x["alice_sk"])).hex(), x["alice_pk"])
        self.assertEqual(sa.public_key(hx(x["bob_sk"])).hex(), x["bob_pk"])
        self.assertEqual(sa.agree(hx(x["alice_sk"]), hx(x["bob_pk"])).hex(), x["shared"])
        self.assertEqual(sa.agree(hx(x["bob_sk"]), hx(x["alice_pk"])).hex(), x["shared"])
        k = r["hkdf"]
        self.assertEqual(sa.hkdf(hx(k["ikm"]), hx(k["salt"]), hx(k["info"]), k["length"]).hex(),
                         k["okm"])
        self.assertEqual(sa.prg_bytes(bytes(32), 0, 64).hex(), r["chacha20_zero_block0"])

    def test_hkdf_is_cryptographys(self):
        """The stdlib HKDF gives cryptography's bytes: lengths across block edges, an empty
        salt (RFC 5869: HashLen zeros), empty and long info."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF
        for n, (salt, info, length) in enumerate([(b"", b"", 32), (sa.SALT, b"x" * 300, 31),
                                                  (b"s" * 100, b"i", 64), (b"k", b"", 65),
                                                  (sa.SALT, b"share\0", 255 * 32)]):
            ikm = bytes([n]) * (n * 7 + 1)
            want = HKDF(algorithm=hashes.SHA256(), length=length, salt=salt or None,
                        info=info).derive(ikm)
            self.assertEqual(sa.hkdf(ikm, salt, info, length), want)
        with self.assertRaises(ValueError):
            sa.hkdf(b"k", b"", b"", 255 * 32 + 1)

    def test_keys_and_agreement(self):
        keys = self.v["keys"]
        for k in keys:
            self.assertEqual(sa.public_key(hx(k["sk"])).hex(), k["pk"])
        for a in self.v["agree"]:
            i, j = a["i"], a["j"]
            self.assertEqual(sa.agree(hx(keys[i]["sk"]), hx(keys[j]["pk"])).hex(), a["shared"])
            self.assertEqual(sa.agree(hx(keys[j]["sk"]), hx(keys[i]["pk"])).hex(), a["shared"])

    def test_derive(self):
        for d in self.v["derive"]:
            self.assertEqual(sa.derive(hx(d["ikm"]), d["label"], d["round"], d["a"], d["b"]).hex(),
                             d["out"])

    def test_prg_ranges(self):
        for p in self.v["prg"]:
            key = hx(p["key"])
            self.assertEqual(sa.prg_bytes(key, p["first"], 4 * p["n"]).hex(), p["bytes"])
            words = sa.prg_u32(key, p["first"], p["n"])
            self.assertEqual(words.astype("<u4").tobytes().hex(), p["bytes"])
            # A range is the slice of the longer stream it lies in.
            if p["first"] >= 3:
                longer = sa.prg_u32(key, p["first"] - 3, p["n"] + 3)
                np.testing.assert_array_equal(longer[3:], words)
        with self.assertRaises(ValueError):
            sa.prg_bytes(bytes(32), (1 << 36) - 1, 8)

    def test_aead(self):
        for a in self.v["aead"]:
            key, nonce, ad = hx(a["key"]), hx(a["nonce"]), hx(a["ad"])
            self.assertEqual(sa.seal(key, nonce, hx(a["pt"]), ad).hex(), a["ct"])
            self.assertEqual(sa.open_(key, nonce, hx(a["ct"]), ad).hex(), a["pt"])
            bad = bytearray(hx(a["ct"]))
            bad[-1] ^= 1
            with self.assertRaises(InvalidTag):
                sa.open_(key, nonce, bytes(bad), ad)
            with self.assertRaises(InvalidTag):
                sa.open_(key, nonce, hx(a["ct"]), ad + b"x")

    def test_shamir_shares_and_every_subset(self):
        for s in self.v["shamir"]:
            secret, t = hx(s["secret"]), s["t"]
            shares = sa.shamir_split(secret, t, s["xs"], hx(s["coef_seed"]))
            self.assertEqual([sa.share_encode(x).hex() for x in shares], s["shares"])
            dec = [sa.share_decode(hx(e), len(secret)) for e in s["shares"]]
            for sub in itertools.islice(itertools.permutations(dec, t), 200):
                self.assertEqual(sa.shamir_combine(sub, t, len(secret)), secret)


class Shamir(unittest.TestCase):
    def test_hand_computed_line(self):
        # f(x) = 5 + 7x: f(2) = 19, f(3) = 26.
        self.assertEqual(sa.shamir_combine([(2, [19]), (3, [26])], 2, 1), bytes([5]))
        # f(x) = 5 + (P-1)x wraps: f(1) = P + 4 = 4, f(2) = 2P + 3 = 3 (mod P).
        self.assertEqual(sa.shamir_combine([(1, [4]), (2, [3])], 2, 1), bytes([5]))
        # Two chunks (8 bytes): 0x01..07 then 0x08; f_c = s_c + 1x; points 1 and 2.
        s0 = int.from_bytes(bytes(range(1, 8)), "little")
        got = sa.shamir_combine([(1, [s0 + 1, 9]), (2, [s0 + 2, 10])], 2, 8)
        self.assertEqual(got, bytes(range(1, 9)))

    def test_fewer_than_threshold_does_not_rebuild(self):
        secret = os.urandom(32)
        shares = sa.shamir_split(secret, 5, list(range(1, 9)))
        wrong = 0
        for sub in itertools.combinations(shares, 4):
            try:
                wrong += sa.shamir_combine(sub, 4, 32) != secret
            except ValueError:
                wrong += 1
        self.assertEqual(wrong, 70)

    def test_bad_parameters(self):
        for args in ((b"", 1, [1]), (bytes(65), 1, [1]), (bytes(8), 0, [1]),
                     (bytes(8), 3, [1, 2]), (bytes(8), 2, [1, 1]), (bytes(8), 1, [0]),
                     (bytes(8), 1, [1 << 31])):
            with self.assertRaises(ValueError, msg=repr(args)):
                sa.shamir_split(*args)


ROUND = os.path.join(os.path.dirname(VECTORS), "round.json")


class Round(unittest.TestCase):
    """tests/secagg/round.json (Python clients; runtime's test_secagg.c replays it through the C
    server) unmasked here from its reveals alone: the same sum."""

    def test_transcript_unmasks_to_the_sum(self):
        with open(ROUND) as f:
            r = json.load(f)
        cfg = r["cfg"]
        n, rnd, t = cfg["dim"] + 1, cfg["round"], cfg["threshold"]
        adv = {a["u"]: (hx(a["c_pk"]), hx(a["s_pk"])) for a in r["advertise"]}
        graph = {int(u): nb for u, nb in r["graph"].items()}
        self.assertEqual(sa.graph(list(adv), cfg["neighbours"], hx(cfg["graph_seed"])), graph)
        acc = np.zeros(n, dtype=np.uint32)
        for m in r["masked"]:
            acc += np.frombuffer(hx(m["y"]), dtype="<u4").astype(np.uint32)
        got = {}
        for rv in r["reveal"]:
            for v, kind, share in zip(rv["v"], rv["kind"], rv["share"]):
                got.setdefault((v, kind), []).append(sa.share_decode(hx(share), 32))
        survivors = set(r["survivors"])
        for (v, kind), shares in sorted(got.items()):
            secret = sa.shamir_combine(shares, t, 32)
            if kind == sa.REVEAL_SELF:
                self.assertIn(v, survivors)
                acc -= sa.prg_u32(sa.derive(secret, "self", rnd, v, 0), 0, n)
                continue
            self.assertNotIn(v, survivors)
            self.assertEqual(sa.public_key(secret), adv[v][1])
            for u in graph[v]:
                if u in survivors:
                    lo, hi = min(u, v), max(u, v)
                    m = sa.prg_u32(sa.derive(sa.agree(secret, adv[u][1]), "mask", rnd, lo, hi),
                                   0, n)
                    if u < v:
                        acc -= m
                    else:
                        acc += m
        self.assertEqual(acc.astype("<u4").tobytes().hex(), r["sum"])
        mean = sa.dequantise_mean(acc[:-1], int(acc[-1]), cfg["clip"], cfg["bits"])
        np.testing.assert_allclose(mean, np.array(r["mean"], dtype=np.float32), rtol=0, atol=0)

    def test_client_refuses_both_secrets_of_one_neighbour(self):
        a, b = sa.SecAggClient(0, 1, 1), sa.SecAggClient(1, 1, 1)
        keys = {0: a.advertise(), 1: b.advertise()}
        ct = b.share({0: keys[0]})
        a.masked(np.zeros(3, dtype=np.uint32), {1: ct[0]}, keys)
        self.assertEqual(len(a.reveal([(1, sa.REVEAL_SELF)])[1]), sa.SHARE_BYTES)
        with self.assertRaises(ValueError):
            a.reveal([(1, sa.REVEAL_SECRET)])
        with self.assertRaises(ValueError):
            a.reveal([(7, sa.REVEAL_SELF)])
        # A share addressed to another client does not open.
        c = sa.SecAggClient(2, 1, 1)
        with self.assertRaises(InvalidTag):
            c.masked(np.zeros(3, dtype=np.uint32), {1: ct[0]}, keys | {2: c.advertise()})

    def test_quantise_bounds_and_round_trip(self):
        q = sa.quantise([-5.0, -0.5, 0.0, 0.5, 5.0], 0.5, 8)
        self.assertEqual(q.tolist(), [0, 0, 128, 255, 255])
        x = np.linspace(-0.5, 0.5, 101)
        back = sa.dequantise_mean(sa.quantise(x, 0.5, 16), 1, 0.5, 16)
        self.assertLessEqual(float(np.max(np.abs(back - x))), 0.5 / 65535 + 1e-7)


if __name__ == "__main__":
    unittest.main()
