// SPDX-License-Identifier: MIT
/*
 * A job's per-round client config and client selection (issue 15).
 *
 * client_config: {"values": {...}, "schedule": [{"from_round": r, "values": {...}}, ...]}.
 * The config of round r is a pure function of the job and r (rt_job_round_config), so a
 * restart, a node of a cluster and a client asking twice all see the same config.
 *
 * Selection: a round of K updates hands out at most ceil(K*f) tasks, first come. A task is
 * a promise that the client's update will be taken, so it is written to
 * DATA_DIR/jobs/{job}/tasks (and fdatasync'd) before the client hears of it: after a crash
 * the open round's tasks come back from that file. The file holds one round: its first line
 * is the round and the job's store id (a job deleted and made again under the same name has
 * another: its file is not the new job's), then one client id a line. A later round rewrites
 * it (the old round's tasks are void by then). A torn last line was never acknowledged, and is
 * skipped.
 */
#include "rt_node_priv.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "trib_alloc.h"
#include "trib_cred.h"
#include "trib_json.h"
#include "trib_log.h"
#include "trib_select.h"

#define CC_BYTES_MAX 8192  /* the whole client_config, compact JSON */
#define CC_KEYS_MAX 32     /* keys of one "values" object */
#define CC_STRING_MAX 256  /* bytes of a string value */
#define CC_KEY_MAX 64      /* bytes of a key */

/* --- client_config: the check and the pure function --- */

/* A flat "values" object at @where; 0 or -EINVAL with @msg. */
static int values_check(const json_t *v, const char *where, char *msg, size_t cap)
{
	const char *key;
	json_t *x;

	if (!json_is_object(v)) {
		snprintf(msg, cap, "%s: an object of up to %d keys (numbers, strings, booleans)",
			 where, CC_KEYS_MAX);
		return -EINVAL;
	}
	if (json_object_size(v) > CC_KEYS_MAX) {
		snprintf(msg, cap, "%s: %zu keys, at most %d allowed", where, json_object_size(v),
			 CC_KEYS_MAX);
		return -EINVAL;
	}
	json_object_foreach((json_t *)v, key, x) {
		size_t kl = strlen(key);

		if (!kl || kl > CC_KEY_MAX) {
			snprintf(msg, cap, "%s: key of %zu bytes; keys are 1 to %d bytes", where, kl,
				 CC_KEY_MAX);
			return -EINVAL;
		}
		if (json_is_string(x) && json_string_length(x) > CC_STRING_MAX) {
			snprintf(msg, cap, "%s.%.64s: a string of %zu bytes, at most %d allowed",
				 where, key, json_string_length(x), CC_STRING_MAX);
			return -EINVAL;
		}
		if (!json_is_number(x) && !json_is_string(x) && !json_is_boolean(x)) {
			snprintf(msg, cap, "%s.%.64s: a %s; values are numbers, strings or booleans "
				 "(flat: no objects, arrays or null)", where, key,
				 json_is_object(x) ? "nested object" :
				 json_is_array(x) ? "array" : "null");
			return -EINVAL;
		}
	}
	return 0;
}

int rt_client_config_check(const json_t *cc, char *msg, size_t cap)
{
	const json_t *vals = json_object_get(cc, "values"), *sched = json_object_get(cc, "schedule");
	const char *key;
	json_t *x, *row;
	char *text;
	size_t len, i;
	json_int_t prev = -1;

	if (!json_is_object(cc)) {
		snprintf(msg, cap, "%s", "client_config: an object {\"values\": {...}, "
			 "\"schedule\": [{\"from_round\": r, \"values\": {...}}, ...]}");
		return -EINVAL;
	}
	json_object_foreach((json_t *)cc, key, x)
		if (strcmp(key, "values") && strcmp(key, "schedule")) {
			snprintf(msg, cap, "client_config.%.64s: unknown field (values, schedule)",
				 key);
			return -EINVAL;
		}
	text = trib_json_dumps(cc, JSON_COMPACT);
	len = text ? strlen(text) : 0;
	trib_free(text);
	if (!text) {
		snprintf(msg, cap, "%s", "out of memory");
		return -ENOMEM;
	}
	if (len > CC_BYTES_MAX) {
		snprintf(msg, cap, "client_config: %zu bytes of JSON, at most %d allowed", len,
			 CC_BYTES_MAX);
		return -EINVAL;
	}
	if (vals && values_check(vals, "client_config.values", msg, cap))
		return -EINVAL;
	if (!sched)
		return 0;
	if (!json_is_array(sched)) {
		snprintf(msg, cap, "%s", "client_config.schedule: an array of "
			 "{\"from_round\": r, \"values\": {...}}, sorted by from_round");
		return -EINVAL;
	}
	json_array_foreach(sched, i, row) {
		json_t *fr = json_object_get(row, "from_round");
		char where[64];

		if (!json_is_object(row) || json_object_size(row) != 2 || !json_is_integer(fr) ||
		    !json_object_get(row, "values")) {
			snprintf(msg, cap, "client_config.schedule[%zu]: an object with exactly "
				 "from_round (an integer) and values", i);
			return -EINVAL;
		}
		if (json_integer_value(fr) < 0 || json_integer_value(fr) > UINT32_MAX) {
			snprintf(msg, cap, "client_config.schedule[%zu].from_round: %lld; a round "
				 "number from 0 to %u", i, (long long)json_integer_value(fr),
				 UINT32_MAX);
			return -EINVAL;
		}
		if (json_integer_value(fr) <= prev) {
			snprintf(msg, cap, "client_config.schedule[%zu].from_round: %lld after %lld; "
				 "rows must have strictly increasing from_round", i,
				 (long long)json_integer_value(fr), (long long)prev);
			return -EINVAL;
		}
		prev = json_integer_value(fr);
		snprintf(where, sizeof(where), "client_config.schedule[%zu].values", i);
		if (values_check(json_object_get(row, "values"), where, msg, cap))
			return -EINVAL;
	}
	return 0;
}

json_t *rt_job_round_config(const struct rt_job *j, uint32_t r)
{
	const json_t *cc = j->sel.client_config, *vals, *row;
	json_t *out;
	size_t i;

	if (!cc)
		return NULL;
	vals = json_object_get(cc, "values");
	out = vals ? json_deep_copy(vals) : json_object();
	if (!out)
		return NULL;
	/* Rows are sorted (rt_client_config_check): the first one in the future ends it. */
	json_array_foreach(json_object_get(cc, "schedule"), i, row) {
		if (json_integer_value(json_object_get(row, "from_round")) > (json_int_t)r)
			break;
		if (json_object_update(out, json_object_get(row, "values"))) {
			json_decref(out);
			return NULL;
		}
	}
	return out;
}

uint32_t rt_select_max(uint32_t k, double f)
{
	return trib_select_max(k, f); /* the controller's rule too (trib_select.h) */
}

/* --- the job's copy, kept in the store with its parameters --- */

int rt__select_init(struct rt_job *j, const struct rt_job_spec *spec)
{
	if (spec->client_config) {
		j->sel.client_config = json_deep_copy(spec->client_config);
		if (!j->sel.client_config)
			return -ENOMEM;
	}
	j->sel.per_round = spec->sel_per_round;
	j->sel.overcommit = spec->sel_per_round ? spec->sel_overcommit : 0;
	j->sel.max = spec->sel_per_round ? rt_select_max(spec->sel_per_round,
							 spec->sel_overcommit) : 0;
	return 0;
}

int rt__select_record(const struct rt_job *j, json_t *p)
{
	if (j->sel.client_config &&
	    json_object_set_new(p, "client_config", json_deep_copy(j->sel.client_config)))
		return -ENOMEM;
	if (j->sel.per_round &&
	    json_object_set_new(p, "selection", json_pack("{s:I, s:f}", "per_round",
							  (json_int_t)j->sel.per_round,
							  "overcommit", j->sel.overcommit)))
		return -ENOMEM;
	return 0;
}

int rt__select_from_stored(struct rt_job *j, const json_t *p)
{
	const json_t *cc = json_object_get(p, "client_config"), *sel = json_object_get(p, "selection");
	struct rt_job_spec spec;

	memset(&spec, 0, sizeof(spec));
	spec.client_config = (json_t *)cc;
	if (json_is_object(sel)) {
		spec.sel_per_round = (uint32_t)json_integer_value(json_object_get(sel, "per_round"));
		spec.sel_overcommit = json_number_value(json_object_get(sel, "overcommit"));
	}
	return rt__select_init(j, &spec);
}

void rt__select_free(struct rt_job *j)
{
	json_decref(j->sel.client_config);
	rt_clients_free(&j->sel.tasks);
	j->sel.client_config = NULL;
}

/* --- tasks --- */

static int tasks_path(const struct rt_node *n, const struct rt_job *j, char *out, size_t cap)
{
	int len = snprintf(out, cap, "%s/jobs/%s/tasks", n->opts.data_dir, j->name);

	return len < 0 || (size_t)len >= cap ? -ENAMETOOLONG : 0;
}

/* Write @len bytes at @s to the tasks file (@trunc: anew) and make them durable. 0 or -errno. */
static int tasks_write(struct rt_node *n, struct rt_job *j, const char *s, size_t len, bool trunc)
{
	char path[4096];
	int fd, err = tasks_path(n, j, path, sizeof(path));

	if (err)
		return err;
	fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (trunc ? O_TRUNC : O_APPEND), 0600);
	if (fd < 0)
		return -errno;
	while (len) {
		ssize_t w = write(fd, s, len);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			err = w < 0 ? -errno : -EIO;
			break;
		}
		s += w;
		len -= (size_t)w;
	}
	if (!err && fdatasync(fd))
		err = -errno;
	close(fd);
	return err;
}

/* The task table at @j's open round (its tasks of an older round are void). 0 or -ENOMEM. */
static int tasks_sync(struct rt_job *j)
{
	uint32_t left;

	return rt_clients_sync(&j->sel.tasks, j->round, &left);
}

int rt_select_task(struct rt_node *n, struct rt_job *j, const char *id, bool *granted)
{
	struct rt_clients *t = &j->sel.tasks;
	bool fresh = !t->synced || t->round != j->round || !t->used;
	char line[64 + RT_CLIENT_ID_MAX];
	int err, len;

	*granted = false;
	if (!trib_cred_client_valid(id))
		return -EINVAL;
	err = tasks_sync(j);
	if (err)
		return err;
	if (rt_clients_find(t, id)) {
		*granted = true;
		return 0;
	}
	if (t->used >= j->sel.max)
		return 0;
	/* The first task of a round starts the file anew, with the round. */
	len = fresh ? snprintf(line, sizeof(line), "%u %lld\n%s\n", j->round,
			       (long long)j->db_id, id) :
		      snprintf(line, sizeof(line), "%s\n", id);
	err = tasks_write(n, j, line, (size_t)len, fresh);
	if (err) {
		trib_error("job %s: keeping a task of round %u: %s", j->name, j->round,
			   strerror(-err));
		return err;
	}
	/* On disk but not in memory: after a restart it holds a slot for a client that
	 * never heard of it (one task fewer this round), which refuses no one wrongly. */
	if (!rt_clients_get(t, id))
		return -ENOMEM;
	*granted = true;
	return 0;
}

bool rt_select_has_task(const struct rt_job *j, const char *id, uint32_t round)
{
	const struct rt_clients *t = &j->sel.tasks;

	return t->synced && t->round == round && rt_clients_find(t, id);
}

uint32_t rt_select_tasks_out(const struct rt_job *j)
{
	const struct rt_clients *t = &j->sel.tasks;

	return t->synced && t->round == j->round ? t->used : 0;
}

void rt__select_tasks_load(struct rt_node *n, struct rt_job *j)
{
	char path[4096], buf[128];
	unsigned long round = 0;
	long long id = -1;
	uint32_t kept = 0;
	FILE *f;

	if (!j->sel.per_round || tasks_path(n, j, path, sizeof(path)))
		return;
	f = fopen(path, "re");
	if (!f)
		return; /* no task handed out yet */
	if (!fgets(buf, sizeof(buf), f) || !strchr(buf, '\n') ||
	    sscanf(buf, "%lu %lld", &round, &id) != 2 || round != j->round || id != j->db_id) {
		fclose(f); /* an older round's (or another job's of that name): void */
		return;
	}
	if (tasks_sync(j)) {
		fclose(f);
		return;
	}
	while (fgets(buf, sizeof(buf), f)) {
		char *nl = strchr(buf, '\n');

		if (!nl)
			break; /* torn: never acknowledged */
		*nl = '\0';
		if (trib_cred_client_valid(buf) && rt_clients_get(&j->sel.tasks, buf))
			kept++;
	}
	fclose(f);
	trib_info("job %s: %u task(s) of round %u kept across the restart", j->name, kept,
		  j->round);
}
