/* SPDX-License-Identifier: MIT */
/* SQLite allocates through trib_alloc (set up before main by a constructor). */
#ifndef CTL_SQLMEM_H
#define CTL_SQLMEM_H

#include <stdbool.h>

/* Whether SQLite took trib_alloc as its allocator (it takes one only before its first use). */
bool ctl_sqlmem_routed(void);

#endif
