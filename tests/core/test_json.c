// SPDX-License-Identifier: MIT
/* Tests for core/trib_json: JSON in and out through the one allocator. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "trib_alloc.h"
#include "trib_json.h"

Test(core_json, loadb_parses_and_refuses)
{
	const char *ok = "{\"clients_per_round\": 3, \"name\": \"a-long-enough-job-name\"}";
	json_error_t jerr;
	json_t *j = NULL;

	cr_assert_eq(trib_json_loadb(ok, strlen(ok), 0, &j, &jerr), 0);
	cr_assert_str_eq(json_string_value(json_object_get(j, "name")), "a-long-enough-job-name");
	json_decref(j);
	cr_assert_eq(trib_json_loadb("{\"a\":", 5, 0, &j, &jerr), -EINVAL);
	cr_assert_null(j);
	cr_assert_eq(trib_json_loadb("{\"a\":", 5, 0, &j, NULL), -EINVAL, "jerr is optional");
}

/*
 * Every allocation of the parse failed in turn: each gives -ENOMEM or the
 * whole document, never one with a key or a string cut short (jansson's own
 * answer for some of them) and never a syntax error.
 */
Test(core_json, loadb_short_of_memory_is_enomem_never_a_cut_document)
{
	const char *doc = "{\"clients_per_round\": 3, \"name\": \"a-long-enough-job-name\", "
			  "\"params\": {\"server_lr\": 0.1, \"algorithm\": \"fedadam\"}}";
	int whole = 0, enomem = 0;

	for (long k = 0; k < 64; k++) {
		json_t *j = NULL;
		int err;

		trib_alloc_fail_after(k);
		err = trib_json_loadb(doc, strlen(doc), 0, &j, NULL);
		trib_alloc_fail_after(-1);
		if (err) {
			cr_assert_eq(err, -ENOMEM, "k=%ld: %d", k, err);
			cr_assert_null(j);
			enomem++;
			continue;
		}
		cr_assert_eq(json_integer_value(json_object_get(j, "clients_per_round")), 3);
		cr_assert_str_eq(json_string_value(json_object_get(j, "name")),
				 "a-long-enough-job-name", "k=%ld", k);
		cr_assert_str_eq(
		    json_string_value(json_object_get(json_object_get(j, "params"), "algorithm")),
		    "fedadam", "k=%ld", k);
		json_decref(j);
		whole++;
	}
	cr_assert_gt(enomem, 0, "no allocation of the parse was failed");
	cr_assert_gt(whole, 0, "the parse never got through");
}

/*
 * trib_json_dumps guesses the size and dumps once, or twice when the text is longer: the same
 * text as jansson's json_dumps at every length around the guess (8 KB), and NULL, nothing
 * leaked, when an allocation fails.
 */
Test(core_json, dumps_equals_jansson_at_every_length_around_its_guess)
{
	static char buf[20001];
	static const size_t lens[] = { 0, 1, 100, 4080, 4085, 8170, 8180, 8181, 8182, 8183,
				       8184, 8190, 8200, 20000 };

	for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
		json_t *o;
		char *got, *want;

		memset(buf, 'x', lens[k]);
		buf[lens[k]] = '\0';
		o = json_pack("{s:s, s:I, s:f}", "s", buf, "n", (json_int_t)-12345, "x", 0.25);
		cr_assert_not_null(o);
		got = trib_json_dumps(o, JSON_COMPACT);
		want = json_dumps(o, JSON_COMPACT);
		cr_assert_not_null(got);
		cr_assert_not_null(want);
		cr_assert_eq(strlen(got), strlen(want), "string of %zu: %zu bytes, want %zu", lens[k],
			     strlen(got), strlen(want));
		cr_assert_str_eq(got, want);
		for (long f = 0; f < 3; f++) {
			char *none;

			trib_alloc_fail_after(f);
			none = trib_json_dumps(o, JSON_COMPACT);
			trib_alloc_fail_after(-1);
			/*
			 * The whole text or NULL, never a cut one (jansson allocates inside its
			 * dump too; the shrink's realloc may fail harmlessly).
			 */
			if (none)
				cr_assert_str_eq(none, want, "failing allocation %ld", f);
			cr_assert(f > 0 || !none, "the first allocation failed, yet a text came");
			trib_free(none);
		}
		trib_free(got);
		trib_free(want);
		json_decref(o);
	}
}
