// SPDX-License-Identifier: MIT
/* Pins the layout of the structs that cross process (and kernel) boundaries. */
#include <criterion/criterion.h>
#include <stddef.h>

#include "shm_abi.h"
#include "shm_arena_abi.h"

Test(shm_abi, desc_is_64_bytes_with_fixed_offsets)
{
	cr_expect_eq(sizeof(struct shm_desc), 64);
	cr_expect_eq(SHM_DESC_SIZE, 64);
	cr_expect_eq(offsetof(struct shm_desc, version), 0);
	cr_expect_eq(offsetof(struct shm_desc, kind), 2);
	cr_expect_eq(offsetof(struct shm_desc, dst), 4);
	cr_expect_eq(offsetof(struct shm_desc, src), 8);
	cr_expect_eq(offsetof(struct shm_desc, job), 12);
	cr_expect_eq(offsetof(struct shm_desc, round), 16);
	cr_expect_eq(offsetof(struct shm_desc, nsegs), 20);
	cr_expect_eq(offsetof(struct shm_desc, slot_off), 24);
	cr_expect_eq(offsetof(struct shm_desc, segs_off), 32);
	cr_expect_eq(offsetof(struct shm_desc, weight), 40);
	cr_expect_eq(offsetof(struct shm_desc, count), 48);
	cr_expect_eq(offsetof(struct shm_desc, seq), 52);
	cr_expect_eq(offsetof(struct shm_desc, fold_scale), 56);
	cr_expect_eq(offsetof(struct shm_desc, reserved), 60);
}

Test(shm_abi, seg_is_32_bytes_with_fixed_offsets)
{
	cr_expect_eq(sizeof(struct shm_seg), 32);
	cr_expect_eq(offsetof(struct shm_seg, src_off), 0);
	cr_expect_eq(offsetof(struct shm_seg, dst_elem), 8);
	cr_expect_eq(offsetof(struct shm_seg, n_elem), 16);
	cr_expect_eq(offsetof(struct shm_seg, dtype), 24);
	cr_expect_eq(offsetof(struct shm_seg, scale), 28);
}

Test(shm_abi, enum_values_are_stable)
{
	cr_expect_eq(SHM_DTYPE_F32, 1);
	cr_expect_eq(SHM_DTYPE_F16, 2);
	cr_expect_eq(SHM_DTYPE_BF16, 3);
	cr_expect_eq(SHM_DTYPE_I8, 4);
	cr_expect_eq(SHM_DESC_UPDATE, 1);
	cr_expect_eq(SHM_DESC_PARTIAL, 2);
	cr_expect_eq(SHM_DESC_RESULT, 3);
	cr_expect_eq(SHM_DST_RUNTIME, 0);
}

Test(shm_abi, arena_header_is_pinned)
{
	cr_expect_eq(sizeof(struct shm_arena_hdr), 256);
	cr_expect_eq(offsetof(struct shm_arena_hdr, lock), 72);
	cr_expect_eq(SHM_CHUNK, 64 * 1024);
	cr_expect_eq(SHM_HUGE_PAGE % SHM_CHUNK, 0);
}

Test(shm_abi, arena_file_header_and_journal_record_are_pinned)
{
	cr_expect_eq(offsetof(struct shm_arena_hdr, file_off), 64, "was reserved0, zero in memfds");
	cr_expect_eq(sizeof(struct shm_arena_file_hdr), 4352);
	cr_expect_eq(offsetof(struct shm_arena_file_hdr, data_dir), 256);
	cr_expect_eq(sizeof(struct shm_journal_rec), 256);
	cr_expect_eq(offsetof(struct shm_journal_rec, state), 0, "the commit mark");
	cr_expect_eq(offsetof(struct shm_journal_rec, key), 80);
	cr_expect_eq(offsetof(struct shm_journal_rec, client), 224);
	cr_expect_eq(SHM_ARENA_FILE_VERSION, 2, "2: records name their client");
	cr_expect_neq(SHM_ARENA_FILE_MAGIC, SHM_ARENA_MAGIC);
	cr_expect_eq(SHM_REC_FREE, 0, "a zeroed journal is empty");
	cr_expect_eq(SHM_REC_COMMITTED, 2);
	cr_expect_eq(SHM_REC_UPDATE, SHM_DESC_UPDATE);
	cr_expect_eq(SHM_REC_PARTIAL, SHM_DESC_PARTIAL);
}
