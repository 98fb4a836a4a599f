/* SPDX-License-Identifier: MIT */
/*
 * The cluster's certificates (OpenSSL 3): a CA the controller makes once, EC
 * P-256 keys made where they are used (a node's key never leaves the node),
 * CSRs, certificates signed by the CA, and the proof that a peer holds the key
 * of the certificate it names (nng 1.5.2 gives no access to a TLS peer's
 * certificate, so the name a node claims is bound to its key by a signature).
 *
 * Layout of a CA directory: ca.key (0600), ca.crt (0644).
 * Every function returns 0 or a negative errno; -EINVAL: input that does not
 * parse or verify; -EACCES: a certificate that does not verify against the CA,
 * has another name, or is out of date; -EBADMSG: a signature that does not verify.
 */
#ifndef TRIB_X509_H
#define TRIB_X509_H

#include <stdbool.h>
#include <stddef.h>

/* The common name of the controller's link certificate; no node may take it. */
#define TRIB_X509_CONTROLLER_CN "tributary-controller"
#define TRIB_X509_SERIAL_MAX	41 /* hex of a 20-octet serial and its NUL */
#define TRIB_X509_FPR_LEN	64 /* lowercase hex of a SHA-256 */
#define TRIB_X509_CA_DAYS	3650
#define TRIB_X509_LEAF_DAYS	365

/* Make ca.key (0600) and ca.crt (0644) in @dir unless both exist; *created says whether. */
int trib_x509_ca_ensure(const char *dir, bool *created);
/* Make an EC P-256 key at @path (0600) unless one is there already. */
int trib_x509_key_ensure(const char *path);
/* A PEM CSR for CN=@cn signed by the key at @key_path. *out: trib_malloc'd, NUL-terminated. */
int trib_x509_csr(const char *key_path, const char *cn, char **out);
/*
 * Sign @csr_pem with the CA in @ca_dir: the CSR's own signature must verify
 * and its CN must be @cn. The certificate says CN=@cn, subjectAltName
 * DNS:@cn, clientAuth+serverAuth, @days long. *serial: its serial in hex;
 * *cert_pem: trib_malloc'd PEM.
 */
int trib_x509_sign_csr(const char *ca_dir, const char *csr_pem, const char *cn, int days,
		       char serial[TRIB_X509_SERIAL_MAX], char **cert_pem);
/* A key at @key_path (made if missing) and its certificate for @cn at @cert_path (0644). */
int trib_x509_issue_local(const char *ca_dir, const char *cn, const char *key_path,
			  const char *cert_path, int days);
/* The SHA-256 of the DER of the first certificate in @pem (lowercase hex). */
int trib_x509_fingerprint(const char *pem, char hex[TRIB_X509_FPR_LEN + 1]);
/*
 * @cert_pem chains to the CA certificate in @ca_path, is in date now, and its
 * CN is @cn. *serial (may be NULL): its serial in hex.
 */
int trib_x509_verify(const char *ca_path, const char *cert_pem, const char *cn,
		     char serial[TRIB_X509_SERIAL_MAX]);
/* An ECDSA-SHA256 signature of @msg by the key at @key_path, hex in *sig (trib_malloc'd). */
int trib_x509_sign_msg(const char *key_path, const void *msg, size_t len, char **sig);
/* Whether @sig (hex) is the signature of @msg by the key of @cert_pem: 0 or -EBADMSG. */
int trib_x509_verify_msg(const char *cert_pem, const void *msg, size_t len, const char *sig);
/*
 * A CRL (PEM) signed by the CA in @ca_dir listing @n serials (hex), valid as
 * long as the CA (mbedTLS fails every handshake once a CRL's nextUpdate has
 * passed). *pem: trib_malloc'd.
 */
int trib_x509_crl(const char *ca_dir, const char *const *serials, size_t n, char **pem);
/* Whether @pem is a CRL signed by the CA certificate in @ca_path: 0 and *n (serials), or -EACCES. */
int trib_x509_crl_check(const char *ca_path, const char *pem, size_t *n);
/* A whole small file (a PEM) into *out (trib_malloc'd, NUL-terminated); at most 64 KiB. */
int trib_x509_read_pem(const char *path, char **out);

#endif
