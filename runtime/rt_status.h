/* SPDX-License-Identifier: MIT */
/*
 * `tributary status`: jobs, functions and data-plane counters of a running node and,
 * on a node of a cluster, the controller's placement of each round, in the terminal.
 */
#ifndef RT_STATUS_H
#define RT_STATUS_H

/* argv[0] is "status". Returns the process exit code. */
int rt_status_main(int argc, char **argv);

#endif
