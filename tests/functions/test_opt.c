// SPDX-License-Identifier: MIT
/* Tests of the server optimisers against tests/functions/ref/opt.py (numpy, f32, same formulas). */
#include <criterion/criterion.h>

#include <errno.h>
#include <float.h>
#include <math.h>
#include <string.h>

#include "fn_opt.h"
#include "ref/ref.h"
#include "trib_alloc.h"

static const char *const kind_names[] = { "fedavg", "fedavgm", "fedadagrad", "fedadam", "fedyogi" };

/* A state with its arrays; the arrays belong to the caller of opt_alloc() (opt_release()). */
struct opt_run {
	struct fn_opt_params p;
	struct fn_opt_state st;
	float *m, *v;
};

static void opt_alloc(struct opt_run *r, uint32_t kind, const float *params, size_t n)
{
	uint64_t mn, vn;

	fn_opt_params_default(&r->p, kind);
	r->p.server_lr = params[0];
	r->p.momentum = params[1];
	r->p.beta1 = params[2];
	r->p.beta2 = params[3];
	r->p.tau = params[4];
	fn_opt_state_elems(kind, n, &mn, &vn);
	r->m = mn ? trib_malloc(mn * sizeof(float)) : NULL;
	r->v = vn ? trib_malloc(vn * sizeof(float)) : NULL;
	cr_assert((!mn || r->m) && (!vn || r->v));
	cr_assert_eq(fn_opt_state_init(&r->st, &r->p, n, r->m, r->v), 0);
}

static void opt_release(struct opt_run *r)
{
	trib_free(r->m);
	trib_free(r->v);
}

/* Reference array @what of @kind: "x_fedadam" etc. */
static const float *kind_array(const struct ref *r, const char *what, uint32_t kind, size_t *cnt)
{
	char name[64];

	snprintf(name, sizeof(name), "%s_%s", what, kind_names[kind]);
	return ref_f32(r, name, cnt);
}

/*
 * Runs the steps of @kind on the reference's inputs and compares model, m and v. The C loops do
 * the reference's f32 operations in the same order (no FMA contraction under -std=c11, and SSE
 * sqrt and division are correctly rounded), so the results are bit-identical.
 */
static void check_kind(const struct ref *r, uint32_t kind, size_t n, size_t steps)
{
	struct opt_run o;
	const float *params, *x0, *deltas, *x, *m, *v;
	size_t cnt, s;
	float *model = trib_malloc(n * sizeof(float) + 1);

	cr_assert_not_null(model);
	params = kind_array(r, "params", kind, &cnt);
	cr_assert_eq(cnt, 5);
	x0 = kind_array(r, "x0", kind, NULL);
	deltas = kind_array(r, "deltas", kind, &cnt);
	cr_assert_eq(cnt, n * steps);
	x = kind_array(r, "x", kind, NULL);
	m = kind_array(r, "m", kind, NULL);
	v = kind_array(r, "v", kind, NULL);

	opt_alloc(&o, kind, params, n);
	memcpy(model, x0, n * sizeof(float));
	for (s = 0; s < steps; s++)
		cr_assert_eq(fn_opt_step(&o.p, &o.st, model, deltas + s * n, n), 0, "%s step %zu",
			     kind_names[kind], s);
	cr_assert_eq(o.st.step, steps);
	ref_expect_f32(model, x, n, 0, kind_names[kind]);
	if (o.m)
		ref_expect_f32(o.m, m, n, 0, "m");
	if (o.v)
		ref_expect_f32(o.v, v, n, 0, "v");
	opt_release(&o);
	trib_free(model);
}

#define ALL_KINDS "fedavg fedavgm fedadagrad fedadam fedyogi"

Test(functions_opt, every_kind_matches_numpy_bit_for_bit)
{
	struct ref r;

	/* 1003: several 512-element tiles and an odd tail. */
	ref_run(&r, "opt.py", "1003 6 11 plain " ALL_KINDS);
	for (uint32_t k = FN_OPT_FEDAVG; k <= FN_OPT_FEDYOGI; k++)
		check_kind(&r, k, 1003, 6);
	ref_free(&r);
}

Test(functions_opt, huge_delta_saturates_instead_of_nan)
{
	struct ref r;

	ref_run(&r, "opt.py", "257 4 23 huge " ALL_KINDS);
	for (uint32_t k = FN_OPT_FEDAVG; k <= FN_OPT_FEDYOGI; k++)
		check_kind(&r, k, 257, 4);
	ref_free(&r);
}

Test(functions_opt, overflowing_model_is_reported_as_erange)
{
	struct fn_opt_params p;
	struct fn_opt_state st;
	float model[3] = { 3e38f, 0.0f, -1.0f }, d[3] = { 3e38f, 1.0f, 1.0f };

	fn_opt_params_default(&p, FN_OPT_FEDAVG);
	cr_assert_eq(fn_opt_state_init(&st, &p, 3, NULL, NULL), 0);
	cr_assert_eq(fn_opt_step(&p, &st, model, d, 3), -ERANGE);
}

Test(functions_opt, saved_state_resumes_the_same_trajectory)
{
	enum { N = 300, STEPS = 5, CUT = 2 };
	struct opt_run a, b, c;
	const float *params, *x0, *deltas, *x;
	float model[N];
	struct ref r;
	size_t s, len;
	void *buf;

	ref_run(&r, "opt.py", "%d %d 7 plain fedyogi", N, STEPS);
	params = ref_f32(&r, "params_fedyogi", NULL);
	x0 = ref_f32(&r, "x0_fedyogi", NULL);
	deltas = ref_f32(&r, "deltas_fedyogi", NULL);
	x = ref_f32(&r, "x_fedyogi", NULL);

	opt_alloc(&a, FN_OPT_FEDYOGI, params, N);
	memcpy(model, x0, sizeof(model));
	for (s = 0; s < CUT; s++)
		cr_assert_eq(fn_opt_step(&a.p, &a.st, model, deltas + s * N, N), 0);
	len = fn_opt_state_size(&a.st);
	cr_assert_eq(len, FN_OPT_STATE_HDR + 2 * N * sizeof(float));
	buf = trib_malloc(len);
	cr_assert_not_null(buf);
	cr_assert_eq(fn_opt_state_save(&a.st, buf, len - 1), -ENOSPC);
	cr_assert_eq(fn_opt_state_save(&a.st, buf, len), 0);
	cr_assert(!memcmp(buf, FN_OPT_STATE_MAGIC, 8));

	/* A fresh state (as after a restart) loads the saved one and carries on. */
	opt_alloc(&b, FN_OPT_FEDYOGI, params, N);
	cr_assert_eq(fn_opt_state_load(&b.st, buf, len - 4), -EMSGSIZE);
	cr_assert_eq(fn_opt_state_load(&b.st, buf, len), 0);
	cr_assert_eq(b.st.step, CUT);
	for (s = CUT; s < STEPS; s++)
		cr_assert_eq(fn_opt_step(&b.p, &b.st, model, deltas + s * N, N), 0);
	ref_expect_f32(model, x, N, 0, "resumed fedyogi");

	/* A state of another kind, or a damaged one, is refused. */
	opt_alloc(&c, FN_OPT_FEDADAM, params, N);
	cr_assert_eq(fn_opt_state_load(&c.st, buf, len), -EINVAL);
	((uint8_t *)buf)[0] ^= 1;
	cr_assert_eq(fn_opt_state_load(&b.st, buf, len), -EINVAL);

	opt_release(&c);
	opt_release(&b);
	opt_release(&a);
	trib_free(buf);
	ref_free(&r);
}

Test(functions_opt, params_check_names_the_bad_field)
{
	struct fn_opt_params p;
	const char *field;

	fn_opt_params_default(&p, FN_OPT_FEDADAM);
	cr_assert_eq(fn_opt_params_check(&p, &field), 0);
	cr_assert_null(field);

	p.beta2 = 1.0f;
	cr_assert_eq(fn_opt_params_check(&p, &field), -EINVAL);
	cr_assert_str_eq(field, "beta2");
	fn_opt_params_default(&p, FN_OPT_FEDYOGI);
	p.tau = 0.0f;
	cr_assert_eq(fn_opt_params_check(&p, &field), -EINVAL);
	cr_assert_str_eq(field, "tau");
	fn_opt_params_default(&p, FN_OPT_FEDAVGM);
	p.momentum = -0.1f;
	cr_assert_eq(fn_opt_params_check(&p, &field), -EINVAL);
	cr_assert_str_eq(field, "momentum");
	p.momentum = 0.5f;
	p.server_lr = NAN;
	cr_assert_eq(fn_opt_params_check(&p, &field), -EINVAL);
	cr_assert_str_eq(field, "server_lr");
	p.kind = 99;
	cr_assert_eq(fn_opt_params_check(&p, &field), -EINVAL);
	cr_assert_str_eq(field, "algorithm");

	/* Adagrad has no beta2; a leftover value is not an error. */
	fn_opt_params_default(&p, FN_OPT_FEDADAGRAD);
	p.beta2 = 5.0f;
	cr_assert_eq(fn_opt_params_check(&p, NULL), 0);
}

Test(functions_opt, state_init_sets_tau_squared_and_checks_arrays)
{
	struct fn_opt_params p;
	struct fn_opt_state st;
	float m[4], v[4];

	float x[4] = { 1, 2, 3, 4 }, d[4] = { 1, 1, 1, 1 };

	fn_opt_params_default(&p, FN_OPT_FEDADAM);
	p.tau = 0.25f;
	cr_assert_eq(fn_opt_state_init(&st, &p, 4, m, NULL), -EINVAL);
	cr_assert_eq(fn_opt_state_init(&st, &p, 4, m, v), 0);
	for (int i = 0; i < 4; i++) {
		cr_assert_eq(m[i], 0.0f);
		cr_assert_eq(v[i], 0.0625f);
	}
	/* A step with the wrong size or kind changes nothing. */
	cr_assert_eq(fn_opt_step(&p, &st, x, d, 3), -EINVAL);
	p.kind = FN_OPT_FEDYOGI;
	cr_assert_eq(fn_opt_step(&p, &st, x, d, 4), -EINVAL);
	cr_assert_eq(x[0], 1.0f);
	cr_assert_eq(st.step, 0);
}
