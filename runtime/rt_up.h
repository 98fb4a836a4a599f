/* SPDX-License-Identifier: MIT */
/* The wiring of `tributary up` and `tributary node`: node, loop, API and (in a cluster) agent. */
#ifndef RT_UP_H
#define RT_UP_H

#include "rt_node.h"

/* HTTPS at the gateway (README, "HTTPS"): --tls-cert and --tls-key, or --tls self-signed. */
struct rt_up_tls {
	const char *cert_file; /* PEM certificate (chain); NULL: none */
	const char *key_file;  /* its PEM private key */
	bool self_signed;      /* made once in the data dir (tls-cert.pem, tls-key.pem) */
};

/*
 * Run `tributary up` (or `node`, with opts->controller) until SIGINT/SIGTERM.
 * @tls may be NULL (plain HTTP). Returns an exit code: 2 when the TLS
 * certificate or key cannot be used (said, naming the file, before serving).
 */
int rt_up_run(const struct rt_node_opts *opts, const struct rt_up_tls *tls);

#endif
