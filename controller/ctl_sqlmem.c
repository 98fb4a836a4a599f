// SPDX-License-Identifier: MIT
/* SQLite's allocator: trib_alloc, so that failure injection and leak counts reach the store. */
#include "ctl_sqlmem.h"

#include <sqlite3.h>
#include <stdint.h>
#include <string.h>

#include "trib_alloc.h"
#include "trib_log.h"

/*
 * SQLite allocates through trib_alloc too, so that an injected failure reaches
 * the store (SQLite answers SQLITE_NOMEM, sql_errno() says -ENOMEM) and a
 * test's leak count sees its blocks. SQLite asks the size of a block back
 * (xSize): it is kept in a header in front of the block, 16 bytes so that
 * the block keeps malloc's alignment.
 */
#define SQL_MEM_HDR 16

/* Set once, by the constructor, before main(). */
static bool routed;

static void *sql_mem_put(uint8_t *b, int n)
{
	size_t len = (size_t)n;

	if (!b)
		return NULL;
	memcpy(b, &len, sizeof(len));
	return b + SQL_MEM_HDR;
}

static void *sql_mem_malloc(int n)
{
	return n < 0 ? NULL : sql_mem_put(trib_malloc((size_t)n + SQL_MEM_HDR), n);
}

static void sql_mem_free(void *p)
{
	if (p)
		trib_free((uint8_t *)p - SQL_MEM_HDR);
}

/* SQLite calls it with a block and n > 0 only; on failure the block stays SQLite's. */
static void *sql_mem_realloc(void *p, int n)
{
	if (n < 0)
		return NULL;
	return sql_mem_put(trib_realloc((uint8_t *)p - SQL_MEM_HDR, (size_t)n + SQL_MEM_HDR), n);
}

static int sql_mem_size(void *p)
{
	size_t len;

	memcpy(&len, (uint8_t *)p - SQL_MEM_HDR, sizeof(len));
	return (int)len;
}

static int sql_mem_roundup(int n)
{
	return (n + 7) & ~7;
}

static int sql_mem_init(void *arg)
{
	(void)arg;
	return SQLITE_OK;
}

static void sql_mem_shutdown(void *arg)
{
	(void)arg;
}

static const sqlite3_mem_methods sql_mem = {
    .xMalloc = sql_mem_malloc,
    .xFree = sql_mem_free,
    .xRealloc = sql_mem_realloc,
    .xSize = sql_mem_size,
    .xRoundup = sql_mem_roundup,
    .xInit = sql_mem_init,
    .xShutdown = sql_mem_shutdown,
};

/*
 * A constructor, as for jansson (trib_alloc.c): SQLite takes an allocator
 * only before it initialises, which its first use does, and before any
 * thread exists. ctl_store_open() calls ctl_sqlmem_routed(), so this object is linked
 * into every binary that uses SQLite.
 */
__attribute__((constructor)) static void ctl_sqlmem_route(void)
{
	routed = sqlite3_config(SQLITE_CONFIG_MALLOC, &sql_mem) == SQLITE_OK;
	if (!routed)
		trib_warn("store: SQLite would not take trib_alloc; it allocates by itself");
}

bool ctl_sqlmem_routed(void)
{
	return routed;
}
