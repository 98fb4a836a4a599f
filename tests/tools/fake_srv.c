// SPDX-License-Identifier: MIT
/* Tests: a fake HTTP server, one connection at a time, canned answers in order. */
#include "fake_srv.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "trib_alloc.h"

static ssize_t read_some(int fd, void *buf, size_t n)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};

	if (poll(&p, 1, 10000) <= 0)
		return -1;
	return read(fd, buf, n);
}

/* Serve requests on @fd; returns false once the script is done. */
static bool fake_conn(struct fake_srv *s, int fd)
{
	char *buf = s->buf;
	size_t have = 0;

	while (s->requests < s->nscript) {
		unsigned r = s->requests;
		char *end, *cl;
		size_t hlen, blen = 0, got, keep;
		ssize_t n;

		while (!(end = memmem(buf, have, "\r\n\r\n", 4))) {
			n = read_some(fd, buf + have, sizeof(s->buf) - have - 1);
			if (n <= 0)
				return true; /* the client closed: wait for the next connection */
			have += (size_t)n;
		}
		hlen = (size_t)(end - buf) + 4;
		snprintf(s->heads[r], sizeof(s->heads[r]), "%.*s", (int)hlen, buf);
		cl = strcasestr(s->heads[r], "content-length:");
		if (cl)
			blen = strtoull(cl + 15, NULL, 10);
		s->body_len[r] = blen;
		s->body[r] = trib_malloc(blen < (1 << 20) ? blen + 1 : (1 << 20));
		got = have - hlen < blen ? have - hlen : blen;
		memcpy(s->body[r], buf + hlen, got < (1 << 20) ? got : (1 << 20));
		keep = have - hlen - got;
		memmove(buf, buf + hlen + got, keep);
		have = keep;
		while (got < blen) {
			size_t want = blen - got < sizeof(s->buf) ? blen - got : sizeof(s->buf);

			n = read_some(fd, buf, want);
			if (n <= 0)
				return false;
			if (got < (1 << 20))
				memcpy(s->body[r] + got, buf,
				       got + (size_t)n <= (1 << 20) ? (size_t)n : (1 << 20) - got);
			got += (size_t)n;
		}
		have = 0;
		s->requests++;
		if (write(fd, s->script[r], strlen(s->script[r])) < 0)
			return false;
		if (strcasestr(s->script[r], "Connection: close"))
			return true;
	}
	return false;
}

static void *fake_run(void *arg)
{
	struct fake_srv *s = arg;
	bool more = true;
	int fd;

	while (more) {
		struct pollfd p = {.fd = s->lfd, .events = POLLIN};

		if (poll(&p, 1, 10000) <= 0)
			break;
		fd = accept(s->lfd, NULL, NULL);
		if (fd < 0)
			break;
		s->accepts++;
		more = fake_conn(s, fd);
		close(fd);
	}
	return NULL;
}

void fake_start(struct fake_srv *s, const char *const *script, unsigned n)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof(a);

	memset(s, 0, sizeof(*s));
	cr_assert(n <= FAKE_MAX);
	s->script = script;
	s->nscript = n;
	s->lfd = socket(AF_INET, SOCK_STREAM, 0);
	cr_assert(s->lfd >= 0);
	cr_assert_eq(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(listen(s->lfd, 8), 0);
	cr_assert_eq(getsockname(s->lfd, (struct sockaddr *)&a, &alen), 0);
	s->port = ntohs(a.sin_port);
	cr_assert_eq(pthread_create(&s->tid, NULL, fake_run, s), 0);
}

void fake_stop(struct fake_srv *s)
{
	pthread_join(s->tid, NULL);
	close(s->lfd);
}

void fake_free(struct fake_srv *s)
{
	for (unsigned i = 0; i < FAKE_MAX; i++)
		trib_free(s->body[i]);
}

struct tl_client *fake_client(struct fake_srv *s)
{
	struct tl_client *c = NULL;
	char url[64];

	snprintf(url, sizeof(url), "http://127.0.0.1:%u", s->port);
	cr_assert_eq(tl_client_open(url, NULL, &c), 0);
	tl_client_set_timeout(c, 10000);
	return c;
}
