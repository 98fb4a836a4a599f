// SPDX-License-Identifier: MIT
/* The cluster CA, node keys and certificates (see trib_x509.h). */
#include "trib_x509.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "trib_alloc.h"
#include "trib_store.h"

/* notBefore an hour back: a peer whose clock is a little behind still accepts it. */
#define SKEW_S	  3600
#define PEM_MAX	  (64 * 1024)

int trib_x509_read_pem(const char *path, char **out)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	char *buf;
	ssize_t n;
	size_t len = 0;

	if (fd < 0)
		return -errno;
	buf = trib_malloc(PEM_MAX + 1);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	while ((n = read(fd, buf + len, PEM_MAX - len)) > 0)
		len += (size_t)n;
	close(fd);
	if (n < 0 || len == PEM_MAX) {
		trib_free(buf);
		return n < 0 ? -EIO : -EFBIG;
	}
	buf[len] = 0;
	*out = buf;
	return 0;
}

static int pem_write(const char *path, EVP_PKEY *pk, X509 *x, mode_t mode)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *data;
	long len;
	int err;

	if (!b)
		return -ENOMEM;
	if (pk ? !PEM_write_bio_PrivateKey(b, pk, NULL, NULL, 0, NULL, NULL) :
		 !PEM_write_bio_X509(b, x)) {
		BIO_free(b);
		return -ENOMEM;
	}
	len = BIO_get_mem_data(b, &data);
	err = trib_write_file_atomic(path, data, (size_t)len, mode);
	OPENSSL_cleanse(data, (size_t)len); /* a key's bytes do not stay in freed memory */
	BIO_free(b);
	return err;
}

static char *bio_take(BIO *b)
{
	char *data, *s;
	long len = BIO_get_mem_data(b, &data);

	s = trib_malloc((size_t)len + 1);
	if (s) {
		memcpy(s, data, (size_t)len);
		s[len] = 0;
	}
	return s;
}

static EVP_PKEY *key_load(const char *path)
{
	FILE *f = fopen(path, "re");
	EVP_PKEY *pk;

	if (!f)
		return NULL;
	pk = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	return pk;
}

static X509 *cert_load(const char *path)
{
	FILE *f = fopen(path, "re");
	X509 *x;

	if (!f)
		return NULL;
	x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	return x;
}

static X509 *cert_parse(const char *pem)
{
	BIO *b = BIO_new_mem_buf(pem, -1);
	X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;

	BIO_free(b);
	return x;
}

static int add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX v3;
	X509_EXTENSION *ext;
	int ok;

	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
	if (!ext)
		return -EINVAL;
	ok = X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	return ok ? 0 : -ENOMEM;
}

/* Serial (random, positive, 127 bits), validity, subject CN=@cn. */
static int cert_base(X509 *x, const char *cn, int days)
{
	BIGNUM *bn = BN_new();
	int ok;

	ok = bn && BN_rand(bn, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) &&
	     BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) &&
	     X509_set_version(x, X509_VERSION_3) &&
	     X509_gmtime_adj(X509_getm_notBefore(x), -SKEW_S) &&
	     X509_gmtime_adj(X509_getm_notAfter(x), (long)days * 86400) &&
	     X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
					(const unsigned char *)cn, -1, -1, 0);
	BN_free(bn);
	return ok ? 0 : -ENOMEM;
}

static int serial_hex(X509 *x, char out[TRIB_X509_SERIAL_MAX])
{
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get_serialNumber(x), NULL);
	char *h = bn ? BN_bn2hex(bn) : NULL;
	int err = -ENOMEM;

	if (h && strlen(h) < TRIB_X509_SERIAL_MAX) {
		snprintf(out, TRIB_X509_SERIAL_MAX, "%s", h);
		for (char *p = out; *p; p++)
			if (*p >= 'A' && *p <= 'F')
				*p = (char)(*p - 'A' + 'a');
		err = 0;
	}
	OPENSSL_free(h);
	BN_free(bn);
	return err;
}

int trib_x509_ca_ensure(const char *dir, bool *created)
{
	char key[PATH_MAX], crt[PATH_MAX];
	EVP_PKEY *pk = NULL;
	X509 *x = NULL;
	int err;

	*created = false;
	snprintf(key, sizeof(key), "%s/ca.key", dir);
	snprintf(crt, sizeof(crt), "%s/ca.crt", dir);
	if (!access(key, F_OK) && !access(crt, F_OK))
		return 0;
	/* One without the other is a CA half made or half deleted: not papered over. */
	if (!access(key, F_OK) || !access(crt, F_OK))
		return -EEXIST;
	err = trib_mkdir_p(dir, 0700);
	if (err)
		return err;
	pk = EVP_EC_gen("P-256");
	x = X509_new();
	err = -ENOMEM;
	if (!pk || !x)
		goto out;
	err = cert_base(x, "tributary cluster CA", TRIB_X509_CA_DAYS);
	if (!err && (!X509_set_issuer_name(x, X509_get_subject_name(x)) || !X509_set_pubkey(x, pk)))
		err = -ENOMEM;
	if (!err)
		err = add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
	if (!err)
		err = add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign");
	if (!err)
		err = add_ext(x, x, NID_subject_key_identifier, "hash");
	if (!err && !X509_sign(x, pk, EVP_sha256()))
		err = -EINVAL;
	/* The key first, the certificate last: ca.crt present means the pair is whole. */
	if (!err)
		err = pem_write(key, pk, NULL, 0600);
	if (!err)
		err = pem_write(crt, NULL, x, 0644);
	if (!err)
		*created = true;
out:
	EVP_PKEY_free(pk);
	X509_free(x);
	return err;
}

int trib_x509_key_ensure(const char *path)
{
	EVP_PKEY *pk;
	int err;

	if (!access(path, F_OK))
		return 0;
	pk = EVP_EC_gen("P-256");
	if (!pk)
		return -ENOMEM;
	err = pem_write(path, pk, NULL, 0600);
	EVP_PKEY_free(pk);
	return err;
}

int trib_x509_csr(const char *key_path, const char *cn, char **out)
{
	EVP_PKEY *pk = key_load(key_path);
	X509_REQ *r = X509_REQ_new();
	BIO *b = BIO_new(BIO_s_mem());
	int err = -ENOMEM;

	if (!pk) {
		err = -EINVAL;
		goto out;
	}
	if (!r || !b)
		goto out;
	if (!X509_NAME_add_entry_by_txt(X509_REQ_get_subject_name(r), "CN", MBSTRING_ASC,
					(const unsigned char *)cn, -1, -1, 0) ||
	    !X509_REQ_set_pubkey(r, pk) || !X509_REQ_sign(r, pk, EVP_sha256()) ||
	    !PEM_write_bio_X509_REQ(b, r))
		goto out;
	*out = bio_take(b);
	err = *out ? 0 : -ENOMEM;
out:
	BIO_free(b);
	X509_REQ_free(r);
	EVP_PKEY_free(pk);
	return err;
}

/* The CN of @nm into @out; -EINVAL if there is none or it does not fit. */
static int name_cn(X509_NAME *nm, char *out, size_t cap)
{
	int len = X509_NAME_get_text_by_NID(nm, NID_commonName, NULL, 0);

	if (len <= 0 || (size_t)len >= cap)
		return -EINVAL;
	X509_NAME_get_text_by_NID(nm, NID_commonName, out, (int)cap);
	return strlen(out) == (size_t)len ? 0 : -EINVAL; /* no NUL inside */
}

/* A leaf certificate for @cn and @pub, signed by the CA in @ca_dir. */
static int leaf_sign(const char *ca_dir, EVP_PKEY *pub, const char *cn, int days, X509 **out)
{
	char path[PATH_MAX], san[300];
	EVP_PKEY *cak;
	X509 *ca, *x = X509_new();
	int err = -ENOMEM;

	snprintf(path, sizeof(path), "%s/ca.key", ca_dir);
	cak = key_load(path);
	snprintf(path, sizeof(path), "%s/ca.crt", ca_dir);
	ca = cert_load(path);
	if (!cak || !ca) {
		err = -ENOENT;
		goto out;
	}
	if (!x || strlen(cn) > 255)
		goto out;
	err = cert_base(x, cn, days);
	if (!err && (!X509_set_issuer_name(x, X509_get_subject_name(ca)) ||
		     !X509_set_pubkey(x, pub)))
		err = -ENOMEM;
	if (!err)
		err = add_ext(x, ca, NID_basic_constraints, "critical,CA:FALSE");
	if (!err)
		err = add_ext(x, ca, NID_key_usage, "critical,digitalSignature");
	if (!err)
		err = add_ext(x, ca, NID_ext_key_usage, "serverAuth,clientAuth");
	/* mbedTLS checks a server's name against the SAN's dNSName: the node's name is one. */
	snprintf(san, sizeof(san), "DNS:%s", cn);
	if (!err)
		err = add_ext(x, ca, NID_subject_alt_name, san);
	if (!err)
		err = add_ext(x, ca, NID_authority_key_identifier, "keyid:always");
	if (!err && !X509_sign(x, cak, EVP_sha256()))
		err = -EINVAL;
	if (!err) {
		*out = x;
		x = NULL;
	}
out:
	X509_free(x);
	X509_free(ca);
	EVP_PKEY_free(cak);
	return err;
}

int trib_x509_sign_csr(const char *ca_dir, const char *csr_pem, const char *cn, int days,
		       char serial[TRIB_X509_SERIAL_MAX], char **cert_pem)
{
	BIO *b = BIO_new_mem_buf(csr_pem, -1);
	X509_REQ *r = b ? PEM_read_bio_X509_REQ(b, NULL, NULL, NULL) : NULL;
	EVP_PKEY *pub = r ? X509_REQ_get0_pubkey(r) : NULL;
	char got[256];
	X509 *x = NULL;
	BIO *o = NULL;
	int err = -EINVAL;

	BIO_free(b);
	/* The CSR proves that its sender holds the key; its name must be the one asked for. */
	if (!pub || X509_REQ_verify(r, pub) != 1 ||
	    name_cn(X509_REQ_get_subject_name(r), got, sizeof(got)) || strcmp(got, cn))
		goto out;
	err = leaf_sign(ca_dir, pub, cn, days, &x);
	if (!err)
		err = serial_hex(x, serial);
	if (!err) {
		o = BIO_new(BIO_s_mem());
		err = o && PEM_write_bio_X509(o, x) ? 0 : -ENOMEM;
	}
	if (!err) {
		*cert_pem = bio_take(o);
		err = *cert_pem ? 0 : -ENOMEM;
	}
out:
	BIO_free(o);
	X509_free(x);
	X509_REQ_free(r);
	return err;
}

int trib_x509_issue_local(const char *ca_dir, const char *cn, const char *key_path,
			  const char *cert_path, int days)
{
	EVP_PKEY *pk;
	X509 *x = NULL;
	int err = trib_x509_key_ensure(key_path);

	if (err)
		return err;
	pk = key_load(key_path);
	if (!pk)
		return -EINVAL;
	err = leaf_sign(ca_dir, pk, cn, days, &x);
	if (!err)
		err = pem_write(cert_path, NULL, x, 0644);
	X509_free(x);
	EVP_PKEY_free(pk);
	return err;
}

int trib_x509_fingerprint(const char *pem, char hex[TRIB_X509_FPR_LEN + 1])
{
	X509 *x = cert_parse(pem);
	unsigned char md[32];
	unsigned int n = 0;

	if (!x)
		return -EINVAL;
	if (!X509_digest(x, EVP_sha256(), md, &n) || n != 32) {
		X509_free(x);
		return -ENOMEM;
	}
	X509_free(x);
	for (unsigned i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	return 0;
}

int trib_x509_verify(const char *ca_path, const char *cert_pem, const char *cn,
		     char serial[TRIB_X509_SERIAL_MAX])
{
	X509 *ca = cert_load(ca_path), *x = cert_parse(cert_pem);
	X509_STORE *st = X509_STORE_new();
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	char got[256];
	int err = -ENOMEM;

	if (!ca) {
		err = -ENOENT;
		goto out;
	}
	if (!x) {
		err = -EINVAL;
		goto out;
	}
	if (!st || !ctx || !X509_STORE_add_cert(st, ca) || !X509_STORE_CTX_init(ctx, st, x, NULL))
		goto out;
	err = -EACCES;
	if (X509_verify_cert(ctx) != 1 || name_cn(X509_get_subject_name(x), got, sizeof(got)) ||
	    strcmp(got, cn))
		goto out;
	err = serial ? serial_hex(x, serial) : 0;
out:
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(st);
	X509_free(x);
	X509_free(ca);
	return err;
}

int trib_x509_sign_msg(const char *key_path, const void *msg, size_t len, char **sig)
{
	EVP_PKEY *pk = key_load(key_path);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned char *raw = NULL;
	size_t n = 0;
	int err = -ENOMEM;

	if (!pk) {
		err = -EINVAL;
		goto out;
	}
	if (!md || EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, pk) != 1 ||
	    EVP_DigestSign(md, NULL, &n, msg, len) != 1)
		goto out;
	raw = trib_malloc(n);
	if (!raw || EVP_DigestSign(md, raw, &n, msg, len) != 1)
		goto out;
	*sig = trib_malloc(2 * n + 1);
	if (!*sig)
		goto out;
	for (size_t i = 0; i < n; i++)
		snprintf(*sig + 2 * i, 3, "%02x", raw[i]);
	err = 0;
out:
	trib_free(raw);
	EVP_MD_CTX_free(md);
	EVP_PKEY_free(pk);
	return err;
}

int trib_x509_verify_msg(const char *cert_pem, const void *msg, size_t len, const char *sig)
{
	X509 *x = cert_parse(cert_pem);
	EVP_PKEY *pub = x ? X509_get0_pubkey(x) : NULL;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	size_t n = sig ? strlen(sig) : 0;
	unsigned char raw[256];
	int err = -EBADMSG;

	if (!pub || !md || !n || n % 2 || n / 2 > sizeof(raw))
		goto out;
	for (size_t i = 0; i < n / 2; i++) {
		unsigned v;

		if (sscanf(sig + 2 * i, "%2x", &v) != 1)
			goto out;
		raw[i] = (unsigned char)v;
	}
	if (EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pub) == 1 &&
	    EVP_DigestVerify(md, raw, n / 2, msg, len) == 1)
		err = 0;
out:
	EVP_MD_CTX_free(md);
	X509_free(x);
	return err;
}

int trib_x509_crl(const char *ca_dir, const char *const *serials, size_t n, char **pem)
{
	char path[PATH_MAX];
	EVP_PKEY *cak;
	X509 *ca;
	X509_CRL *crl = X509_CRL_new();
	ASN1_TIME *now = NULL, *next = NULL;
	BIO *o = NULL;
	int err = -ENOMEM;

	snprintf(path, sizeof(path), "%s/ca.key", ca_dir);
	cak = key_load(path);
	snprintf(path, sizeof(path), "%s/ca.crt", ca_dir);
	ca = cert_load(path);
	if (!cak || !ca) {
		err = -ENOENT;
		goto out;
	}
	now = X509_gmtime_adj(NULL, -SKEW_S);
	next = X509_gmtime_adj(NULL, (long)TRIB_X509_CA_DAYS * 86400);
	if (!crl || !now || !next || !X509_CRL_set_version(crl, 1) ||
	    !X509_CRL_set_issuer_name(crl, X509_get_subject_name(ca)) ||
	    !X509_CRL_set1_lastUpdate(crl, now) || !X509_CRL_set1_nextUpdate(crl, next))
		goto out;
	for (size_t i = 0; i < n; i++) {
		X509_REVOKED *r = X509_REVOKED_new();
		BIGNUM *bn = NULL;
		ASN1_INTEGER *sn = NULL;
		int ok;

		ok = r && BN_hex2bn(&bn, serials[i]) > 0 && (sn = BN_to_ASN1_INTEGER(bn, NULL)) &&
		     X509_REVOKED_set_serialNumber(r, sn) &&
		     X509_REVOKED_set_revocationDate(r, now) && X509_CRL_add0_revoked(crl, r);
		ASN1_INTEGER_free(sn);
		BN_free(bn);
		if (!ok) {
			X509_REVOKED_free(r);
			err = -EINVAL;
			goto out;
		}
	}
	err = -EINVAL;
	if (!X509_CRL_sort(crl) || !X509_CRL_sign(crl, cak, EVP_sha256()))
		goto out;
	o = BIO_new(BIO_s_mem());
	err = -ENOMEM;
	if (!o || !PEM_write_bio_X509_CRL(o, crl))
		goto out;
	*pem = bio_take(o);
	err = *pem ? 0 : -ENOMEM;
out:
	BIO_free(o);
	ASN1_TIME_free(now);
	ASN1_TIME_free(next);
	X509_CRL_free(crl);
	X509_free(ca);
	EVP_PKEY_free(cak);
	return err;
}

int trib_x509_crl_check(const char *ca_path, const char *pem, size_t *n)
{
	X509 *ca = cert_load(ca_path);
	BIO *b = BIO_new_mem_buf(pem, -1);
	X509_CRL *crl = b ? PEM_read_bio_X509_CRL(b, NULL, NULL, NULL) : NULL;
	STACK_OF(X509_REVOKED) *rev;
	int err = -EACCES;

	if (!ca) {
		err = -ENOENT;
		goto out;
	}
	if (!crl || X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_subject_name(ca)) ||
	    X509_CRL_verify(crl, X509_get0_pubkey(ca)) != 1)
		goto out;
	rev = X509_CRL_get_REVOKED(crl);
	*n = rev ? (size_t)sk_X509_REVOKED_num(rev) : 0;
	err = 0;
out:
	X509_CRL_free(crl);
	BIO_free(b);
	X509_free(ca);
	return err;
}
