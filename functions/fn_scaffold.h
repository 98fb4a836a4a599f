/* SPDX-License-Identifier: MIT */
/* SCAFFOLD's server step (Karimireddy et al., ICML 2020, Algorithm 1): the model and the control variate. */
#ifndef FN_SCAFFOLD_H
#define FN_SCAFFOLD_H

#include <stddef.h>

/*
 * A scaffold job's flat vector is [x ; c]: the model's tensors, then the control variate's
 * (`c.<name>`, same shapes, same order), so c starts at n / 2. A client sends
 * [Δy ; Δc] (its model delta and its control delta); the tree folds them unweighted, and the
 * round's top, from the previous [x ; c] and the mean over the round's |S| updates:
 *
 *   x += η_g · mean(Δy)          (η_g: server_lr)
 *   c += (|S| / N) · mean(Δc)    (N: scaffold_clients, the client population)
 *
 * each in double from the f32 values, rounded once.
 *
 * out[i] = prev[i] + f · sum[i] / s for i < n, with f = lr for i < n / 2 and f = s / pop after
 * (@s: updates folded, > 0; @pop: N >= 1; @sum and @out may be the same array; @n even).
 * 0, or -EINVAL (odd n, s or pop not positive).
 */
int fn_scaffold_step(const float *prev, const float *sum, float *out, size_t n, double s,
		     double lr, double pop);

#endif
