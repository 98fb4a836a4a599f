// SPDX-License-Identifier: MIT
/*
 * Tests for the controller's model files (ctl_models.c): the same bytes as a
 * node's round-N.safetensors, the conversion of an older controller's
 * model-vN.f32 at start, and the refusal when a file cannot be converted.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ctl_cluster.h"
#include "ctl_models.h"
#include "ctl_store.h"
#include "trib_alloc.h"
#include "trib_dtype.h"
#include "trib_safetensors.h"
#include "trib_store.h"

/* Two jobs: "m" with "params" (one tensor), "t" with two tensors, as clients define them. */
#define BODY_M "{\"name\":\"m\",\"clients_per_round\":2,\"params\":5}"
#define BODY_T                                                                                     \
	"{\"name\":\"t\",\"clients_per_round\":2,\"tensors\":[{\"name\":\"w\",\"shape\":[2,3]},"   \
	"{\"name\":\"b\",\"shape\":[3]}]}"

/* Each test gets its own data directory, removed afterwards. */
static char tdir[64];

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void setup(void)
{
	strcpy(tdir, "/tmp/trib-ctl-models-XXXXXX");
	cr_assert_not_null(mkdtemp(tdir));
}

static void teardown(void)
{
	nftw(tdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(ctl_models, .init = setup, .fini = teardown);

static const char *tpath(char *buf, const char *rel)
{
	snprintf(buf, PATH_MAX, "%s/%s", tdir, rel);
	return buf;
}

/* Record job @name with @body in DATA_DIR/controller.db, its open round @round. */
static void add_job(const char *name, const char *body, uint64_t n_elem, uint32_t round)
{
	char path[PATH_MAX], schema[64];
	struct ctl_store *st;
	struct ctl_job j;

	cr_assert_eq(ctl_store_open(tpath(path, "controller.db"), &st), 0);
	memset(&j, 0, sizeof(j));
	snprintf(j.name, sizeof(j.name), "%s", name);
	strcpy(j.algorithm, "fedavg");
	j.clients_per_round = 2;
	snprintf(schema, sizeof(schema), "{\"n_elem\":%llu}", (unsigned long long)n_elem);
	j.schema_json = schema;
	j.params_json = (char *)body;
	cr_assert_eq(ctl_store_job_create(st, &j), 0);
	if (round)
		cr_assert_eq(ctl_store_round_advance(st, j.id, 0, round), 0);
	ctl_store_close(st);
}

/* Write @len bytes at @p to DATA_DIR/@rel, making DATA_DIR/jobs/{job} first. */
static void put(const char *rel, const void *p, size_t len)
{
	char path[PATH_MAX];
	FILE *f;

	tpath(path, rel);
	*strrchr(path, '/') = '\0';
	cr_assert_eq(trib_mkdir_p(path, 0700), 0);
	f = fopen(tpath(path, rel), "wb");
	cr_assert_not_null(f);
	cr_assert_eq(fwrite(p, 1, len, f), len);
	cr_assert_eq(fclose(f), 0);
}

/* The whole of DATA_DIR/@rel into *len bytes (trib_free), or NULL if it is not there. */
static char *slurp(const char *rel, size_t *len)
{
	char path[PATH_MAX];
	struct stat sb;
	char *buf;
	FILE *f = fopen(tpath(path, rel), "rb");

	if (!f)
		return NULL;
	cr_assert_eq(fstat(fileno(f), &sb), 0);
	buf = trib_malloc((size_t)sb.st_size + 1);
	cr_assert_not_null(buf);
	*len = fread(buf, 1, (size_t)sb.st_size, f);
	cr_assert_eq(*len, (size_t)sb.st_size);
	fclose(f);
	return buf;
}

/* The file a node writes: its header from the job's tensors as it parses them, then the floats. */
static char *node_file(const struct trib_tensor *schema, size_t n, const float *data,
		       size_t n_elem, size_t *len)
{
	char *hdr, *out;
	size_t hlen;

	cr_assert_eq(trib_st_write_header(schema, n, NULL, &hdr, &hlen), 0);
	out = trib_malloc(hlen + n_elem * 4);
	cr_assert_not_null(out);
	memcpy(out, hdr, hlen);
	memcpy(out + hlen, data, n_elem * 4);
	trib_free(hdr);
	*len = hlen + n_elem * 4;
	return out;
}

/* The header for @json padded as safetensors pads it: spaces to a multiple of 8. */
static size_t literal_header(const char *json, char *out, size_t cap)
{
	size_t jlen = strlen(json), padded = (jlen + 7) / 8 * 8;
	uint64_t le = padded;

	cr_assert_leq(8 + padded, cap);
	for (int i = 0; i < 8; i++)
		out[i] = (char)(le >> (8 * i));
	memcpy(out + 8, json, jlen);
	memset(out + 8 + jlen, ' ', padded - jlen);
	return 8 + padded;
}

/* Assert DATA_DIR/@rel holds exactly @len bytes at @want, with mode 0600. */
static void assert_file(const char *rel, const char *want, size_t len)
{
	char path[PATH_MAX];
	struct stat sb;
	size_t got_len = 0;
	char *got = slurp(rel, &got_len);

	cr_assert_not_null(got, "%s is missing", rel);
	cr_assert_eq(got_len, len, "%s: %zu bytes, want %zu", rel, got_len, len);
	cr_assert_eq(memcmp(got, want, len), 0, "%s: other bytes", rel);
	trib_free(got);
	cr_assert_eq(stat(tpath(path, rel), &sb), 0);
	cr_assert_eq(sb.st_mode & 07777, 0600);
}

/* Run @fn with fd 2 going to DATA_DIR/log; returns its result, the log in *log (trib_free). */
static int with_log(int (*fn)(void *), void *arg, char **log)
{
	char path[PATH_MAX];
	size_t len = 0;
	int saved = dup(2), fd, ret;

	fd = open(tpath(path, "log"), O_WRONLY | O_CREAT | O_TRUNC, 0600);
	cr_assert_geq(fd, 0);
	cr_assert_geq(saved, 0);
	dup2(fd, 2);
	close(fd);
	ret = fn(arg);
	dup2(saved, 2);
	close(saved);
	*log = slurp("log", &len);
	cr_assert_not_null(*log);
	(*log)[len] = '\0';
	return ret;
}

static int migrate(void *arg)
{
	char path[PATH_MAX];
	struct ctl_store *st;
	int err;

	(void)arg;
	cr_assert_eq(ctl_store_open(tpath(path, "controller.db"), &st), 0);
	err = ctl_models_migrate(tdir, st);
	ctl_store_close(st);
	return err;
}

static const float m_v1[5] = {1, 2, 3, 4, 5}, m_v2[5] = {-1, 0.5f, 1e-30f, 3e30f, 0};
static const float t_v1[9] = {1, 1, 2, 3, 5, 8, 13, 21, 34};

Test(ctl_models, old_files_become_a_nodes_safetensors)
{
	struct trib_tensor w = {.name = "weights", .dtype = TRIB_DTYPE_F32, .ndim = 1,
				.shape = {5}, .n_elem = 5};
	struct trib_tensor wb[2] = {
		{.name = "w", .dtype = TRIB_DTYPE_F32, .ndim = 2, .shape = {2, 3}, .n_elem = 6},
		{.name = "b", .dtype = TRIB_DTYPE_F32, .ndim = 1, .shape = {3}, .n_elem = 3},
	};
	char hdr[256], want[512], path[PATH_MAX], *log, *node;
	size_t hlen, len;

	add_job("m", BODY_M, 5, 2);
	add_job("t", BODY_T, 9, 1);
	put("jobs/m/model-v1.f32", m_v1, sizeof(m_v1));
	put("jobs/m/model-v2.f32", m_v2, sizeof(m_v2));
	put("jobs/t/model-v1.f32", t_v1, sizeof(t_v1));
	cr_assert_eq(with_log(migrate, NULL, &log), 0, "%s", log);
	cr_assert(strstr(log, "job m: 2 model files"), "one line per job: %s", log);
	cr_assert(strstr(log, "job t: 1 model files"), "one line per job: %s", log);
	trib_free(log);

	/* The bytes a node writes, spelled out (safetensors, one F32 tensor "weights")... */
	hlen = literal_header("{\"weights\":{\"dtype\":\"F32\",\"shape\":[5],"
			      "\"data_offsets\":[0,20]}}",
			      hdr, sizeof(hdr));
	memcpy(want, hdr, hlen);
	memcpy(want + hlen, m_v2, sizeof(m_v2));
	assert_file("jobs/m/round-2.safetensors", want, hlen + sizeof(m_v2));
	/* ...and as the node builds them, from the schema it parses out of the same body. */
	node = node_file(&w, 1, m_v1, 5, &len);
	assert_file("jobs/m/round-1.safetensors", node, len);
	trib_free(node);
	node = node_file(wb, 2, t_v1, 9, &len);
	assert_file("jobs/t/round-1.safetensors", node, len);
	trib_free(node);
	hlen = literal_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
			      "\"b\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[24,36]}}",
			      hdr, sizeof(hdr));
	memcpy(want, hdr, hlen);
	memcpy(want + hlen, t_v1, sizeof(t_v1));
	assert_file("jobs/t/round-1.safetensors", want, hlen + sizeof(t_v1));

	cr_assert_eq(access(tpath(path, "jobs/m/model-v1.f32"), F_OK), -1, "old file removed");
	cr_assert_eq(access(tpath(path, "jobs/m/model-v2.f32"), F_OK), -1, "old file removed");
	cr_assert_eq(access(tpath(path, "jobs/t/model-v1.f32"), F_OK), -1, "old file removed");
	/* Again: nothing to do, nothing said, nothing changed. */
	cr_assert_eq(with_log(migrate, NULL, &log), 0);
	cr_assert_eq(strstr(log, "converted"), NULL, "%s", log);
	trib_free(log);
	assert_file("jobs/t/round-1.safetensors", want, hlen + sizeof(t_v1));
}

Test(ctl_models, a_crash_between_write_and_unlink_converts_again)
{
	struct ctl_model_fmt f;
	char path[PATH_MAX], *log, *before, *after;
	size_t blen, alen;

	add_job("m", BODY_M, 5, 1);
	cr_assert_eq(ctl_model_fmt_init(&f, BODY_M, strlen(BODY_M), NULL), 0);
	cr_assert_eq(ctl_model_write(tdir, "m", &f, m_v1, 1), 0);
	ctl_model_fmt_fini(&f);
	before = slurp("jobs/m/round-1.safetensors", &blen);
	put("jobs/m/model-v1.f32", m_v1, sizeof(m_v1));
	cr_assert_eq(with_log(migrate, NULL, &log), 0, "%s", log);
	trib_free(log);
	after = slurp("jobs/m/round-1.safetensors", &alen);
	cr_assert_eq(alen, blen);
	cr_assert_eq(memcmp(before, after, alen), 0);
	cr_assert_eq(access(tpath(path, "jobs/m/model-v1.f32"), F_OK), -1);
	trib_free(before);
	trib_free(after);
}

Test(ctl_models, a_file_of_the_wrong_size_is_refused_with_what_to_do)
{
	char path[PATH_MAX], *log;
	size_t len;

	add_job("m", BODY_M, 5, 2);
	put("jobs/m/model-v1.f32", m_v1, sizeof(m_v1) - 2); /* cut short */
	cr_assert_eq(with_log(migrate, NULL, &log), -EINVAL);
	cr_assert(strstr(log, "jobs/m/model-v1.f32: 18 bytes, but its job's tensors hold 20"),
		  "%s", log);
	cr_assert(strstr(log, "restore it from a backup, or move it out of"), "%s", log);
	cr_assert(strstr(log, "then start the controller again"), "%s", log);
	trib_free(log);
	cr_assert_eq(access(tpath(path, "jobs/m/model-v1.f32"), F_OK), 0, "the old file stays");
	cr_assert_null(slurp("jobs/m/round-1.safetensors", &len), "nothing written for it");
}

Test(ctl_models, an_unreadable_file_is_refused)
{
	char path[PATH_MAX], *log;

	add_job("m", BODY_M, 5, 1);
	cr_assert_eq(trib_mkdir_p(tpath(path, "jobs/m/model-v1.f32"), 0700), 0); /* a directory */
	cr_assert_neq(with_log(migrate, NULL, &log), 0);
	cr_assert(strstr(log, "model-v1.f32"), "%s", log);
	cr_assert(strstr(log, "then start the controller again"), "%s", log);
	trib_free(log);
}

Test(ctl_models, old_files_of_an_unknown_job_are_refused)
{
	char *log;

	add_job("m", BODY_M, 5, 1);
	put("jobs/ghost/model-v3.f32", m_v1, sizeof(m_v1));
	cr_assert_eq(with_log(migrate, NULL, &log), -EINVAL);
	cr_assert(strstr(log, "jobs/ghost: model-vN.f32 files of a job controller.db does not "
			      "know"),
		  "%s", log);
	cr_assert(strstr(log, "move that directory away"), "%s", log);
	trib_free(log);
}

Test(ctl_models, a_job_whose_definition_has_no_tensors_is_refused)
{
	char *log;

	add_job("m", "{\"name\":\"m\",\"clients_per_round\":2}", 5, 1);
	put("jobs/m/model-v1.f32", m_v1, sizeof(m_v1));
	cr_assert_eq(with_log(migrate, NULL, &log), -EINVAL);
	cr_assert(strstr(log, "job m: give exactly one of"), "%s", log);
	cr_assert(strstr(log, "cannot be converted"), "%s", log);
	trib_free(log);
}

Test(ctl_models, read_refuses_a_foreign_file)
{
	struct ctl_model_fmt f, g;
	float *out = NULL;

	cr_assert_eq(ctl_model_fmt_init(&f, BODY_M, strlen(BODY_M), NULL), 0);
	cr_assert_eq(ctl_model_fmt_init(&g, BODY_T, strlen(BODY_T), NULL), 0);
	cr_assert_eq(ctl_model_read(tdir, "m", &f, 1, &out), -ENOENT);
	cr_assert_eq(ctl_model_write(tdir, "m", &g, t_v1, 1), 0);
	cr_assert_eq(ctl_model_read(tdir, "m", &f, 1, &out), -EINVAL);
	cr_assert_null(out);
	cr_assert_eq(ctl_model_write(tdir, "m", &f, m_v2, 1), 0);
	cr_assert_eq(ctl_model_read(tdir, "m", &f, 1, &out), 0);
	cr_assert_eq(memcmp(out, m_v2, sizeof(m_v2)), 0);
	trib_free(out);
	ctl_model_fmt_fini(&f);
	ctl_model_fmt_fini(&g);
}

/* --- the daemon: converts, loads, stops on SIGTERM; or refuses --- */

struct run {
	struct ctl_cluster_opts o;
	char listen[PATH_MAX + 8];
	int ret;
};

static void *run_thread(void *arg)
{
	struct run *r = arg;

	r->ret = ctl_cluster_run(&r->o);
	return NULL;
}

/* Start the controller on DATA_DIR in a thread, SIGTERM it, and return its exit code. */
static int run_and_stop(void *arg)
{
	struct run *r = arg;
	sigset_t term;
	pthread_t t;

	memset(r, 0, sizeof(*r));
	/* Port 0: the kernel picks one (every cluster listener is mutual TLS). */
	snprintf(r->listen, sizeof(r->listen), "tls+tcp://127.0.0.1:0");
	r->o.listen = r->listen;
	r->o.data_dir = tdir;
	r->o.heartbeat_ms = 200;
	r->o.dead_after_ms = 1500;
	/*
	 * Blocked here, so in the thread from its start: the signal waits for the
	 * controller's signalfd however early it is sent.
	 */
	sigemptyset(&term);
	sigaddset(&term, SIGTERM);
	cr_assert_eq(pthread_sigmask(SIG_BLOCK, &term, NULL), 0);
	cr_assert_eq(pthread_create(&t, NULL, run_thread, r), 0);
	usleep(200 * 1000);
	cr_assert_eq(pthread_kill(t, SIGTERM), 0);
	cr_assert_eq(pthread_join(t, NULL), 0);
	return r->ret;
}

Test(ctl_models, the_controller_converts_at_start_and_loads_the_newest, .timeout = 30)
{
	struct run r;
	char *log;

	add_job("m", BODY_M, 5, 2);
	put("jobs/m/model-v1.f32", m_v1, sizeof(m_v1));
	put("jobs/m/model-v2.f32", m_v2, sizeof(m_v2));
	cr_assert_eq(with_log(run_and_stop, &r, &log), 0, "%s", log);
	cr_assert(strstr(log, "job m: 2 model files"), "%s", log);
	cr_assert(strstr(log, "job m: loaded at version 2"), "%s", log);
	cr_assert(strstr(log, "signal 15: controller stopping"), "%s", log);
	trib_free(log);
}

static int run_refused(void *arg)
{
	struct ctl_cluster_opts o = {
		.listen = "ipc:///nonexistent/never-listened",
		.data_dir = tdir,
		.heartbeat_ms = 200,
		.dead_after_ms = 1500,
	};

	(void)arg;
	return ctl_cluster_run(&o);
}

Test(ctl_models, the_controller_refuses_a_file_it_cannot_convert, .timeout = 30)
{
	char *log;

	add_job("m", BODY_M, 5, 2);
	put("jobs/m/model-v1.f32", m_v1, sizeof(m_v1));
	put("jobs/m/model-v2.f32", m_v2, 7);
	cr_assert_eq(with_log(run_refused, NULL, &log), 1, "%s", log);
	cr_assert(strstr(log, "jobs/m/model-v2.f32: 7 bytes"), "%s", log);
	cr_assert(strstr(log, "the controller did not start"), "%s", log);
	cr_assert_eq(strstr(log, "listening"), NULL, "%s", log);
	trib_free(log);
}

Test(ctl_models, the_controller_refuses_a_model_file_of_another_shape, .timeout = 30)
{
	struct ctl_model_fmt g;
	char *log;

	add_job("m", BODY_M, 5, 1);
	cr_assert_eq(ctl_model_fmt_init(&g, BODY_T, strlen(BODY_T), NULL), 0);
	cr_assert_eq(ctl_model_write(tdir, "m", &g, t_v1, 1), 0);
	ctl_model_fmt_fini(&g);
	cr_assert_eq(with_log(run_refused, NULL, &log), 1, "%s", log);
	cr_assert(strstr(log, "round-1.safetensors: not a model of job m"), "%s", log);
	cr_assert(strstr(log, "its jobs could not be loaded"), "%s", log);
	trib_free(log);
}

Test(ctl_models, a_store_that_fails_is_counted_and_clears_on_success)
{
	struct ctl_model_fmt f;
	struct trib_retry st = { 0 };
	char path[PATH_MAX];
	float m[5] = { 1, 2, 3, 4, 5 }, *back = NULL;

	cr_assert_eq(ctl_model_fmt_init(&f, BODY_M, strlen(BODY_M), NULL), 0);
	cr_assert_eq(trib_mkdir_p(tpath(path, "jobs/m/round-3.safetensors"), 0700), 0);
	cr_assert_eq(ctl_model_store(tdir, "m", &f, &st, 2, m), -EISDIR, "v3 is a directory");
	cr_assert(trib_retry_pending(&st));
	cr_assert_eq(st.what, 2);
	cr_assert_eq(ctl_model_store(tdir, "m", &f, &st, 2, m), -EISDIR, "tried again");
	cr_assert_eq(st.retries, 1);
	cr_assert_eq(rmdir(path), 0);
	cr_assert_eq(ctl_model_store(tdir, "m", &f, &st, 2, m), 0);
	cr_assert_not(trib_retry_pending(&st));
	cr_assert_eq(ctl_model_read(tdir, "m", &f, 3, &back), 0);
	cr_assert_eq(memcmp(back, m, sizeof(m)), 0);
	trib_free(back);
	ctl_model_fmt_fini(&f);
}

Test(ctl_models, the_controller_removes_leftover_temp_files_at_start, .timeout = 30)
{
	struct run r;
	char *log, name[128], path[PATH_MAX];
	pid_t dead = fork();

	cr_assert_geq(dead, 0);
	if (dead == 0)
		_exit(0);
	cr_assert_eq(waitpid(dead, NULL, 0), dead);
	add_job("m", BODY_M, 5, 1);
	{
		struct ctl_model_fmt f;

		cr_assert_eq(ctl_model_fmt_init(&f, BODY_M, strlen(BODY_M), NULL), 0);
		cr_assert_eq(ctl_model_write(tdir, "m", &f, m_v1, 1), 0);
		ctl_model_fmt_fini(&f);
	}
	snprintf(name, sizeof(name), "jobs/m/.round-2.safetensors.tmp.%d.4", (int)dead);
	put(name, "half", 4);
	cr_assert_eq(with_log(run_and_stop, &r, &log), 0, "%s", log);
	cr_assert(strstr(log, "store: job m: removed 1 temporary file"), "%s", log);
	cr_assert_neq(access(tpath(path, name), F_OK), 0, "the temp file is gone");
	cr_assert_eq(access(tpath(path, "jobs/m/round-1.safetensors"), F_OK), 0);
	trib_free(log);
}

/* scaffold's model is [x ; c]: the controller's files hold the doubled schema, as a node's. */
Test(ctl_models, a_scaffold_job_keeps_x_and_c)
{
	static const char body[] = "{\"name\":\"s\",\"clients_per_round\":2,\"algorithm\":"
				   "\"scaffold\",\"scaffold_clients\":4,\"tensors\":[{\"name\":\"w\","
				   "\"shape\":[2,3]},{\"name\":\"b\",\"shape\":[3]}]}";
	static const char bad[] = "{\"name\":\"s\",\"clients_per_round\":2,\"algorithm\":"
				  "\"scaffold\",\"tensors\":[{\"name\":\"c.w\",\"shape\":[2]}]}";
	struct ctl_model_fmt f;
	const char *why = NULL;

	cr_assert_eq(ctl_model_fmt_init(&f, body, strlen(body), &why), 0, "%s", why);
	cr_assert_eq(f.n_elem, 18);
	cr_assert_eq(f.nschema, 4);
	cr_assert_str_eq(f.schema[2].name, "c.w");
	cr_assert_str_eq(f.schema[3].name, "c.b");
	cr_assert(memmem(f.hdr, f.hdr_len, "\"c.b\"", 5), "the header names c.b");
	ctl_model_fmt_fini(&f);
	cr_assert_eq(ctl_model_fmt_init(&f, bad, strlen(bad), &why), -EINVAL);
	cr_assert(strstr(why, "c."), "%s", why);
}
