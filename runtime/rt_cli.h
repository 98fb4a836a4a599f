/* SPDX-License-Identifier: MIT */
/* The `tributary` command line. */
#ifndef RT_CLI_H
#define RT_CLI_H

/* Dispatch `tributary <command> ...`; returns the process exit code. */
int rt_cli_main(int argc, char **argv);

#endif
