// SPDX-License-Identifier: MIT
/* Tests for the slices message of robust rules across nodes: the cut and the owner's check. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "rt_shard_wire.h"

static struct shm_seg seg(uint64_t dst, uint64_t n, uint16_t dt)
{
	struct shm_seg s;

	memset(&s, 0, sizeof(s));
	s.dst_elem = dst;
	s.n_elem = n;
	s.dtype = dt;
	s.scale = 1.0f;
	return s;
}

Test(shard_wire, cut_sorts_segments_in_body_order_by_coordinate)
{
	/* safetensors with "b" (coordinates 2000..2777) before "w" (0..2000) */
	struct shm_seg segs[2] = {seg(2000, 777, SHM_DTYPE_F32), seg(0, 2000, SHM_DTYPE_F32)};
	struct rt_shard_piece p[2];

	cr_assert_eq(rt_shard_cut(segs, 2, 1500, 2500, p), 2);
	cr_expect(p[0].seg == 1 && p[0].a == 1500 && p[0].b == 2000);
	cr_expect(p[1].seg == 0 && p[1].a == 2000 && p[1].b == 2500);
	cr_assert_eq(rt_shard_cut(segs, 2, 0, 925, p), 1);
	cr_expect(p[0].seg == 1 && p[0].a == 0 && p[0].b == 925);
	cr_assert_eq(rt_shard_cut(segs, 2, 5, 5, p), 0, "an empty range has no piece");
}

/* A message as the sender builds it: each update's pieces from rt_shard_cut, 4-byte aligned. */
static json_t *build(const struct shm_seg *segs, uint32_t nsegs, uint32_t nups, uint64_t lo,
		     uint64_t hi, size_t *plen)
{
	json_t *ups = json_array();
	uint64_t off = 0;

	for (uint32_t u = 0; u < nups; u++) {
		struct rt_shard_piece p[8];
		uint32_t np = rt_shard_cut(segs, nsegs, lo, hi, p);
		json_t *js = json_array();

		for (uint32_t i = 0; i < np; i++) {
			uint64_t nb = (p[i].b - p[i].a) * rt_shard_dtype_size(segs[p[i].seg].dtype);

			json_array_append_new(js, json_pack("[I, I, I, i, f]", (json_int_t)off,
							    (json_int_t)(p[i].b - p[i].a),
							    (json_int_t)p[i].a,
							    (int)segs[p[i].seg].dtype, 1.0));
			off += (nb + 3) & ~3ull;
		}
		json_array_append_new(ups, js);
	}
	*plen = off;
	return ups;
}

Test(shard_wire, what_the_sender_builds_the_owner_takes)
{
	struct shm_seg segs[3] = {seg(100, 27, SHM_DTYPE_I8), seg(0, 100, SHM_DTYPE_F32),
				  seg(127, 50, SHM_DTYPE_F16)};
	uint64_t n;
	size_t plen;
	json_t *ups = build(segs, 3, 4, 59, 177, &plen);

	cr_assert_eq(rt_shard_slices_check(ups, 4, 3, 59, 177, plen, &n), 0);
	cr_expect_eq(n, 12u, "3 pieces x 4 updates");
	/* I8's 27 bytes are padded to 28, so the F16 piece that follows stays aligned. */
	cr_expect_eq(plen, 4 * ((100 - 59) * 4 + 28 + 50 * 2));
	cr_expect_eq(rt_shard_slices_check(ups, 5, 3, 59, 177, plen, &n), -EINVAL,
		     "another count of updates than the close's");
	cr_expect_eq(rt_shard_slices_check(ups, 4, 2, 59, 177, plen, &n), -EINVAL,
		     "more pieces than the schema has tensors");
	cr_expect_eq(rt_shard_slices_check(ups, 4, 3, 59, 177, plen - 1, &n), -EINVAL,
		     "a piece past the payload");
	cr_expect_eq(rt_shard_slices_check(ups, 4, 3, 60, 177, plen, &n), -EINVAL,
		     "another range than the owner's");
	cr_expect_eq(rt_shard_slices_check(ups, 4, 3, 59, 178, plen, &n), -EINVAL,
		     "a range not covered to its end");
	json_decref(ups);
}

Test(shard_wire, hostile_pieces_are_refused)
{
	static const char *const bad[] = {
	    "[[[0, 5, 0, 1, 1.0], [20, 5, 6, 1, 1.0]]]", /* a gap at 5 */
	    "[[[0, 6, 0, 1, 1.0], [24, 4, 5, 1, 1.0]]]", /* an overlap at 5 */
	    "[[[20, 5, 5, 1, 1.0], [0, 5, 0, 1, 1.0]]]", /* out of order */
	    "[[[2, 10, 0, 1, 1.0]]]",			 /* misaligned */
	    "[[[0, 10, 0, 99, 1.0]]]",			 /* unknown dtype */
	    "[[[0, 10, 0, 1]]]",			 /* a field missing */
	    "[[[0, 0, 0, 1, 1.0], [0, 10, 0, 1, 1.0]]]", /* an empty piece */
	    "[[[-4, 10, 0, 1, 1.0]]]",			 /* a negative offset */
	    "[[[0, 11, 0, 1, 1.0]]]",			 /* past the range */
	    "[[[0, 4611686018427387904, 0, 1, 1.0]]]",	 /* a length that overflows */
	    "[[]]",					 /* nothing for a non-empty range */
	    "[{\"a\": 1}]",				 /* not an array of pieces */
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		json_t *ups = json_loads(bad[i], 0, NULL);
		uint64_t n;

		cr_assert_not_null(ups, "%s", bad[i]);
		cr_expect_eq(rt_shard_slices_check(ups, 1, 4, 0, 10, 4096, &n), -EINVAL, "%s",
			     bad[i]);
		json_decref(ups);
	}
	{
		json_t *ok = json_loads("[[[0, 5, 0, 1, 1.0], [20, 5, 5, 1, 1.0]]]", 0, NULL);
		uint64_t n;

		cr_expect_eq(rt_shard_slices_check(ok, 1, 4, 0, 10, 40, &n), 0);
		json_decref(ok);
	}
}
