/* SPDX-License-Identifier: MIT */
/* The wiring of `tributary up` and `tributary node`: node, loop, API and (in a cluster) agent. */
#ifndef RT_UP_H
#define RT_UP_H

#include "rt_node.h"

/* Run `tributary up` (or `node`, with opts->controller) until SIGINT/SIGTERM. Returns an exit code.
 */
int rt_up_run(const struct rt_node_opts *opts);

#endif
