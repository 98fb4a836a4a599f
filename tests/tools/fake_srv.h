/* SPDX-License-Identifier: MIT */
/* Tests: a fake HTTP server, one connection at a time, canned answers in order. */
#ifndef TL_TEST_FAKE_SRV_H
#define TL_TEST_FAKE_SRV_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "tl_client.h"

#define FAKE_MAX 8

struct fake_srv {
	int lfd;
	uint16_t port;
	pthread_t tid;
	const char *const *script; /* raw responses, one per request */
	unsigned nscript;
	unsigned accepts;
	unsigned requests;
	char heads[FAKE_MAX][1024];
	size_t body_len[FAKE_MAX];
	unsigned char *body[FAKE_MAX]; /* first 1 MB of each body */
	char buf[1 << 16];	       /* bytes read and not yet taken */
};

/* Listen on a free loopback port and answer @n requests with @script's raw responses. */
void fake_start(struct fake_srv *s, const char *const *script, unsigned n);
/* Waits for the script to finish; the recorded bodies stay until fake_free(). */
void fake_stop(struct fake_srv *s);
void fake_free(struct fake_srv *s);
/* A client of @s (owned by the caller: tl_client_close). */
struct tl_client *fake_client(struct fake_srv *s);

#define OK_JSON(body)                                                                              \
	"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " #body "\r\n\r\n"

#endif
