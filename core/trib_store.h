/* SPDX-License-Identifier: MIT */
/* The model store on disk: DATA_DIR/jobs/{job}/round-{r}.safetensors, each written atomically. */
#ifndef TRIB_STORE_H
#define TRIB_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * All functions return 0 or a negative errno. A job name must pass
 * trib_job_name_valid() (it becomes a directory name), else -EINVAL. Paths
 * longer than PATH_MAX give -ENAMETOOLONG. Readers never see a partial model:
 * a round file either does not exist or holds everything that was written.
 */

/* Write "DATA_DIR/jobs/{job}/round-{round}.safetensors" into @path (@cap bytes, borrowed). */
int trib_store_model_path(const char *data_dir, const char *job, uint32_t round, char *path,
			size_t cap);

/*
 * Store the model of @round: the header then the data (both borrowed; either
 * may be empty), creating DATA_DIR/jobs/{job} (mode 0700) as needed. The bytes
 * go to a temporary file (mode 0600) in the same directory, which is fsynced
 * and renamed over the round file, and then the directory is fsynced. On any
 * failure before the rename the temporary file is removed and an existing
 * round file is left untouched. If @path_out is not NULL the final path is
 * copied there (@path_cap bytes).
 */
int trib_store_write_model(const char *data_dir, const char *job, uint32_t round, const void *hdr,
			 size_t hdr_len, const void *data, size_t data_len, char *path_out,
			 size_t path_cap);

/*
 * Read a whole round file. On success *buf is owned by the caller (trib_free)
 * and *len is its size. -ENOENT if there is no such round.
 */
int trib_store_read_model(const char *data_dir, const char *job, uint32_t round, void **buf,
			size_t *len);

/*
 * The highest N for which DATA_DIR/jobs/{job}/round-N.safetensors is a regular
 * file. -ENOENT if there is none (or no such directory).
 */
int trib_store_latest_round(const char *data_dir, const char *job, uint32_t *round);

/*
 * Replace @path with @len bytes of @buf (borrowed) atomically and durably:
 * temporary file in the same directory, fsync, rename, fsync of the directory.
 * The file gets exactly @mode (umask does not apply). The directory must exist.
 */
int trib_write_file_atomic(const char *path, const void *buf, size_t len, mode_t mode);

/*
 * Remove the temporary files that interrupted atomic writes left in @dir
 * (trib_write_file_atomic and trib_store_write_model name them
 * ".{name}.tmp.{pid}.{seq}"): regular files of that name only, except
 * those whose pid is a live process other than this one (another writer
 * may be between its write and its rename). Call it before this process
 * writes in @dir. *removed gets the count. 0 or -errno (-ENOENT: no @dir).
 */
int trib_store_sweep_tmp(const char *dir, unsigned *removed);

/*
 * At start: trib_store_sweep_tmp on DATA_DIR and on each DATA_DIR/jobs/{job},
 * one log line for each directory that had any (with the count). A missing
 * directory is not an error. *removed (may be NULL) gets the total. 0 or
 * -errno of the first directory that could not be read (logged).
 */
int trib_store_sweep(const char *data_dir, unsigned *removed);

/*
 * mkdir -p: create @path and missing parents with @mode (subject to umask);
 * existing directories are left as they are. -ENOTDIR if a component is not a
 * directory.
 */
int trib_mkdir_p(const char *path, mode_t mode);

/*
 * A deleted job's model directory DATA_DIR/jobs/{job} leaves, so that a job
 * made again under the name starts empty: moved to DATA_DIR/deleted/{job}.{id}
 * (@id: the store's id, never reused), or with @purge its files and the
 * directory removed. Absent: 0. *where (@cap bytes, may be NULL) gets the new
 * path ("" when purged). 0 or the first -errno (logged by the caller).
 */
int trib_store_job_release(const char *data_dir, const char *job, long long id, bool purge,
			   char *where, size_t cap);

#endif
