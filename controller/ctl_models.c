// SPDX-License-Identifier: MIT
/* The controller's model files: one safetensors file per version, and the old .f32 converted. */
#include "ctl_models.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "ctl_store.h"
#include "trib_alloc.h"
#include "trib_dtype.h"
#include "trib_json.h"
#include "trib_log.h"
#include "trib_parse.h"
#include "trib_schema.h"
#include "trib_store.h"
#include "trib_time.h"

#define OLD_PREFIX "model-v"
#define OLD_SUFFIX ".f32"

int ctl_model_fmt_init(struct ctl_model_fmt *f, const char *body, size_t len, const char **why)
{
	json_t *spec = NULL;
	const char *reason = "the job's definition is not a JSON object";
	int err = trib_json_loadb(body, len, 0, &spec, NULL);
	bool frl = false;

	memset(f, 0, sizeof(*f));
	if (err == -ENOMEM) {
		reason = "out of memory";
		goto err_out;
	}
	err = -EINVAL;
	/* scaffold's model is [x ; c]: the doubled schema, as the nodes make it. */
	if (json_is_object(spec) && json_is_string(json_object_get(spec, "algorithm")) &&
	    !strcmp(json_string_value(json_object_get(spec, "algorithm")), "scaffold")) {
		size_t at;

		err = trib_schema_scaffold(spec, &at);
		reason = err == -ENOMEM ? "out of memory" : "scaffold keeps names starting c.";
		if (err)
			goto err_spec;
		err = -EINVAL;
	}
	if (json_is_object(spec))
		err = trib_schema_from_spec(spec, &f->schema, &f->nschema, &f->n_elem, &reason);
	/* frl's model is the global ranking, I32 (a node's rt_job.c writes the same header). */
	frl = json_is_string(json_object_get(spec, "algorithm")) &&
	      !strcmp(json_string_value(json_object_get(spec, "algorithm")), "frl");
	if (!err) {
		/* flora: the stacks the nodes' models carry (trib_schema_add_flora()) */
		err = trib_schema_add_flora(spec, &f->schema, &f->nschema, &f->n_elem, &reason);
		if (err) {
			json_decref(spec);
			goto err_free_schema;
		}
	}
err_spec:
	json_decref(spec);
	if (err)
		goto err_out;
	/* No __metadata__: a node writes none, and the files must be the same bytes. */
	err = trib_st_write_header_dtype(f->schema, f->nschema,
					 frl ? TRIB_DTYPE_I32 : TRIB_DTYPE_F32, NULL, &f->hdr,
					 &f->hdr_len);
	if (err) {
		reason = "its tensors do not make a safetensors header";
		goto err_free_schema;
	}
	return 0;

err_free_schema:
	trib_free(f->schema);
	memset(f, 0, sizeof(*f));
err_out:
	if (why)
		*why = err == -ENOMEM ? "out of memory" : reason;
	return err;
}

void ctl_model_fmt_fini(struct ctl_model_fmt *f)
{
	trib_free(f->schema);
	trib_free(f->hdr);
	memset(f, 0, sizeof(*f));
}

int ctl_model_write(const char *data_dir, const char *job, const struct ctl_model_fmt *f,
		    const float *data, uint32_t version)
{
	return trib_store_write_model(data_dir, job, version, f->hdr, f->hdr_len, data,
				      f->n_elem * sizeof(float), NULL, 0);
}

int ctl_model_store(const char *data_dir, const char *job, const struct ctl_model_fmt *f,
		    struct trib_retry *st, uint32_t round, const float *data)
{
	uint64_t now = trib_now_ns();
	uint32_t k;
	int err;

	err = ctl_model_write(data_dir, job, f, data, round + 1);
	if (err) {
		if (trib_retry_fail(st, err, round, now, (int64_t)time(NULL)))
			trib_error("job %s round %u: model v%u could not be stored: %s (%s); the "
				   "job's updates get 503 until it is, retried with backoff",
				   job, round, round + 1, strerror(-err), trib_errno_name(err));
		else if ((st->retries & (st->retries - 1)) == 0)
			trib_warn("job %s round %u: model v%u still not stored after %u retries: "
				  "%s", job, round, round + 1, st->retries, trib_errno_name(err));
		return err;
	}
	k = trib_retry_ok(st);
	if (k)
		trib_info("job %s round %u: model v%u stored after %u failed attempts; the job "
			  "takes updates again", job, round, round + 1, k);
	return 0;
}

int ctl_model_read(const char *data_dir, const char *job, const struct ctl_model_fmt *f,
		   uint32_t version, float **out)
{
	char path[PATH_MAX];
	void *buf = NULL;
	size_t len = 0;
	int err;

	err = trib_store_read_model(data_dir, job, version, &buf, &len);
	if (err)
		return err;
	if (len != f->hdr_len + f->n_elem * sizeof(float) || memcmp(buf, f->hdr, f->hdr_len)) {
		trib_store_model_path(data_dir, job, version, path, sizeof(path));
		trib_error("%s: not a model of job %s (%zu bytes; its tensors make %llu): move it "
			   "away to resume from the version before, or restore it from a backup",
			   path, job, len, (unsigned long long)(f->hdr_len + f->n_elem * 4));
		trib_free(buf);
		return -EINVAL;
	}
	/* The floats to the front of the buffer: one allocation, however large the model. */
	memmove(buf, (char *)buf + f->hdr_len, f->n_elem * sizeof(float));
	*out = buf;
	return 0;
}

/* The version in an old file name "model-v{v}.f32"; -EINVAL if @name is not one. */
static int old_version(const char *name, uint32_t *v)
{
	size_t len = strlen(name), plen = strlen(OLD_PREFIX), slen = strlen(OLD_SUFFIX);
	char digits[16];

	if (len <= plen + slen || len - plen - slen >= sizeof(digits) ||
	    strncmp(name, OLD_PREFIX, plen) || strcmp(name + len - slen, OLD_SUFFIX))
		return -EINVAL;
	memcpy(digits, name + plen, len - plen - slen);
	digits[len - plen - slen] = '\0';
	return trib_parse_u32(digits, 0, UINT32_MAX, v);
}

/* Read the whole of @path, which must hold exactly @want bytes; errors are logged. */
static int old_read(const char *path, const char *dir, size_t want, float **out)
{
	struct stat sb;
	float *buf;
	ssize_t n;
	int fd, err = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &sb)) {
		err = -errno;
		trib_error("%s: %s: it cannot be converted to safetensors; make it readable by the "
			   "controller, or move it out of %s, then start the controller again",
			   path, strerror(-err), dir);
		goto err_close;
	}
	if (!S_ISREG(sb.st_mode) || (uint64_t)sb.st_size != want) {
		trib_error("%s: %lld bytes, but its job's tensors hold %zu: it cannot be converted "
			   "to safetensors; restore it from a backup, or move it out of %s (the "
			   "job resumes from its newest model that converts), then start the "
			   "controller again",
			   path, (long long)sb.st_size, want, dir);
		err = -EINVAL;
		goto err_close;
	}
	buf = trib_malloc(want ? want : 1);
	err = -ENOMEM;
	if (!buf)
		goto err_close;
	for (size_t got = 0; got < want; got += (size_t)n) {
		n = read(fd, (char *)buf + got, want - got);
		if (n <= 0) {
			err = n < 0 ? -errno : -EIO;
			trib_error("%s: reading: %s", path, strerror(-err));
			trib_free(buf);
			goto err_close;
		}
	}
	close(fd);
	*out = buf;
	return 0;

err_close:
	if (fd >= 0)
		close(fd);
	return err;
}

/* After opendir(@dir) failed: 0 if it does not exist (nothing to convert), else -errno, logged. */
static int dir_error(const char *dir)
{
	int err = -errno;

	if (err == -ENOENT)
		return 0;
	trib_error("%s: %s: the controller cannot look for model files of an older version there",
		   dir, strerror(-err));
	return err;
}

/* One old file of @cj: the new one written (durably), then the old one gone. */
static int migrate_file(const char *data_dir, const struct ctl_job *cj, const char *dir,
			const char *fname, uint32_t v, struct ctl_model_fmt *f)
{
	char path[PATH_MAX];
	float *data = NULL;
	int err;

	if (snprintf(path, sizeof(path), "%s/%s", dir, fname) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	err = old_read(path, dir, f->n_elem * sizeof(float), &data);
	if (err)
		return err;
	err = ctl_model_write(data_dir, cj->name, f, data, v);
	trib_free(data);
	if (err) {
		trib_error("job %s: writing round-%u.safetensors from %s: %s", cj->name, v, path,
			   strerror(-err));
		return err;
	}
	/* A crash before this leaves both: the next start converts it again, to the same bytes. */
	if (unlink(path)) {
		err = -errno;
		trib_error("%s: converted, but cannot be removed: %s", path, strerror(-err));
		return err;
	}
	return 0;
}

/* The format of @cj's files, for its old ones; errors are logged with what to do. */
static int migrate_fmt(const struct ctl_job *cj, const char *dir, struct ctl_model_fmt *f)
{
	const char *why = NULL;
	json_t *schema = NULL;
	uint64_t want;
	int err;

	if (cj->schema_json &&
	    trib_json_loadb(cj->schema_json, strlen(cj->schema_json), 0, &schema, NULL) == -ENOMEM)
		return -ENOMEM;
	want = (uint64_t)json_integer_value(json_object_get(schema, "n_elem"));
	json_decref(schema);
	err = cj->params_json
		  ? ctl_model_fmt_init(f, cj->params_json, strlen(cj->params_json), &why)
		  : -EINVAL;
	if (!err && want != f->n_elem) {
		why = "its tensors and its recorded size disagree";
		ctl_model_fmt_fini(f);
		err = -EINVAL;
	}
	if (err)
		trib_error("job %s: %s: its model-vN.f32 files in %s cannot be converted to "
			   "safetensors; move them out of it (the job restarts from zeros), then "
			   "start the controller again",
			   cj->name, why ? why : "no definition recorded", dir);
	return err;
}

/* Every old file of job @cj. */
static int migrate_job(const char *data_dir, const struct ctl_job *cj)
{
	struct ctl_model_fmt f = {0};
	char dir[PATH_MAX];
	struct dirent *de;
	uint32_t v, n = 0;
	int err = 0;
	DIR *d;

	snprintf(dir, sizeof(dir), "%s/jobs/%s", data_dir, cj->name);
	d = opendir(dir);
	if (!d)
		return dir_error(dir);
	/* Entries added or removed meanwhile may be seen or not: only old names are acted on. */
	while (!err && (de = readdir(d))) {
		if (old_version(de->d_name, &v))
			continue;
		if (!f.hdr)
			err = migrate_fmt(cj, dir, &f);
		if (!err)
			err = migrate_file(data_dir, cj, dir, de->d_name, v, &f);
		n += !err;
	}
	closedir(d);
	ctl_model_fmt_fini(&f);
	if (n)
		trib_info("job %s: %u model files of an older controller converted from "
			  "model-vN.f32 to round-N.safetensors",
			  cj->name, n);
	return err;
}

/* 1 if @dir holds an old model file, 0 if not (or it is not a directory). */
static int holds_old(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	uint32_t v;
	int found = 0;

	if (!d)
		return 0;
	while (!found && (de = readdir(d)))
		found = !old_version(de->d_name, &v);
	closedir(d);
	return found;
}

/* Old files in a directory of a job @st does not know: nothing says what they hold. */
static int refuse_unknown(const char *data_dir, const struct ctl_job *cjs, size_t n)
{
	char dir[PATH_MAX];
	struct dirent *de;
	int err = 0;
	DIR *d;

	snprintf(dir, sizeof(dir), "%s/jobs", data_dir);
	d = opendir(dir);
	if (!d)
		return dir_error(dir);
	while (!err && (de = readdir(d))) {
		size_t i;

		for (i = 0; i < n && strcmp(cjs[i].name, de->d_name); i++)
			;
		if (i < n || de->d_name[0] == '.')
			continue;
		snprintf(dir, sizeof(dir), "%s/jobs/%s", data_dir, de->d_name);
		if (holds_old(dir)) {
			trib_error("%s: model-vN.f32 files of a job controller.db does not know: "
				   "they cannot be converted to safetensors; move that directory "
				   "away, then start the controller again",
				   dir);
			err = -EINVAL;
		}
	}
	closedir(d);
	return err;
}

int ctl_models_migrate(const char *data_dir, struct ctl_store *st)
{
	struct ctl_job *cjs = NULL;
	size_t n = 0;
	int err;

	err = ctl_store_job_list(st, &cjs, &n);
	if (err)
		return err;
	for (size_t i = 0; i < n && !err; i++)
		err = migrate_job(data_dir, &cjs[i]);
	if (!err)
		err = refuse_unknown(data_dir, cjs, n);
	for (size_t i = 0; i < n; i++)
		ctl_job_clear(&cjs[i]);
	trib_free(cjs);
	return err;
}
