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
