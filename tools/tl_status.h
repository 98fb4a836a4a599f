/* SPDX-License-Identifier: MIT */
/*
 * `tributary status`: jobs, functions and data-plane counters of a running node and,
 * on a node of a cluster, the controller's placement of each round, in the terminal.
 */
#ifndef TL_STATUS_H
#define TL_STATUS_H

/* argv[0] is "status". Returns the process exit code. */
int tl_status_main(int argc, char **argv);

#endif
