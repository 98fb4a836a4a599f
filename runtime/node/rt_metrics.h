/* SPDX-License-Identifier: MIT */
/*
 * Client-reported metrics (X-Tributary-Metrics on an update, the metrics of
 * an evaluation) and their sample-weighted means: pure functions, no node.
 *
 * A metrics object is a JSON object of at most RT_METRICS_MAX members, each
 * name 1..RT_METRICS_NAME_MAX characters of [A-Za-z0-9_.-] and each value a
 * finite JSON number; as a header its text is at most RT_METRICS_TEXT_MAX
 * bytes. The mean of name k over reports i that carry it is
 *
 *     mean_k = sum_i w_i * x_ik / sum_i w_i      (w_i: report i's samples)
 *
 * so a name only some reports carry is averaged over those reports.
 */
#ifndef RT_METRICS_H
#define RT_METRICS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define RT_METRICS_MAX      16
#define RT_METRICS_NAME_MAX 64
#define RT_METRICS_TEXT_MAX 1024
/* Distinct names one round (or one version's evaluations) keeps means of. */
#define RT_MSUM_MAX 64

/* One report's metrics, in the order given. */
struct rt_cmetrics {
	uint32_t n;
	char name[RT_METRICS_MAX][RT_METRICS_NAME_MAX + 1];
	double val[RT_METRICS_MAX];
};

/* The weighted sums of many reports. */
struct rt_msum {
	uint32_t n;       /* names in use */
	uint32_t reports; /* reports folded in (that carried metrics) */
	struct {
		char name[RT_METRICS_NAME_MAX + 1];
		double sw, swx; /* sum of weights, of weight x value */
	} e[RT_MSUM_MAX];
};

/*
 * Parse @text (@len bytes, a header value) into *out. 0, or -EINVAL with
 * @why (@cap bytes) naming what is wrong, the value and what is allowed.
 */
int rt_metrics_parse(const char *text, size_t len, struct rt_cmetrics *out, char *why,
		     size_t cap);
/* Same rules on a parsed JSON value (an evaluation's "metrics"). */
int rt_metrics_from_json(const json_t *obj, struct rt_cmetrics *out, char *why, size_t cap);
/* The names of @m that *s does not have yet. */
uint32_t rt_msum_new_names(const struct rt_msum *s, const struct rt_cmetrics *m);
/*
 * Fold @m with weight @w (> 0) into *s: -E2BIG (and *s unchanged) if that
 * would take *s past RT_MSUM_MAX names.
 */
int rt_msum_add(struct rt_msum *s, const struct rt_cmetrics *m, double w);
/* {name: mean, ...} in the order the names came (a new reference; NULL: no memory). */
json_t *rt_msum_means(const struct rt_msum *s);
/* The sums as JSON {"reports": r, "sums": {name: [sw, swx]}} and back (for the store). */
json_t *rt_msum_to_json(const struct rt_msum *s);
int rt_msum_from_json(const json_t *o, struct rt_msum *s);

#endif
