// SPDX-License-Identifier: MIT
/*
 * The plain tributary-fn's stand-in for fn_secagg_unmask.c. A secure job's unmasking shard runs
 * on tributary-fn-sa (the runtime spawns it for that config alone: runtime/node/rt_fnproc.c), so
 * this binary links neither libsodium nor libcrypto and keeps its cold start. The row has no
 * shard hook: fn_pipeline_compose() refuses a shard config that would run it (the function exits
 * naming tributary-fn-sa, the round's recovery cap ends the retries), never a slower path.
 */
#include "fn_algo.h"

const struct fn_algo_ops fn_secagg_unmask_ops = {
	.name = "secagg_unmask",
	.state_size = 0,
};
