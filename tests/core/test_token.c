// SPDX-License-Identifier: MIT
/* Tests for core/trib_token: making, loading (and creating) and comparing bearer tokens. */
#include <criterion/criterion.h>

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "trib_token.h"

/* Each test gets its own directory, removed afterwards. */
static char tdir[64];
static char tok_path[PATH_MAX];

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void setup(void)
{
	strcpy(tdir, "/tmp/trib-core-token-XXXXXX");
	cr_assert_not_null(mkdtemp(tdir));
	snprintf(tok_path, sizeof(tok_path), "%s/token", tdir);
}

static void teardown(void)
{
	nftw(tdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(core_token, .init = setup, .fini = teardown);

/* Write @text to the token file as it is. */
static void put(const char *text)
{
	FILE *f = fopen(tok_path, "w");

	cr_assert_not_null(f);
	cr_assert_eq(fputs(text, f) >= 0, true);
	cr_assert_eq(fclose(f), 0);
}

/* The number of entries in the test directory (besides . and ..). */
static int entries(void)
{
	DIR *d = opendir(tdir);
	struct dirent *de;
	int n = 0;

	cr_assert_not_null(d);
	while ((de = readdir(d)))
		n += strcmp(de->d_name, ".") && strcmp(de->d_name, "..");
	closedir(d);
	return n;
}

Test(core_token, new_is_unique_and_urlsafe)
{
	enum { N = 256 };
	static char toks[N][TRIB_TOKEN_LEN + 1];
	char small[TRIB_TOKEN_LEN];
	size_t i, k;

	cr_assert_eq(trib_token_new(small, sizeof(small)), -ERANGE);
	for (i = 0; i < N; i++) {
		cr_assert_eq(trib_token_new(toks[i], sizeof(toks[i])), 0);
		cr_assert_eq(strlen(toks[i]), TRIB_TOKEN_LEN);
		for (k = 0; k < TRIB_TOKEN_LEN; k++) {
			char c = toks[i][k];

			cr_assert((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
					  (c >= '0' && c <= '9') || c == '-' || c == '_',
				  "char %d in %s", c, toks[i]);
		}
		for (k = 0; k < i; k++)
			cr_assert_str_neq(toks[i], toks[k]);
	}
}

Test(core_token, load_refuses_too_short)
{
	char out[TRIB_TOKEN_MAX + 1] = "untouched";

	put("0123456789abcde\n"); /* 15 */
	cr_assert_eq(trib_token_load(tok_path, true, out, sizeof(out), NULL), -EINVAL);
	put("");
	cr_assert_eq(trib_token_load(tok_path, true, out, sizeof(out), NULL), -EINVAL,
		     "an empty file is not created over");
	put("\n0123456789abcdef\n");
	cr_assert_eq(trib_token_load(tok_path, false, out, sizeof(out), NULL), -EINVAL,
		     "only the first line counts");
	put("0123456789abcdef\n"); /* 16: the shortest */
	cr_assert_eq(trib_token_load(tok_path, false, out, sizeof(out), NULL), 0);
	cr_assert_str_eq(out, "0123456789abcdef");
}

Test(core_token, load_refuses_too_long)
{
	char line[TRIB_TOKEN_MAX + 3], out[TRIB_TOKEN_MAX + 1];

	memset(line, 'k', TRIB_TOKEN_MAX);
	strcpy(line + TRIB_TOKEN_MAX, "\n");
	put(line); /* 79: the longest */
	cr_assert_eq(trib_token_load(tok_path, false, out, sizeof(out), NULL), 0);
	cr_assert_eq(strlen(out), TRIB_TOKEN_MAX);
	strcpy(line + TRIB_TOKEN_MAX, "k\n");
	put(line); /* 80 */
	cr_assert_eq(trib_token_load(tok_path, false, out, sizeof(out), NULL), -EINVAL);
	put("kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk"
	    "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk\n"); /* far longer than the buffer */
	cr_assert_eq(trib_token_load(tok_path, false, out, sizeof(out), NULL), -EINVAL);
}

Test(core_token, load_cuts_at_whitespace)
{
	static const char *const files[] = {
		"0123456789abcdefXYZ\n", "0123456789abcdefXYZ\r\n", "0123456789abcdefXYZ",
		"0123456789abcdefXYZ other words\n", "0123456789abcdefXYZ\tcomment\n",
	};
	char out[TRIB_TOKEN_MAX + 1];
	bool created = true;

	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		put(files[i]);
		cr_assert_eq(trib_token_load(tok_path, true, out, sizeof(out), &created), 0);
		cr_assert_str_eq(out, "0123456789abcdefXYZ", "file %zu", i);
		cr_assert_not(created, "an existing file is not created");
	}
	/* Cut before 16 characters: too short, even if the line is longer. */
	put("0123456789 abcdefghijk\n");
	cr_assert_eq(trib_token_load(tok_path, false, out, sizeof(out), NULL), -EINVAL);
}

Test(core_token, absent_and_create_writes_0600_atomically)
{
	char out[TRIB_TOKEN_MAX + 1], again[TRIB_TOKEN_MAX + 1], text[128];
	bool created = false;
	struct stat sb;
	mode_t old = umask(0);
	FILE *f;

	cr_assert_eq(trib_token_load(tok_path, true, out, sizeof(out), &created), 0);
	umask(old);
	cr_assert(created);
	cr_assert_eq(strlen(out), TRIB_TOKEN_LEN);
	cr_assert_eq(stat(tok_path, &sb), 0);
	cr_assert_eq(sb.st_mode & 07777, 0600, "mode %o with umask 0", sb.st_mode & 07777);
	cr_assert_eq(entries(), 1, "no temporary file is left beside it");
	f = fopen(tok_path, "r");
	cr_assert_not_null(f);
	cr_assert_not_null(fgets(text, sizeof(text), f));
	fclose(f);
	cr_assert_eq(strlen(text), TRIB_TOKEN_LEN + 1);
	cr_assert_eq(text[TRIB_TOKEN_LEN], '\n');
	cr_assert_eq(strncmp(text, out, TRIB_TOKEN_LEN), 0, "the file holds the token returned");
	/* Loaded again: the same token, not a new one. */
	cr_assert_eq(trib_token_load(tok_path, true, again, sizeof(again), &created), 0);
	cr_assert_not(created);
	cr_assert_str_eq(again, out);
}

Test(core_token, absent_without_create_is_enoent)
{
	char out[TRIB_TOKEN_MAX + 1];
	bool created = true;

	cr_assert_eq(trib_token_load(tok_path, false, out, sizeof(out), &created), -ENOENT);
	cr_assert_not(created);
	cr_assert_eq(access(tok_path, F_OK), -1, "nothing is created");
	cr_assert_eq(entries(), 0);
}

Test(core_token, load_refuses_a_small_buffer)
{
	char out[TRIB_TOKEN_MAX];

	put("0123456789abcdef\n");
	cr_assert_eq(trib_token_load(tok_path, false, out, sizeof(out), NULL), -ERANGE);
}

Test(core_token, eq_edge_cases)
{
	cr_assert(trib_token_eq("0123456789abcdef", "0123456789abcdef"));
	cr_assert_not(trib_token_eq("", ""), "an empty expected token never matches");
	cr_assert_not(trib_token_eq("anything", ""), "an empty expected token never matches");
	cr_assert_not(trib_token_eq("0123456789abcde", "0123456789abcdef"), "a prefix");
	cr_assert_not(trib_token_eq("", "0123456789abcdef"), "empty presented");
	cr_assert_not(trib_token_eq("0123456789abcdefg", "0123456789abcdef"), "longer");
	cr_assert_not(trib_token_eq("0123456789abcdeF", "0123456789abcdef"), "last char");
	cr_assert_not(trib_token_eq("X123456789abcdef", "0123456789abcdef"), "first char");
	cr_assert(trib_token_eq("0123456789abcdef\0tail", "0123456789abcdef\0other"),
		  "bytes after the NUL do not count");
}
