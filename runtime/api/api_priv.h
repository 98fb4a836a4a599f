/* SPDX-License-Identifier: MIT */
/* Inside the API (api/ only): its state and the helpers its handler files share. */
#ifndef API_PRIV_H
#define API_PRIV_H

#include <jansson.h>
#include <stdbool.h>

#include "rt_api.h"
#include "trib_ratelimit.h"

#define JOB_BODY_MAX (1u << 20)          /* JSON control bodies */
#define ST_HEADER_ALLOWANCE (1ull << 20) /* safetensors header room over the model's bytes */
#define LONG_POLL_MAX_S 60

struct rt_api {
	struct rt_node *node;
	bool clustered;             /* cluster hooks given (`tributary node`) */
	struct rt_api_hooks cluster;
	struct rt_api_ready_hook ready; /* GET /readyz (get NULL until the wiring sets it) */
	struct rt_conn *waiters;    /* parked long polls, newest first */
	struct rt_conn *wal_waiters; /* updates waiting for the log (--durability disk) */
	struct trib_ratelimit rej_log[RT_REJ__COUNT]; /* refusals naming no job: log lines */
	bool handoff_after_answer; /* the wiring flushes held hand-offs (rt_node_handoff_hold) */
};

static inline struct rt_api *API(struct rt_conn *c)
{
	return rt_conn_ctx(c);
}

static inline struct rt_node *N(struct rt_conn *c)
{
	return API(c)->node;
}

static inline struct rt_api_req *R(struct rt_conn *c)
{
	return rt_api_req(c);
}

/* runtime/api/openapi.json, compiled in (scripts/embed-file.py): GET /v1/openapi.json. */
extern const unsigned char rt_api_openapi_json[];
extern const size_t rt_api_openapi_json_len;

/*
 * rt_api.c: reads the request's body into c->body_heap for @j, then @done. @j is held (counted in
 * j->bodies until the request ends): a DELETE meanwhile does not free it, and @done starts with
 * rt__api_job_gone(), which answers 404 for a job deleted while the body came.
 */
void rt__api_read_job_body(struct rt_conn *c, struct rt_job *j, void (*done)(struct rt_conn *c));
bool rt__api_job_gone(struct rt_conn *c);
/* rt_api.c: whether the request carries the admin token (auth_job: or the job's). */
bool rt__api_auth_admin(struct rt_conn *c);
bool rt__api_auth_job(struct rt_conn *c, const struct rt_job *j);
/* Count @why (per node, and per job when the URL names one), log it (rate-limited), answer. */
void rt__api_reject(struct rt_conn *c, enum rt_reject why, int status, const char *msg,
		    long long round, const char *extra);
/* The counting and logging of rt__api_reject, for a refusal answered with another body. */
void rt__api_count_reject(struct rt_conn *c, enum rt_reject why, int status, const char *msg);
/* rt_api_metrics.c: @why's name in /metrics (reason="...") and in the log. */
const char *rt__api_reject_name(enum rt_reject why);
/* The job's (or the admin) token, or a 401 answered: false. */
bool rt__api_require_job(struct rt_conn *c, const struct rt_job *j);
/* Answer @obj (reference taken) as JSON. */
void rt__api_respond_json(struct rt_conn *c, int status, json_t *obj, const char *extra);
/* "application/json; charset=utf-8" matches "application/json". */
bool rt__api_ctype_is(const char *ctype, const char *want);
/* Park @c on @j until a model newer than @after exists or @deadline_ns. */
void rt__api_park(struct rt_conn *c, struct rt_job *j, uint32_t after, uint64_t deadline_ns);

/* rt_api_client.c */
/* The job's or the admin token, or a valid client token of @j; else a 401 answered: false. */
bool rt__api_require_reader(struct rt_conn *c, const struct rt_job *j);
/*
 * An update's bearer: a valid client token of @j (its id into R(c)->client),
 * or the job's (or the admin) token where the job does not require client
 * credentials; else a 401 or 403 answered: false.
 */
bool rt__api_update_auth(struct rt_conn *c, const struct rt_job *j);
/*
 * Before an update's body (@len bytes) gets a slot: its client has no update
 * in the round yet (else 409), nor its cap of bodies in flight, and the job
 * not its cap of body bytes (else 503); false when answered.
 */
bool rt__api_update_admit(struct rt_conn *c, struct rt_job *j, uint64_t len);
bool rt__api_body_admit(struct rt_conn *c, struct rt_job *j, uint64_t len);
/* The body has its slot: it counts as in flight until the request ends (rt__api_update_end). */
void rt__api_update_begin(struct rt_conn *c, struct rt_job *j);
void rt__api_update_end(struct rt_api *api, struct rt_conn *c);
/* /v1/jobs/{job}/clients@rest: POST mints, DELETE /{id} revokes. */
void rt__api_handle_clients(struct rt_conn *c, struct rt_job *j, const char *rest,
			    enum http_method m);
/* rt_api_job.c */
void rt__api_handle_create(struct rt_conn *c);
void rt__api_handle_list(struct rt_conn *c);
json_t *rt__api_job_json_full(struct rt_node *n, struct rt_job *j);
/* rt_api_np.c: .npy and .npz update bodies, and GET /model's Accept */
enum rt_np_fmt { RT_NP_NONE = 0, RT_NP_NPY = 1, RT_NP_NPZ = 2 };
enum rt_model_fmt { RT_MODEL_SAFETENSORS = 0, RT_MODEL_NPZ = 1, RT_MODEL_RAW = 2 };
/* The enum rt_np_fmt of a Content-Type (RT_NP_NONE: not a NumPy one). */
int rt__api_np_format(const char *ctype);
/* Most bytes of an .npy/.npz update body for @j (float64 data, zip and .npy headers). */
uint64_t rt__api_np_body_max(const struct rt_job *j);
/* Slot bytes past the body an update needs for inflated .npz members (0 unless .npz). */
uint64_t rt__api_np_room(struct rt_conn *c, const struct rt_job *j);
/* application/x-npy only for a job of one tensor; else a 422 answered: false. */
bool rt__api_np_admit(struct rt_conn *c, const struct rt_job *j);
/*
 * The .npy/.npz body in @body (the slot) parsed, inflated, matched and checked; its segments
 * written at *segs_off (after the inflated data). Returns 0, or -1 when answered (refused).
 */
int rt__api_np_segments(struct rt_conn *c, struct rt_job *j, uint8_t *body, double w,
			uint64_t *segs_off);
/* PUT /model as .npz: bytes its body buffer holds past the body (inflated members). */
uint64_t rt__api_np_model_room(const struct rt_job *j);
/* PUT /model's .npz body into @data (float32, schema order); 0 or a status, @msg filled. */
int rt__api_np_model(struct rt_conn *c, const struct rt_job *j, float *data, char *msg,
		     size_t cap);
/* The enum rt_model_fmt Accept @accept picks among those @j's model has (raw f32 only if
 * @raw_ok: rt__api_model_raw_ok()), or -1 (406). */
int rt__api_model_pick(const char *accept, bool raw_ok);
/* Whether raw f32 can carry @j's model (not frl's int32 ranking, not flora's I32 ranks). */
bool rt__api_model_raw_ok(const struct rt_job *j);
/* The request's Accept takes one of @j's model formats; else a 406 answered: false. */
bool rt__api_model_acceptable(struct rt_conn *c, const struct rt_job *j);
/* @b as the npz or raw form Accept picked (new blob, *ctype); NULL when answered. */
struct trib_blob *rt__api_model_convert(struct rt_conn *c, const struct rt_job *j,
					const struct trib_blob *b, const char **ctype);
/* rt_api_update.c */
/*
 * A parsed upload @st (released here; data offsets relative to @body, the slot) matched to
 * @j's schema (F32 or compressed), every value checked, one segment per schema tensor into
 * @segs. @label names the format in messages. Returns 0, or -1 when answered (rejected).
 */
struct trib_st;
struct shm_seg;
int rt__api_st_fill(struct rt_conn *c, struct rt_job *j, uint8_t *body, double w,
		    struct shm_seg *segs, struct trib_st *st, const char *label);
/* rt_api_sparse.c: whether @st names a sparse tensor (<name>.indices or <name>.values that is
 * not itself one of @j's tensors). */
bool rt__api_st_sparse(const struct rt_job *j, const struct trib_st *st);
/*
 * A body with sparse tensors (@st, consumed): each `<name>.indices` + `<name>.values` pair
 * checked against schema tensor <name> (I32/I64 flat indices, strictly increasing, in range;
 * F32 values of the same length, finite and bounded), the dense rest as rt__api_st_fill()
 * takes it; a 422 naming the tensor otherwise, and for a job whose rule is not a weighted
 * mean. The sparse records (struct shm_sparse) are written at *segs_off and the segment
 * table (one per schema tensor) after them, at the new *segs_off. 0, or -1 when answered.
 */
int rt__api_sparse_fill(struct rt_conn *c, struct rt_job *j, uint8_t *body, double w,
			uint64_t *segs_off, struct trib_st *st, const char *label);
/*
 * rt_api_frl.c. frl_fill: rt__api_st_fill for an frl job: every schema tensor an I32
 * permutation (fn_frl_check), one segment each; @st is freed. 0, or -1 answered (422 naming the
 * tensor and, for a bad entry, its index). frl_admit: an frl update's Content-Type (raw f32 is
 * refused, 415); false answered. frl_model_form: GET /model's form @fmt for the job (raw f32
 * is not an frl model: 406); false answered.
 */
int rt__api_frl_fill(struct rt_conn *c, struct rt_job *j, uint8_t *body, struct shm_seg *segs,
		     struct trib_st *st, const char *label);
bool rt__api_frl_admit(struct rt_conn *c, const struct rt_job *j);
bool rt__api_frl_model_form(struct rt_conn *c, const struct rt_job *j, int fmt);
/*
 * rt_api_flora.c: a flora job's update (@st parsed, freed here): each pair's a and b checked and
 * pointed at the client's slot of the stacks (rt_flora_nsegs() segments). 0, or -1 answered.
 */
int rt__api_flora_fill(struct rt_conn *c, struct rt_job *j, uint8_t *body, double w,
		       struct shm_seg *segs, struct trib_st *st, const char *label);
/* rt_api_flora.c: a flora job's pairs (and the stacks' size) checked, the schema extended. */
int rt__api_def_flora(json_t *doc, struct rt_job_def *def, uint32_t S, size_t arena_size,
		      char *msg, size_t cap);
/* Segments an update's slot makes room for: one per tensor, or a flora job's rt_flora_nsegs(). */
uint64_t rt__api_segs_max(const struct rt_job *j);
/*
 * Every one of the @n values at @x (enum shm_dtype @dtype) finite and |value| x @w at most
 * FN_FOLD_TERM_MAX (fn_fold.h; @w the fold weight, >= 1), or a 422 answered naming @tensor (may
 * be NULL) and the limit: -EDOM.
 */
int rt__api_check_values(struct rt_conn *c, const void *x, uint32_t dtype, uint64_t n, double w,
			 const char *tensor);
void rt__api_handle_update(struct rt_conn *c, struct rt_job *j);
/* --durability disk: parked updates whose wait is over (the tick), or @c freed (forget it). */
void rt__api_wal_tick(struct rt_api *api, uint64_t now);
void rt__api_wal_forget(struct rt_api *api, struct rt_conn *c);
/* rt_api_model.c */
void rt__api_handle_model_get(struct rt_conn *c, struct rt_job *j);
void rt__api_handle_model_put(struct rt_conn *c, struct rt_job *j);
/* A parked long poll is woken (model ready) or timed out: answer it. */
void rt__api_on_wake(struct rt_conn *c, bool timed_out);
/* rt_api_task.c: GET /task; the spec's client_config and selection; an update's task */
void rt__api_handle_task(struct rt_conn *c, struct rt_job *j);
int rt__api_def_task(json_t *o, struct rt_job_def *def, bool clustered, char *msg, size_t cap);
/* rt_api_secagg.c: the job field "secagg" into def->spec.secagg (0 or 400 with @msg), after the
 * algorithm, clients_per_round, client_auth and the schema are parsed; and its status. */
int rt__api_def_secagg(json_t *o, struct rt_job_def *def, bool clustered, char *msg, size_t cap);
void rt__api_secagg_status(struct rt_node *n, struct rt_job *j, json_t *o);
/* rt_api_secagg_round.c. Each tick: secure rounds' stages end at their deadlines even if no
 * request comes. */
void rt__api_secagg_tick(struct rt_node *n);
/* Ends @j's secure round's stages that are complete or due; a round over is committed or fails. */
void rt__api_secagg_step(struct rt_node *n, struct rt_job *j);
/* One stage's deadline: the job's round_timeout_s, in ns. */
uint64_t rt__api_secagg_stage_ns(const struct rt_job *j);
/*
 * rt_api_secagg_check.c: a stage's body checked, each refusal naming the field, its value and
 * what is allowed in @msg. rt__sa_parse: a JSON object (duplicate keys refused) with only the
 * NULL-ended @known fields; 0 (*out owned) or -EINVAL / -ENOMEM with *status 400 / 500.
 * rt__sa_hex: @key of @o as exactly @n bytes of lowercase hex. rt__sa_index: a client index.
 * rt__sa_entry: @arr[@i] an object of the two @known fields; @path gets "arr[i].". The _why
 * functions: why the round refused a well-formed list (-EINVAL from rt_secagg_share/_unmask).
 */
struct rt_secagg;
int rt__sa_parse(const void *body, size_t len, const char *const *known, json_t **out, int *status,
		 char *msg, size_t cap);
int rt__sa_hex(const json_t *o, const char *key, const char *path, uint8_t *out, size_t n,
	       char *msg, size_t cap);
int rt__sa_index(const json_t *o, const char *key, const char *path, uint32_t *out, char *msg,
		 size_t cap);
int rt__sa_entry(const json_t *e, size_t i, const char *arr, const char *const *known, char *path,
		 size_t path_cap, char *msg, size_t cap);
void rt__sa_share_why(const struct rt_secagg *r, uint32_t u, const uint32_t *to, uint32_t cnt,
		      char *msg, size_t cap);
void rt__sa_unmask_why(const struct rt_secagg *r, uint32_t u, const uint32_t *v,
		       const uint8_t *const *share, uint32_t cnt, char *msg, size_t cap);
/*
 * rt_api_secagg_fast.c: the stage bodies and answers of the shapes honest clients use, without
 * jansson. rt__sa_fast_list: @body as {"@arr": [{"@ki": index, "@kh": hex of @each bytes}]},
 * 1 to @max entries, into @ix[] and @bytes (@max entries' room each); 0 with *@cnt, or -1 for
 * any other body (then the strict path of rt__sa_parse decides: it accepts every body this
 * accepts, with the same values). rt_sa_text: an answer's JSON text, in a buffer sized by its
 * maker; rt__sa_text_ok is false if it ran out (a bug: answered 500, never cut short).
 */
int rt__sa_fast_list(const void *body, size_t len, const char *arr, const char *ki,
		     const char *kh, size_t each, uint32_t max, uint32_t *ix, uint8_t *bytes,
		     uint32_t *cnt);
struct rt_sa_text {
	char *s;
	size_t len, cap;
};
int rt__sa_text_init(struct rt_sa_text *t, size_t cap);
void rt__sa_text_put(struct rt_sa_text *t, const char *s);
void rt__sa_text_hex(struct rt_sa_text *t, const uint8_t *p, size_t n);
bool rt__sa_text_ok(const struct rt_sa_text *t);
/*
 * rt_api_secagg.c's answers, for the GET stages (rt_api_secagg_get.c): rt__sa_who, @client's
 * index in @j's round in progress (UINT32_MAX: none); rt__sa_err an error, rt__sa_ok a 200
 * with @o (owned), rt__sa_refuse the state machine's refusal @err, rt__sa_gone "not in this
 * round" (410) or "no round" as HTTP in @res.
 */
uint32_t rt__sa_who(const struct rt_job *j, const char *client);
void rt__sa_err(struct rt_api_sa_res *res, int status, const char *msg, long long round,
		const char *extra);
void rt__sa_ok(struct rt_api_sa_res *res, json_t *o);
void rt__sa_refuse(struct rt_api_sa_res *res, struct rt_job *j, int err);
void rt__sa_gone(struct rt_api_sa_res *res, struct rt_job *j);
/* GET .../secagg/@what for @client: as text (@text: a local connection's) or JSON, in @res. */
void rt__sa_get(struct rt_job *j, const char *client, const char *what, bool text,
		struct rt_api_sa_res *res);
/* /v1/jobs/{job}/secagg/..., and a secagg job's /updates (@slash: from "/secagg" or "/updates"). */
void rt__api_handle_secagg(struct rt_conn *c, struct rt_job *j, const char *slash,
			   enum http_method m);
void rt__api_task_status(const struct rt_node *n, const struct rt_job *j, json_t *o);
bool rt__api_task_admit(struct rt_conn *c, struct rt_job *j, uint32_t round);
/* rt_api_round.c: /rounds, /rounds/{r}, /evaluations (@slash: "/rounds..." or "/evaluations") */
struct rt_cmetrics;
void rt__api_handle_rounds(struct rt_conn *c, struct rt_job *j, const char *slash,
			   enum http_method m);
/* X-Tributary-Metrics into *m (m->n = 0 without it); false: a 400 answered. */
bool rt__api_metrics_parse(struct rt_conn *c, struct rt_cmetrics *m);
/* The job status's "evaluation" (the latest evaluated version, or null) into @o. */
void rt__api_eval_status(struct rt_node *n, struct rt_job *j, json_t *o);
/* /metrics: tributary_eval_metric and tributary_eval_samples_total (@names: job names). */
void rt__api_eval_metrics(struct rt_node *n, bool names, char *buf, size_t *len, size_t cap);
/* rt_api_lifecycle.c */
/*
 * "num_rounds" of a job spec into *@num_rounds (0 absent); 0 or 400 with @msg. A cluster
 * takes it too: its controller counts no update after the last round (ctl__on_accept).
 */
int rt__api_life_parse(json_t *o, uint32_t *num_rounds, char *msg, size_t cap);
/* "state" and "num_rounds" into a job's status @o. */
void rt__api_life_json(json_t *o, const struct rt_job *j);
/*
 * An update of @j that the job's state refuses: deleted (404), done (410),
 * paused (503 + Retry-After; not once @body_read: it was admitted before);
 * true when answered.
 */
bool rt__api_life_refuse(struct rt_conn *c, const struct rt_job *j, bool body_read);
void rt__api_handle_delete(struct rt_conn *c, struct rt_job *j);
void rt__api_handle_pause(struct rt_conn *c, struct rt_job *j, bool pause);
/* rt_api.c: the long polls parked on deleted @j are answered 404. */
void rt__api_unpark_job(struct rt_api *api, struct rt_job *j);
/* rt_api_metrics.c */
void rt__api_handle_functions(struct rt_conn *c);
void rt__api_handle_metrics(struct rt_conn *c);
void rt__api_handle_ui(struct rt_conn *c, const char *path); /* rt_api_ui.c */

#endif
