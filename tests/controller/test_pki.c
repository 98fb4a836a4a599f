// SPDX-License-Identifier: MIT
/*
 * Join tokens and node certificates in the store (one use, expiry, revocation,
 * the 4 -> 5 migration of an existing file), the offline commands, and the
 * join's answer: a node is given the admin token's hash, never the token.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>

#include "ctl_daemon.h"
#include "ctl_store.h"
#include "trib_alloc.h"
#include "trib_token.h"

static char tdir[64];
static char dbpath[300];
static struct ctl_store *st;

static void setup(void)
{
	snprintf(tdir, sizeof(tdir), "/tmp/trib-pki-XXXXXX");
	cr_assert_not_null(mkdtemp(tdir));
	snprintf(dbpath, sizeof(dbpath), "%s/controller.db", tdir);
	cr_assert_eq(ctl_store_open(dbpath, &st), 0);
}

static void teardown(void)
{
	char cmd[128];

	ctl_store_close(st);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tdir);
	cr_assert_eq(system(cmd), 0);
}

TestSuite(ctl_pki, .init = setup, .fini = teardown, .timeout = 30);

static const char H1[] = "1111111111111111111111111111111111111111111111111111111111111111";
static const char H2[] = "2222222222222222222222222222222222222222222222222222222222222222";

Test(ctl_pki, a_join_token_is_used_once_and_expires)
{
	int64_t now = (int64_t)time(NULL);

	cr_assert_eq(ctl_store_jtoken_put(st, "a1", H1, now + 60), 0);
	cr_assert_eq(ctl_store_jtoken_put(st, "a2", H1, now - 1), 0);
	cr_assert_eq(ctl_store_jtoken_use(st, "a1", H2, "n0", now), -ENOENT, "wrong secret");
	cr_assert_eq(ctl_store_jtoken_use(st, "zz", H1, "n0", now), -ENOENT, "no such token");
	cr_assert_eq(ctl_store_jtoken_use(st, "a2", H1, "n0", now), -ETIME, "expired");
	cr_assert_eq(ctl_store_jtoken_use(st, "a1", H1, "n0", now), 0);
	cr_assert_eq(ctl_store_jtoken_use(st, "a1", H1, "n1", now), -EALREADY, "used");
}

Test(ctl_pki, a_revoked_certificate_is_not_ok)
{
	unsigned n = 9;
	bool ok = false;

	cr_assert_eq(ctl_store_cert_put(st, "ab01", "n0", 1), 0);
	cr_assert_eq(ctl_store_cert_put(st, "ab02", "n1", 1), 0);
	cr_assert_eq(ctl_store_cert_ok(st, "ab01", &ok), 0);
	cr_assert(ok);
	cr_assert_eq(ctl_store_cert_ok(st, "ffff", &ok), 0);
	cr_assert_not(ok, "a serial this store never issued is not ok");
	cr_assert_eq(ctl_store_cert_count(st, "n0", &n), 0);
	cr_assert_eq(n, 1);
	cr_assert_eq(ctl_store_cert_revoke(st, "n0", 5, &n), 0);
	cr_assert_eq(n, 1);
	cr_assert_eq(ctl_store_cert_count(st, "n0", &n), 0);
	cr_assert_eq(n, 0, "revoked: none in force");
	cr_assert_eq(ctl_store_cert_ok(st, "ab01", &ok), 0);
	cr_assert_not(ok);
	cr_assert_eq(ctl_store_cert_ok(st, "ab02", &ok), 0);
	cr_assert(ok, "other nodes keep theirs");
	cr_assert_eq(ctl_store_cert_revoke(st, "n0", 6, &n), 0);
	cr_assert_eq(n, 0);
}

Test(ctl_pki, a_schema_6_file_is_migrated)
{
	sqlite3 *raw;
	int64_t now = (int64_t)time(NULL);
	struct ctl_job j = {.clients_per_round = 2};

	snprintf(j.name, sizeof(j.name), "keep");
	snprintf(j.algorithm, sizeof(j.algorithm), "fedavg");
	j.schema_json = trib_strdup("{}");
	cr_assert_eq(ctl_store_job_create(st, &j), 0);
	ctl_job_clear(&j);
	ctl_store_close(st);
	st = NULL;
	/* As a controller of schema 6 left it: no join tokens, no node certificates, no FedAU. */
	cr_assert_eq(sqlite3_open(dbpath, &raw), SQLITE_OK);
	cr_assert_eq(sqlite3_exec(raw, "DROP TABLE join_tokens; DROP TABLE node_certs; DROP TABLE fedau_clients; DROP TABLE opt_state; DROP TABLE tasks; "
				       "PRAGMA user_version = 6",
				  NULL, NULL, NULL),
		     SQLITE_OK);
	sqlite3_close(raw);
	cr_assert_eq(ctl_store_open(dbpath, &st), 0);
	cr_assert_eq(ctl_store_job_get(st, "keep", &j), 0, "its jobs stay");
	ctl_job_clear(&j);
	cr_assert_eq(ctl_store_jtoken_put(st, "b1", H1, now + 60), 0);
	cr_assert_eq(ctl_store_jtoken_use(st, "b1", H1, "n0", now), 0);
}

Test(ctl_pki, the_offline_commands)
{
	cr_assert_eq(ctl_join_token_cmd(tdir, 60), 0);
	cr_assert_eq(ctl_revoke_cmd(tdir, "nobody"), 1, "no certificate: an error");
	cr_assert_eq(ctl_revoke_cmd(tdir, "no/such"), 2);
}

/* The join's answer, as the controller sends it: the hash of the admin token, not the token. */
Test(ctl_pki, a_node_is_never_sent_the_admin_token)
{
	static struct ctl c;
	struct ctl_cluster_opts o = {.heartbeat_ms = 200};
	char want[65], *text;
	json_t *rep;

	memset(&c, 0, sizeof(c));
	c.o = &o;
	cr_assert_eq(trib_token_new(c.admin_token, sizeof(c.admin_token)), 0);
	trib_token_sha256(c.admin_token, c.admin_sha256);
	c.nnodes = 1;
	snprintf(c.nodes[0].name, sizeof(c.nodes[0].name), "n0");
	snprintf(c.nodes[0].session, sizeof(c.nodes[0].session), "sess");
	rep = ctl__join_reply(&c, 0, json_array(), NULL);
	text = json_dumps(rep, JSON_COMPACT);
	cr_assert_null(strstr(text, c.admin_token), "%s", text);
	cr_assert_null(json_object_get(rep, "admin_token"));
	trib_token_sha256(c.admin_token, want);
	cr_assert_str_eq(json_string_value(json_object_get(rep, "admin_sha256")), want);
	cr_assert(trib_token_sha256_eq(c.admin_token, want));
	cr_assert_not(trib_token_sha256_eq("not-it", want));
	trib_free(text);
	json_decref(rep);
}
