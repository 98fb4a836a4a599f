// SPDX-License-Identifier: MIT
/* The spawn floor's child: a process that does nothing (linked statically in release builds). */
int main(void)
{
	return 0;
}
