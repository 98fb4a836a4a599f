/* SPDX-License-Identifier: MIT */
/*
 * The controller's model files: DATA_DIR/jobs/{job}/round-{v}.safetensors,
 * byte for byte what a node writes for the same job and version, and the
 * conversion of the model-v{v}.f32 files older controllers wrote.
 */
#ifndef CTL_MODELS_H
#define CTL_MODELS_H

#include <stddef.h>
#include <stdint.h>

#include "trib_retry.h"
#include "trib_safetensors.h"

struct ctl_store;

/* How every model file of one job is laid out; fields owned by the struct. */
struct ctl_model_fmt {
	struct trib_tensor *schema; /* the job's tensors, in file order */
	size_t nschema;
	uint64_t n_elem; /* floats in a model: the sum over the tensors */
	char *hdr;	 /* the safetensors header (length + JSON) every version starts with */
	size_t hdr_len;
};

/*
 * The format of a job from its creation request (@body, @len bytes,
 * borrowed; "params" or "tensors" as a node parses them): the same schema
 * and header a node builds. On failure *f is zeroed and *why (if not NULL)
 * is a static reason. Returns 0, -EINVAL or -ENOMEM.
 */
int ctl_model_fmt_init(struct ctl_model_fmt *f, const char *body, size_t len, const char **why);
/* Accepts a zeroed struct; leaves it zeroed. */
void ctl_model_fmt_fini(struct ctl_model_fmt *f);

/*
 * Write model @version of @job: header then @data (f->n_elem floats,
 * borrowed), atomically, through trib_store_write_model(). 0 or -errno.
 */
int ctl_model_write(const char *data_dir, const char *job, const struct ctl_model_fmt *f,
		    const float *data, uint32_t version);

/*
 * ctl_model_write() of model v@round+1, its failures kept in @st (the
 * job's): a failure is logged (when it starts, then at 1, 2, 4, ...
 * retries) and recorded in @st; a success clears @st (logged if it had
 * failed). The caller paces the attempts: the top's node sends the model
 * again with the backoff of trib_retry. 0 or -errno.
 */
int ctl_model_store(const char *data_dir, const char *job, const struct ctl_model_fmt *f,
		    struct trib_retry *st, uint32_t round, const float *data);

/*
 * Read model @version of @job into *out (f->n_elem floats, owned by the
 * caller: trib_free). -ENOENT if there is no such file; -EINVAL (logged,
 * with the path) if it is not this job's format.
 */
int ctl_model_read(const char *data_dir, const char *job, const struct ctl_model_fmt *f,
		   uint32_t version, float **out);

/*
 * Convert every DATA_DIR/jobs/{job}/model-v{v}.f32 of an older controller
 * into round-{v}.safetensors with the job's schema from @st, written
 * atomically, then remove the old file; one log line per job converted. A
 * file that cannot be converted (its size is not the schema's, it cannot be
 * read, its job is not in @st or has no schema) stops the conversion with
 * an error logged that names the file and what to do; files converted
 * before it stay converted, so running it again after the fix finishes the
 * work. Returns 0 (also when there is nothing to convert) or -errno.
 */
int ctl_models_migrate(const char *data_dir, struct ctl_store *st);

#endif
