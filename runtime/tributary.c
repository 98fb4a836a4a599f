// SPDX-License-Identifier: MIT
/* Entry point of the `tributary` binary. */
#include "rt_cli.h"

int main(int argc, char **argv)
{
	return rt_cli_main(argc, argv);
}
