/* SPDX-License-Identifier: MIT */
/*
 * Secure aggregation's primitives: X25519, HKDF-SHA256 and the AEAD over libsodium; the ChaCha20
 * PRG over libsodium for short ranges and OpenSSL's libcrypto for long ones (the comment above
 * prg_chacha says why). Linked into tributary and tributary-fn-sa, never the plain tributary-fn.
 */
#include "trib_secagg_crypto.h"
#include "trib_secagg_chacha.h"

#include <errno.h>
#include <limits.h>
#include <openssl/core_dispatch.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/provider.h>
#include <pthread.h>
#include <sodium.h>
#include <stdbool.h>
#include <string.h>

#if defined(__x86_64__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#include <immintrin.h>
#define PRG_HAVE_X86 1
#else
#define PRG_HAVE_X86 0
#endif

/* Bytes of keystream expanded per step of the adds (on the stack, L1-sized). */
#define PRG_STEP_BYTES 4096u
/*
 * Ranges of at least this many bytes go to OpenSSL. Below it the context's allocation and key
 * setup (~1 us) costs more than the stream: Shamir's coefficients read 64 bytes at a time.
 */
#define PRG_OPENSSL_MIN 1024u
/*
 * HKDF's extract over at least this many bytes of IKM runs on OpenSSL's SHA-256, which uses the
 * CPU's SHA extensions where libsodium's is portable C: 1.75 GB/s against ~0.4 GB/s (`openssl
 * speed -evp sha256` on the bench machine). The gateway digests every masked input (4 MB at 1M
 * parameters, runtime/node/rt_secagg_state.c's rt_sa_digest) for its retry check: with
 * libsodium that was 1 s of the 100-client round's 1.25 s of server CPU (docs/BENCHMARKS.md,
 * issue 19). The same HMAC-SHA256, so the same bytes: the restart journal's digests keep
 * matching. Short IKMs (keys, seeds, stage bodies) stay on libsodium: OpenSSL's per-call setup
 * costs more than their hash.
 */
#define HKDF_OPENSSL_MIN 4096u

int trib_sa_init(void)
{
	return sodium_init() < 0 ? -EIO : 0;
}

int trib_sa_public_key(uint8_t pk[32], const uint8_t sk[32])
{
	if (trib_sa_init() || crypto_scalarmult_base(pk, sk) != 0)
		return -EIO;
	return 0;
}

int trib_sa_agree(uint8_t out[32], const uint8_t sk[32], const uint8_t peer_pk[32])
{
	if (trib_sa_init())
		return -EIO;
	/* libsodium refuses an all-zero result, as RFC 7748 section 6.1 lets a protocol do. */
	if (crypto_scalarmult(out, sk, peer_pk) != 0) {
		sodium_memzero(out, 32);
		return -EINVAL;
	}
	return 0;
}

/*
 * The low-order points of Curve25519 and its twist as 255-bit encodings (the top bit is ignored,
 * RFC 7748 section 5): x = 0 (order 2), 1 (order 4, on the twist), p - 1 (order 4), the two x of
 * the order-8 points, and 0 and 1 again as p and p + 1, the only non-canonical encodings of a
 * small x (x + p < 2^255 needs x < 19). The same list as libsodium's has_small_order (its
 * crypto_scalarmult/curve25519/ref10). Why a list and not a scalar multiplication by a multiple
 * of the cofactor (which sends exactly these to zero): the gateway checks two keys per client
 * at advertise, and the multiplication was ~50 us each, a third of an advertise request's CPU
 * (docs/BENCHMARKS.md, "The secure round's stage requests"); tests/core/test_secagg.c checks the
 * two agree on the listed points, near them and on random keys.
 */
static const uint8_t low_order[7][32] = {
	{ 0 },
	{ 1 },
	{ 0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4,
	  0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49,
	  0xb8, 0x00 },
	{ 0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef,
	  0x5b, 0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f,
	  0x11, 0x57 },
	{ 0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
	  0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
	  0xff, 0x7f },
	{ 0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
	  0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
	  0xff, 0x7f },
	{ 0xee, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
	  0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
	  0xff, 0x7f },
};

int trib_sa_public_key_check(const uint8_t pk[32])
{
	uint8_t x[32];

	memcpy(x, pk, 32);
	x[31] &= 0x7f;
	/* Public keys: a plain comparison (no secret to time). */
	for (size_t i = 0; i < sizeof(low_order) / sizeof(low_order[0]); i++)
		if (!memcmp(x, low_order[i], 32))
			return -EINVAL;
	return 0;
}

int trib_sa_hkdf(uint8_t *out, size_t out_len, const uint8_t *ikm, size_t ikm_len,
		 const uint8_t *salt, size_t salt_len, const uint8_t *info, size_t info_len)
{
	crypto_auth_hmacsha256_state st;
	uint8_t prk[32], t[32];
	size_t done = 0;
	uint8_t ctr = 0;

	if (out_len > 255u * 32u || trib_sa_init())
		return -EINVAL;
	/* Extract: PRK = HMAC(salt, IKM). */
	if (ikm_len >= HKDF_OPENSSL_MIN && salt_len <= INT_MAX) {
		unsigned int md_len = 0;

		/* HMAC() takes a NULL key as empty; libsodium's init did the same for salt_len 0. */
		if (!HMAC(EVP_sha256(), salt_len ? salt : (const uint8_t *)"", (int)salt_len, ikm,
			  ikm_len, prk, &md_len) || md_len != sizeof(prk))
			return -EIO;
	} else {
		crypto_auth_hmacsha256_init(&st, salt, salt_len);
		crypto_auth_hmacsha256_update(&st, ikm, ikm_len);
		crypto_auth_hmacsha256_final(&st, prk);
	}
	/* Expand: T(i) = HMAC(PRK, T(i-1) || info || i). */
	while (done < out_len) {
		size_t n = out_len - done < 32 ? out_len - done : 32;

		ctr++;
		crypto_auth_hmacsha256_init(&st, prk, sizeof(prk));
		if (ctr > 1)
			crypto_auth_hmacsha256_update(&st, t, sizeof(t));
		crypto_auth_hmacsha256_update(&st, info, info_len);
		crypto_auth_hmacsha256_update(&st, &ctr, 1);
		crypto_auth_hmacsha256_final(&st, t);
		memcpy(out + done, t, n);
		done += n;
	}
	sodium_memzero(prk, sizeof(prk));
	sodium_memzero(t, sizeof(t));
	sodium_memzero(&st, sizeof(st));
	return 0;
}

static void put_le(uint8_t *p, uint64_t v, size_t n)
{
	for (size_t i = 0; i < n; i++, v >>= 8)
		p[i] = (uint8_t)v;
}

int trib_sa_derive(uint8_t out[32], const uint8_t *ikm, size_t ikm_len, const char *label,
		   uint64_t round, uint32_t a, uint32_t b)
{
	uint8_t info[TRIB_SA_LABEL_MAX + 1 + 16];
	size_t ll = label ? strlen(label) : 0;

	if (ll == 0 || ll > TRIB_SA_LABEL_MAX)
		return -EINVAL;
	memcpy(info, label, ll);
	info[ll] = 0;
	put_le(info + ll + 1, round, 8);
	put_le(info + ll + 9, a, 4);
	put_le(info + ll + 13, b, 4);
	return trib_sa_hkdf(out, 32, ikm, ikm_len, (const uint8_t *)TRIB_SA_SALT,
			    sizeof(TRIB_SA_SALT) - 1, info, ll + 17);
}

static EVP_MAC *poly_mac;
static pthread_once_t poly_mac_once = PTHREAD_ONCE_INIT;

static void poly_mac_fetch(void)
{
	poly_mac = EVP_MAC_fetch(NULL, "POLY1305", NULL);
}

int trib_sa_poly1305(uint8_t tag[16], const uint8_t key[32], const void *msg, size_t len)
{
	EVP_MAC_CTX *ctx;
	size_t tag_len = 0;
	int ok;

	if (pthread_once(&poly_mac_once, poly_mac_fetch) || !poly_mac)
		return -EIO;
	ctx = EVP_MAC_CTX_new(poly_mac);
	if (!ctx)
		return -ENOMEM;
	ok = EVP_MAC_init(ctx, key, 32, NULL) == 1 && EVP_MAC_update(ctx, msg, len) == 1 &&
	     EVP_MAC_final(ctx, tag, &tag_len, 16) == 1 && tag_len == 16;
	EVP_MAC_CTX_free(ctx);
	return ok ? 0 : -EIO;
}

/* Does [first, first + n) words fit in one stream? */
static int prg_range_ok(uint64_t first, uint64_t n)
{
	return first <= TRIB_SA_PRG_MAX_WORDS && n <= TRIB_SA_PRG_MAX_WORDS - first;
}

/*
 * Why two implementations of one stream: the server removes every survivor's self mask, one
 * 4 MB stream per client at 1M parameters (400 MB a round at 100 clients), and libsodium
 * 1.0.18's ChaCha20 (AVX2 at best) ran at 1.5-2 GB/s a core on the bench machine against
 * 6.5 GB/s for OpenSSL 3's (AVX-512; `openssl speed -evp chacha20`, docs/BENCHMARKS.md, issue
 * 19): a third of the secure round's server CPU. EVP_chacha20 is RFC 8439's cipher with a
 * 16-byte IV = the 32-bit block counter (little-endian) || the 96-bit nonce, the same keystream
 * libsodium's crypto_stream_chacha20_ietf_xor_ic gives (tests/core/test_secagg.c compares them
 * over counters, offsets and lengths; the shared vectors pin both). libsodium keeps X25519,
 * HKDF and the AEAD, and the short ranges.
 */
static struct {
	void *provctx;
	OSSL_FUNC_cipher_newctx_fn *newctx;
	OSSL_FUNC_cipher_encrypt_init_fn *init;
	OSSL_FUNC_cipher_update_fn *update;
	OSSL_FUNC_cipher_freectx_fn *freectx;
} prg_chacha;
static pthread_once_t prg_chacha_once = PTHREAD_ONCE_INIT;

/* Is "ChaCha20" one of @names (a provider's names of an algorithm, ':'-separated)? */
static bool prg_names_chacha20(const char *names)
{
	size_t len = strlen("ChaCha20");

	for (const char *p = names; p; p = strchr(p, ':'), p = p ? p + 1 : NULL)
		if (!strncmp(p, "ChaCha20", len) && (p[len] == ':' || p[len] == '\0'))
			return true;
	return false;
}

/*
 * The default provider's ChaCha20, called through its dispatch table (provider-cipher(7)), the
 * functions EVP_EncryptInit_ex2/EVP_EncryptUpdate would reach. Not EVP_CIPHER_fetch: its first
 * call builds the library's method store for every cipher of the provider, 1.1 ms of CPU in the
 * static tributary-fn-sa, which starts for every secure round's unmasking shard and expands at
 * ~7 GB/s (3% of a shard's 200 MB at 100 clients x 1M; docs/BENCHMARKS.md, issue 19). Loading
 * the provider and asking it for its ciphers is 0.4 ms. try_load keeps the fallbacks: the
 * process's other OpenSSL users (TLS, HMAC) find what they found before. Loaded once, kept for
 * the process's life (as a fetched cipher was).
 */
static void prg_chacha_load(void)
{
	OSSL_PROVIDER *prov = OSSL_PROVIDER_try_load(NULL, "default", 1);
	const OSSL_ALGORITHM *alg;
	const OSSL_DISPATCH *d;
	int no_store = 0;

	if (!prov)
		return;
	alg = OSSL_PROVIDER_query_operation(prov, OSSL_OP_CIPHER, &no_store);
	while (alg && alg->algorithm_names && !prg_names_chacha20(alg->algorithm_names))
		alg++;
	if (!alg || !alg->algorithm_names)
		return;
	for (d = alg->implementation; d->function_id; d++) {
		switch (d->function_id) {
		case OSSL_FUNC_CIPHER_NEWCTX:
			prg_chacha.newctx = OSSL_FUNC_cipher_newctx(d);
			break;
		case OSSL_FUNC_CIPHER_ENCRYPT_INIT:
			prg_chacha.init = OSSL_FUNC_cipher_encrypt_init(d);
			break;
		case OSSL_FUNC_CIPHER_UPDATE:
			prg_chacha.update = OSSL_FUNC_cipher_update(d);
			break;
		case OSSL_FUNC_CIPHER_FREECTX:
			prg_chacha.freectx = OSSL_FUNC_cipher_freectx(d);
			break;
		default:
			break;
		}
	}
	prg_chacha.provctx = OSSL_PROVIDER_get0_provider_ctx(prov);
}

static bool prg_chacha_ready(void)
{
	return !pthread_once(&prg_chacha_once, prg_chacha_load) && prg_chacha.newctx &&
	       prg_chacha.init && prg_chacha.update && prg_chacha.freectx;
}

/* One stream's state: the provider's cipher context. */
typedef void prg_ctx;

static void prg_close(prg_ctx *ctx)
{
	if (ctx)
		prg_chacha.freectx(ctx);
}

/* The next len bytes of the stream, encrypted from in (zeros: the keystream) into out. */
static int prg_update(prg_ctx *ctx, uint8_t *out, const uint8_t *in, size_t len)
{
	size_t outl = 0;

	return prg_chacha.update(ctx, out, &outl, len, in, len) == 1 && outl == len ? 0 : -EIO;
}

/* A stream positioned at byte `start` of the key's keystream (start < 2^38, its block < 2^32). */
static prg_ctx *prg_open(const uint8_t key[32], uint64_t start)
{
	uint8_t iv[16] = { 0 }, skip[64] = { 0 };
	uint64_t block = start / 64;
	size_t skip_len = (size_t)(start % 64);
	prg_ctx *ctx;

	if (!prg_chacha_ready())
		return NULL;
	ctx = prg_chacha.newctx(prg_chacha.provctx);
	if (!ctx)
		return NULL;
	/*
	 * EVP_chacha20's IV: the counter word then the all-zero nonce (the PRG's nonce is fixed,
	 * the key is per stream).
	 */
	for (int i = 0; i < 4; i++)
		iv[i] = (uint8_t)(block >> (8 * i));
	if (prg_chacha.init(ctx, key, 32, iv, 16, NULL) != 1 ||
	    (skip_len && prg_update(ctx, skip, skip, skip_len))) {
		prg_close(ctx);
		return NULL;
	}
	OPENSSL_cleanse(skip, sizeof(skip));
	return ctx;
}

/* The plaintext of a step: the keystream is the encryption of zeros. */
static const uint8_t prg_zeros[PRG_STEP_BYTES];

/* The next len bytes of the stream into out (the keystream is the encryption of zeros). */
static int prg_next(prg_ctx *ctx, uint8_t *out, size_t len)
{
	/* A step (the adds' case) reads zeros from a constant: no memset of out first. */
	if (len <= sizeof(prg_zeros))
		return prg_update(ctx, out, prg_zeros, len);
	while (len) {
		/* The provider's update takes any size_t; INT_MAX keeps to what EVP was given. */
		size_t n = len > (size_t)INT_MAX / 2 ? (size_t)INT_MAX / 2 : len;

		memset(out, 0, n);
		if (prg_update(ctx, out, out, n))
			return -EIO;
		out += n;
		len -= n;
	}
	return 0;
}

/* libsodium's path: bytes [start, start + len) of the stream, any start and length. */
static void prg_fill_sodium(uint8_t *out, size_t len, const uint8_t key[32], uint64_t start)
{
	static const uint8_t nonce[crypto_stream_chacha20_ietf_NONCEBYTES];
	uint64_t block = start / 64;
	size_t skip = (size_t)(start % 64), done = 0;

	if (skip && len) {
		uint8_t tmp[64] = { 0 };
		size_t n = 64 - skip < len ? 64 - skip : len;

		crypto_stream_chacha20_ietf_xor_ic(tmp, tmp, sizeof(tmp), nonce, (uint32_t)block,
						   key);
		memcpy(out, tmp + skip, n);
		sodium_memzero(tmp, sizeof(tmp));
		done = n;
		block++;
	}
	if (done < len) {
		memset(out + done, 0, len - done);
		crypto_stream_chacha20_ietf_xor_ic(out + done, out + done, len - done, nonce,
						   (uint32_t)block, key);
	}
}

int trib_sa_prg_bytes(uint8_t *out, size_t len, const uint8_t key[32], uint64_t first_word)
{
	prg_ctx *ctx;
	int err;

	if (!prg_range_ok(first_word, ((uint64_t)len + 3) / 4) || trib_sa_init())
		return -EINVAL;
	if (len < PRG_OPENSSL_MIN) {
		prg_fill_sodium(out, len, key, first_word * 4);
		return 0;
	}
	ctx = prg_open(key, first_word * 4);
	if (!ctx)
		return -ENOMEM;
	err = prg_next(ctx, out, len);
	prg_close(ctx);
	return err;
}

/* The same stream through libsodium alone, whatever the length (tests compare the two paths). */
int trib_sa_prg_bytes_sodium(uint8_t *out, size_t len, const uint8_t key[32], uint64_t first_word)
{
	if (!prg_range_ok(first_word, ((uint64_t)len + 3) / 4) || trib_sa_init())
		return -EINVAL;
	prg_fill_sodium(out, len, key, first_word * 4);
	return 0;
}

static inline uint32_t le32(const uint8_t *p)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	uint32_t v;

	memcpy(&v, p, 4);
	return v;
#else
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
#endif
}

int trib_sa_prg_u32(uint32_t *out, size_t n, const uint8_t key[32], uint64_t first)
{
	int err;

	if (n > SIZE_MAX / 4)
		return -EINVAL;
	err = trib_sa_prg_bytes((uint8_t *)out, n * 4, key, first);
	if (err)
		return err;
#if !(defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__)
	for (size_t i = 0; i < n; i++)
		out[i] = le32((const uint8_t *)&out[i]);
#endif
	return 0;
}

/* acc[i] += sign * word i of buf (mod 2^32), i < m: the portable loop, any byte order. */
static void add_words_generic(uint32_t *acc, const uint8_t *buf, size_t m, int sign)
{
	/* Unsigned arithmetic wraps modulo 2^32: the group masks live in. */
	if (sign > 0)
		for (size_t i = 0; i < m; i++)
			acc[i] += le32(buf + 4 * i);
	else
		for (size_t i = 0; i < m; i++)
			acc[i] -= le32(buf + 4 * i);
}

/*
 * The add of a step, vectorised by hand: the baseline x86-64 build gives the loop above SSE2
 * (4 words an instruction), and that add was a fifth of the keystream's own time in the
 * unmasking's profile (issue 19: trib_sa_prg_add_many 4.4% of the round's samples against
 * ChaCha20_16x's 19.3%). AVX2 adds 8 words an instruction (vpaddd/vpsubd wrap modulo 2^32
 * like the loop: the same bits). Little-endian only: the keystream's bytes are then the words.
 * With AVX-512 nothing is added here: the streams are summed as they are computed
 * (trib_secagg_chacha.h).
 */
#if PRG_HAVE_X86

__attribute__((target("avx2"))) static void add_words_avx2(uint32_t *acc, const uint8_t *buf,
							    size_t m, int sign)
{
	size_t i = 0;

	if (sign > 0)
		for (; i + 8 <= m; i += 8) {
			__m256i a = _mm256_loadu_si256((const __m256i *)(const void *)(acc + i));
			__m256i b = _mm256_loadu_si256((const __m256i *)(const void *)(buf + 4 * i));

			_mm256_storeu_si256((__m256i *)(void *)(acc + i), _mm256_add_epi32(a, b));
		}
	else
		for (; i + 8 <= m; i += 8) {
			__m256i a = _mm256_loadu_si256((const __m256i *)(const void *)(acc + i));
			__m256i b = _mm256_loadu_si256((const __m256i *)(const void *)(buf + 4 * i));

			_mm256_storeu_si256((__m256i *)(void *)(acc + i), _mm256_sub_epi32(a, b));
		}
	add_words_generic(acc + i, buf + 4 * i, m - i, sign);
}
#endif

typedef void add_words_fn(uint32_t *acc, const uint8_t *buf, size_t m, int sign);

/*
 * The adds' implementations, widest first: the CPU's best is the first it has the feature of.
 * With AVX-512 the streams are not generated by OpenSSL and added at all: core/trib_secagg_chacha.c
 * computes ChaCha20 and sums the streams in registers (fused; trib_secagg_chacha.h).
 */
static const struct {
	const char *name;
	const char *feature; /* for __builtin_cpu_supports, or NULL: any CPU */
	add_words_fn *fn;    /* the add of a step of OpenSSL's keystream, or NULL if fused */
	bool fused;          /* no OpenSSL: trib_sa_chacha16_add computes and adds (and must run) */
} add_impls[] = {
#if PRG_HAVE_X86
	{ "avx512", "avx512f", NULL, true },
	{ "avx2", "avx2", add_words_avx2, false },
#endif
	{ "generic", NULL, add_words_generic, false },
};
#define ADD_IMPLS (sizeof(add_impls) / sizeof(add_impls[0]))

/* Index into add_impls of the adds trib_sa_prg_add_use chose, or -1: the CPU's best. */
static int add_forced = -1;

static bool add_impl_ok(size_t i)
{
	if (add_impls[i].fused && !trib_sa_chacha16_ok())
		return false;
#if PRG_HAVE_X86
	/* __builtin_cpu_supports takes a literal only. */
	if (add_impls[i].feature && !strcmp(add_impls[i].feature, "avx512f"))
		return __builtin_cpu_supports("avx512f");
	if (add_impls[i].feature && !strcmp(add_impls[i].feature, "avx2"))
		return __builtin_cpu_supports("avx2");
#endif
	return !add_impls[i].feature;
}

/* The adds to use (looked up once per call of the adds, not per step). */
static size_t add_impl_index(void)
{
	int f = __atomic_load_n(&add_forced, __ATOMIC_RELAXED);
	size_t i = 0;

	if (f >= 0)
		return (size_t)f;
	while (!add_impl_ok(i))
		i++; /* the last, generic, always is */
	return i;
}

const char *trib_sa_prg_add_impl(void)
{
	return add_impls[add_impl_index()].name;
}

int trib_sa_prg_add_use(const char *name)
{
	if (!name) {
		__atomic_store_n(&add_forced, -1, __ATOMIC_RELAXED);
		return 0;
	}
	for (size_t i = 0; i < ADD_IMPLS; i++) {
		if (strcmp(add_impls[i].name, name))
			continue;
		if (!add_impl_ok(i))
			return -ENOTSUP;
		__atomic_store_n(&add_forced, (int)i, __ATOMIC_RELAXED);
		return 0;
	}
	return -EINVAL;
}

/* trib_sa_prg_add_many's range on OpenSSL's streams, each 4 KB step added with @add. */
static int add_many_openssl(uint32_t *acc, size_t n, uint64_t first, size_t count,
			    const uint8_t *const keys[], const int signs[], add_words_fn *add)
{
	prg_ctx *ctx[TRIB_SA_PRG_MANY_MAX];
	uint8_t buf[PRG_STEP_BYTES];
	size_t opened = 0;
	int err = 0;

	if (n == 0)
		return 0;
	for (; opened < count; opened++) {
		ctx[opened] = prg_open(keys[opened], first * 4);
		if (!ctx[opened]) {
			err = -ENOMEM;
			goto out;
		}
	}
	/*
	 * Piece by piece of acc, every stream: a 4 KB piece of the sum stays in L1 while the
	 * streams are added into it. Stream by stream (trib_sa_prg_add_u32 in a loop), the whole
	 * range of acc went through the caches once per stream: a shard's 2 MB range, 100 times a
	 * round at 100 clients x 1M.
	 */
	for (size_t done = 0; done < n;) {
		size_t m = n - done < PRG_STEP_BYTES / 4 ? n - done : PRG_STEP_BYTES / 4;

		for (size_t j = 0; j < count; j++) {
			err = prg_next(ctx[j], buf, m * 4);
			if (err)
				goto out;
			add(acc + done, buf, m, signs[j]);
		}
		done += m;
	}
out:
	while (opened)
		prg_close(ctx[--opened]);
	sodium_memzero(buf, sizeof(buf));
	return err;
}

int trib_sa_prg_add_many(uint32_t *acc, size_t n, uint64_t first, size_t count,
			 const uint8_t *const keys[], const int signs[])
{
	size_t impl = add_impl_index();

	if (count > TRIB_SA_PRG_MANY_MAX || !prg_range_ok(first, n) || trib_sa_init())
		return -EINVAL;
	for (size_t j = 0; j < count; j++)
		if (signs[j] != 1 && signs[j] != -1)
			return -EINVAL;
	if (n == 0 || count == 0)
		return 0;
	if (add_impls[impl].fused) {
		trib_sa_chacha16_add(acc, first, n, keys, signs, count);
		return 0;
	}
	return add_many_openssl(acc, n, first, count, keys, signs, add_impls[impl].fn);
}

int trib_sa_prg_add_u32(uint32_t *acc, size_t n, const uint8_t key[32], uint64_t first, int sign)
{
	size_t impl = add_impl_index();
	add_words_fn *add = add_impls[impl].fn;
	uint8_t buf[PRG_STEP_BYTES];
	prg_ctx *ctx;
	size_t done = 0;
	int err = 0;

	if ((sign != 1 && sign != -1) || !prg_range_ok(first, n) || trib_sa_init())
		return -EINVAL;
	if (n == 0)
		return 0;
	if (add_impls[impl].fused) {
		trib_sa_chacha16_add(acc, first, n, &key, &sign, 1);
		return 0;
	}
	/*
	 * One pass: each L1-sized piece of the stream is added while still in cache, and one
	 * context runs the whole range (no key setup per piece).
	 */
	ctx = prg_open(key, first * 4);
	if (!ctx)
		return -ENOMEM;
	while (done < n) {
		size_t m = n - done < PRG_STEP_BYTES / 4 ? n - done : PRG_STEP_BYTES / 4;

		err = prg_next(ctx, buf, m * 4);
		if (err)
			break;
		add(acc + done, buf, m, sign);
		done += m;
	}
	prg_close(ctx);
	sodium_memzero(buf, sizeof(buf));
	return err;
}

int trib_sa_seal(uint8_t *ct, const uint8_t *pt, size_t pt_len, const uint8_t *ad, size_t ad_len,
		 const uint8_t nonce[12], const uint8_t key[32])
{
	unsigned long long clen = 0;

	if (trib_sa_init())
		return -EIO;
	if (crypto_aead_chacha20poly1305_ietf_encrypt(ct, &clen, pt, pt_len, ad, ad_len, NULL,
						      nonce, key) != 0)
		return -EIO;
	return 0;
}

int trib_sa_open(uint8_t *pt, const uint8_t *ct, size_t ct_len, const uint8_t *ad, size_t ad_len,
		 const uint8_t nonce[12], const uint8_t key[32])
{
	unsigned long long plen = 0;

	if (ct_len < TRIB_SA_TAG_BYTES)
		return -EINVAL;
	if (trib_sa_init())
		return -EIO;
	if (crypto_aead_chacha20poly1305_ietf_decrypt(pt, &plen, NULL, ct, ct_len, ad, ad_len,
						      nonce, key) != 0)
		return -EBADMSG;
	return 0;
}
