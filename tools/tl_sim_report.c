// SPDX-License-Identifier: MIT
/* What simulate says about a round: lost updates, acks per node, the --report-json file. */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "tl_sim_int.h"
#include "trib_alloc.h"
#include "trib_log.h"

/* Fill run->include from the acks and count what was lost. */
void tl_sim_round_tally(struct tl_sim_round *r, struct tl_sim_lost *l)
{
	struct tl_sim_run *run = r->run;

	memset(l, 0, sizeof(*l));
	for (uint32_t c = 0; c < r->o->clients; c++) {
		uint8_t f = run->acks[c].flags;

		run->include[c] = !(f & (SIM_ACK_CUR_LOST | SIM_ACK_REFUSED | SIM_ACK_WAITED));
		l->folded += run->include[c];
		if (!(f & SIM_ACK_LOST))
			continue;
		l->lost++;
		if (f & SIM_ACK_CUR_LOST)
			l->excluded++;
		else
			l->resent++;
	}
}

/* "round R: K updates acknowledged by lost node(s) n2,n3: ..." when anything was lost. */
void tl_sim_print_lost(const struct tl_sim_round *r, const struct tl_sim_lost *l)
{
	const struct tl_sim_run *run = r->run;
	const char *why = r->resend_failed ? "resend failed" : "round closed";
	char names[512] = "";
	size_t len = 0;

	if (!l->lost)
		return;
	for (uint32_t n = 0; n < run->nnodes && n < SIM_MAX_NODES; n++) {
		if (!r->lost_acked[n] || len >= sizeof(names))
			continue;
		len += (size_t)snprintf(names + len, sizeof(names) - len, "%s%s", len ? "," : "",
					run->node[n]);
	}
	if (!l->excluded)
		printf("round %" PRIu64 ": %u updates acknowledged by lost node(s) %s: resent %u\n",
		       r->round, l->lost, names, l->resent);
	else if (!l->resent)
		printf("round %" PRIu64 ": %u updates acknowledged by lost node(s) %s: not resent "
		       "(%s): excluded from the reference\n", r->round, l->lost, names, why);
	else
		printf("round %" PRIu64 ": %u updates acknowledged by lost node(s) %s: resent %u, "
		       "%u not resent (%s): excluded from the reference\n", r->round, l->lost,
		       names, l->resent, l->excluded, why);
}

/*
 * How the round's folded updates spread over the nodes, as a JSON object
 * {"n1": 34, ...} (NULL when no 202 named a node, or out of memory), logged
 * on one line.
 */
static json_t *round_acks(const struct tl_sim_round *r)
{
	const struct tl_sim_run *run = r->run;
	uint32_t *count, nn = run->nnodes;
	char line[1024];
	size_t len = 0;
	json_t *acks;

	if (!atomic_load(&run->multi) || !nn)
		return NULL;
	count = trib_calloc(nn, sizeof(*count));
	acks = count ? json_object() : NULL;
	if (!acks) {
		trib_free(count);
		return NULL;
	}
	for (uint32_t c = 0; c < r->o->clients; c++) {
		uint16_t n = run->acks[c].node;

		if (n < nn && !(run->acks[c].flags & SIM_ACK_CUR_LOST))
			count[n]++;
	}
	for (uint32_t n = 0; n < nn; n++) {
		if (!count[n])
			continue;
		json_object_set_new(acks, run->node[n], json_integer(count[n]));
		if (len < sizeof(line))
			len += (size_t)snprintf(line + len, sizeof(line) - len, "%s%s %u",
						len ? ", " : "", run->node[n], count[n]);
	}
	if (len)
		trib_info("round %" PRIu64 ": folded updates by node: %s", r->round, line);
	trib_free(count);
	return acks;
}

/* Append round @r's object to the report (a no-op without --report-json). */
void tl_sim_report_round(struct tl_sim_round *r, double secs, const struct tl_sim_lost *l, bool ok,
			 double max_err_v, bool checked)
{
	struct tl_sim_run *run = r->run;
	json_t *o, *acks = round_acks(r);

	if (!run->report)
		goto out;
	o = json_pack("{s:I, s:f, s:I, s:I, s:I, s:b}", "round", (json_int_t)r->round, "seconds",
		      secs, "updates", (json_int_t)l->folded, "lost", (json_int_t)l->lost,
		      "resent", (json_int_t)l->resent, "ok", ok);
	if (!o)
		goto out;
	json_object_set_new(o, "max_err", checked && isfinite(max_err_v) ? json_real(max_err_v)
									 : json_null());
	if (acks)
		json_object_set(o, "acks", acks);
	if (r->answered) {
		json_object_set(o, "top", r->top ? r->top : json_null());
		json_object_set(o, "edges", r->edges ? r->edges : json_null());
	}
	json_array_append_new(run->report, o);
out:
	json_decref(acks);
}

/* Write the --report-json file. Returns 0 or -EIO (logged). */
int tl_sim_write_report(const char *path, json_t *rounds, bool ok)
{
	const size_t flags = JSON_INDENT(1) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9);
	json_t *root = json_pack("{s:O, s:b}", "rounds", rounds, "ok", ok);
	int err = 0;

	if (!root || json_dump_file(root, path, flags)) {
		trib_error("cannot write --report-json %s", path);
		err = -EIO;
	}
	json_decref(root);
	return err;
}
