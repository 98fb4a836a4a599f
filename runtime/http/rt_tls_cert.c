// SPDX-License-Identifier: MIT
/* `--tls self-signed`: an EC P-256 key and a self-signed certificate, kept in the data dir. */
#include "rt_tls.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "trib_log.h"
#include "trib_store.h"

#define CERT_DAYS 365
/* notBefore an hour back: a client whose clock is a little behind still accepts it. */
#define CERT_SKEW_S 3600

/* A host name that may go into a DNS subjectAltName as it is (and into the config string). */
static bool dns_name_ok(const char *s)
{
	if (!s[0] || strlen(s) > 253)
		return false;
	for (const char *p = s; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '-' || *p == '.'))
			return false;
	return true;
}

/* The subjectAltName value: localhost, 127.0.0.1, the host name, the listen address. */
static void san_value(const char *listen_host, char *out, size_t cap)
{
	char host[256] = "";
	size_t n;

	n = (size_t)snprintf(out, cap, "DNS:localhost,IP:127.0.0.1");
	if (!gethostname(host, sizeof(host) - 1) && dns_name_ok(host) && strcmp(host, "localhost"))
		n += (size_t)snprintf(out + n, cap - n, ",DNS:%s", host);
	/* --listen is an IPv4 address (rt_loop.c checks); 0.0.0.0 names no host. */
	if (listen_host && strcmp(listen_host, "0.0.0.0") && strcmp(listen_host, "127.0.0.1") &&
	    strspn(listen_host, "0123456789.") == strlen(listen_host) && n < cap)
		snprintf(out + n, cap - n, ",IP:%s", listen_host);
}

static int add_ext(X509 *x, X509V3_CTX *v3, int nid, const char *value)
{
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, v3, nid, value);
	int ok;

	if (!ext)
		return -EINVAL;
	ok = X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	return ok ? 0 : -ENOMEM;
}

/* Serial, validity, names and extensions of a certificate for @pk, signed by @pk. */
static int cert_fill(X509 *x, EVP_PKEY *pk, const char *listen_host)
{
	char san[512];
	X509V3_CTX v3;
	X509_NAME *nm = X509_get_subject_name(x);
	BIGNUM *bn = BN_new();
	int err = -ENOMEM;

	/* A random positive 127-bit serial (RFC 5280: at most 20 octets, unique per issuer). */
	if (!bn || !BN_rand(bn, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) ||
	    !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)))
		goto out;
	if (!X509_set_version(x, X509_VERSION_3) ||
	    !X509_gmtime_adj(X509_getm_notBefore(x), -CERT_SKEW_S) ||
	    !X509_gmtime_adj(X509_getm_notAfter(x), (long)CERT_DAYS * 86400) ||
	    !X509_set_pubkey(x, pk) ||
	    !X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC,
					(const unsigned char *)"tributary self-signed", -1, -1, 0) ||
	    !X509_set_issuer_name(x, nm))
		goto out;
	san_value(listen_host, san, sizeof(san));
	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
	/*
	 * An end-entity certificate (CA:FALSE, serverAuth) that clients trust by
	 * itself (curl --cacert). No keyUsage: OpenSSL then still sees it as
	 * self-issued when it is its own trust anchor.
	 */
	err = add_ext(x, &v3, NID_basic_constraints, "critical,CA:FALSE");
	if (!err)
		err = add_ext(x, &v3, NID_ext_key_usage, "serverAuth");
	if (!err)
		err = add_ext(x, &v3, NID_subject_key_identifier, "hash");
	if (!err)
		err = add_ext(x, &v3, NID_authority_key_identifier, "keyid:always");
	if (!err)
		err = add_ext(x, &v3, NID_subject_alt_name, san);
	if (!err && !X509_sign(x, pk, EVP_sha256()))
		err = -EINVAL;
out:
	BN_free(bn);
	return err;
}

/* PEM of @pk (private) or @x into @path, atomically, with @mode. */
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
	/* The key's bytes do not stay in freed memory. */
	OPENSSL_cleanse(data, (size_t)len);
	BIO_free(b);
	return err;
}

/* Make the key and the certificate; the key is written first, the certificate last. */
static int make_pair(const char *cert, const char *key, const char *listen_host, char *why,
		     size_t whycap)
{
	EVP_PKEY *pk = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	int err = -ENOMEM;

	if (!pk || !x) {
		snprintf(why, whycap, "TLS: making an EC P-256 key failed");
		goto out;
	}
	err = cert_fill(x, pk, listen_host);
	if (err) {
		snprintf(why, whycap, "TLS: making a self-signed certificate failed");
		goto out;
	}
	err = pem_write(key, pk, NULL, 0600);
	if (err) {
		snprintf(why, whycap, "TLS key %s: %s", key, strerror(-err));
		goto out;
	}
	err = pem_write(cert, NULL, x, 0644);
	if (err)
		snprintf(why, whycap, "TLS certificate %s: %s", cert, strerror(-err));
out:
	ERR_clear_error();
	X509_free(x);
	EVP_PKEY_free(pk);
	return err;
}

int rt_tls_self_signed(const char *dir, const char *listen_host, char *cert, char *key,
		       size_t cap, bool *created, char *why, size_t whycap)
{
	struct stat st;
	bool have_cert, have_key;
	int err;

	*created = false;
	if ((size_t)snprintf(cert, cap, "%s/tls-cert.pem", dir) >= cap ||
	    (size_t)snprintf(key, cap, "%s/tls-key.pem", dir) >= cap) {
		snprintf(why, whycap, "TLS: data dir path too long: %s", dir);
		return -ENAMETOOLONG;
	}
	have_cert = !lstat(cert, &st);
	have_key = !lstat(key, &st);
	if (have_cert && have_key)
		return 0;
	if (have_cert) {
		/* Clients may have pinned this certificate: a new key would break them, loudly. */
		snprintf(why, whycap, "TLS key %s is missing but its certificate %s exists "
			 "(restore the key, or remove both to make a new pair)", key, cert);
		return -ENOENT;
	}
	err = trib_mkdir_p(dir, 0700);
	if (err) {
		snprintf(why, whycap, "TLS: data dir %s: %s", dir, strerror(-err));
		return err;
	}
	/* A key without a certificate: a first start that stopped between the two writes. */
	err = make_pair(cert, key, listen_host, why, whycap);
	if (!err)
		*created = true;
	return err;
}
