// SPDX-License-Identifier: MIT
/* The backoff of a failed durable write: when the next attempt is due, and what is pending. */
#include "trib_retry.h"

#include <string.h>

uint64_t trib_retry_delay_ns(uint32_t k)
{
	uint64_t d = TRIB_RETRY_BASE_NS;

	/* Double until the cap: at most log2(cap / base) + 1 steps, so no shift overflows. */
	for (uint32_t i = 1; i < k && d < TRIB_RETRY_CAP_NS; i++)
		d *= 2;
	return d < TRIB_RETRY_CAP_NS ? d : TRIB_RETRY_CAP_NS;
}

bool trib_retry_fail(struct trib_retry *r, int err, uint32_t what, uint64_t now_ns,
		     int64_t now_unix)
{
	bool first = r->err == 0;

	if (first) {
		r->retries = 0;
		r->since_ns = now_ns;
		r->since_unix = now_unix;
	} else {
		r->retries++;
	}
	r->err = err;
	r->what = what;
	/* retries + 1 attempts have failed in a row: wait delay(retries + 1). */
	r->next_ns = now_ns + trib_retry_delay_ns(r->retries + 1);
	return first;
}

bool trib_retry_due(const struct trib_retry *r, uint64_t now_ns)
{
	return r->err == 0 || now_ns >= r->next_ns;
}

uint32_t trib_retry_ok(struct trib_retry *r)
{
	uint32_t n = r->err ? r->retries + 1 : 0;

	memset(r, 0, sizeof(*r));
	return n;
}

const char *trib_errno_name(int err)
{
	const char *s = strerrorname_np(err < 0 ? -err : err);

	return s ? s : "EUNKNOWN";
}
