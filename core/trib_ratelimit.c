// SPDX-License-Identifier: MIT
/* One log line a second per key: see trib_ratelimit.h. */
#include "trib_ratelimit.h"

bool trib_ratelimit_allow(struct trib_ratelimit *rl, uint64_t now_ns, uint64_t *suppressed)
{
	if (rl->said && (now_ns < rl->last_ns || now_ns - rl->last_ns < TRIB_RATELIMIT_PERIOD_NS)) {
		/* Saturate rather than wrap: a count that went to 0 would hide a flood. */
		if (rl->suppressed < UINT64_MAX)
			rl->suppressed++;
		return false;
	}
	if (suppressed)
		*suppressed = rl->suppressed;
	rl->suppressed = 0;
	rl->last_ns = now_ns;
	rl->said = true;
	return true;
}
