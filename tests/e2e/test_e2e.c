// SPDX-License-Identifier: MIT
/* End-to-end scenarios: each test runs one script against a real `tributary up`, wanting exit 0. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "trib_alloc.h"
#include "trib_run.h"

/*
 * Environment, set by tests/e2e/meson.build:
 *   TRIBUTARY_BIN, TRIBUTARY_FN_BIN  the built binaries
 *   E2E_SRC_DIR                      where the scenario scripts are
 *   E2E_PYTHON                       an interpreter with numpy (default /usr/bin/python3)
 */
#define SCRIPT_TIMEOUT_S 170

/*
 * Run @script (.py or .sh, in E2E_SRC_DIR) with the server on data plane
 * @mode (NULL: the server's default); unless it exits 0, print its output and fail.
 */
static void run_script_on(const char *script, const char *mode)
{
	const char *dir = getenv("E2E_SRC_DIR");
	const char *py = getenv("E2E_PYTHON");
	const char *bin = getenv("TRIBUTARY_BIN");
	bool is_sh = strlen(script) > 3 && !strcmp(script + strlen(script) - 3, ".sh");
	char path[4096], tmo[16], envmode[64];
	const char *env[] = { mode ? envmode : NULL, NULL };
	const char *argv[3];
	struct trib_run_opts o = { .timeout_s = tmo, .env = env };
	char *out = NULL;
	int status = 0, err;

	cr_assert(dir && bin, "TRIBUTARY_BIN and E2E_SRC_DIR must be set (run it by meson test)");
	if (!py || !*py)
		py = "/usr/bin/python3";
	cr_assert(access(bin, X_OK) == 0, "no tributary binary at %s", bin);
	cr_assert((size_t)snprintf(path, sizeof(path), "%s/%s", dir, script) < sizeof(path));
	cr_assert(access(path, R_OK) == 0, "no script %s", path);
	snprintf(tmo, sizeof(tmo), "%d", SCRIPT_TIMEOUT_S);
	if (mode)
		snprintf(envmode, sizeof(envmode), "TRIBUTARY_DATAPLANE=%s", mode);
	argv[0] = is_sh ? "/bin/bash" : py;
	argv[1] = path;
	argv[2] = NULL;
	err = trib_run(argv, &o, &out, &status);
	cr_assert(err == 0, "running %s: %s", script, strerror(-err));
	if (WIFEXITED(status) && WEXITSTATUS(status) == 77) {
		/* The script found a capability truly missing (not root, no ip): it says which. */
		char why[256];

		snprintf(why, sizeof(why), "%s skipped: %.200s", script, out ? out : "");
		trib_free(out);
		cr_skip_test("%s", why);
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr,
			"===== %s failed (%s %d); its output: =====\n%s\n===== end of %s =====\n",
			script, WIFEXITED(status) ? "exit status" : "signal",
			WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), out, script);
		fflush(stderr);
	}
	cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "%s failed (exit %d%s); its output is printed above", script,
		  WIFEXITED(status) ? WEXITSTATUS(status) : -1,
		  WIFEXITED(status) && WEXITSTATUS(status) == 124 ? ": timed out" : "");
	trib_free(out);
}

static void run_script(const char *script)
{
	run_script_on(script, NULL);
}

Test(e2e_basic, curl_updates_give_weighted_mean, .timeout = 200)
{
	run_script("basic.sh");
}

Test(e2e_errors, every_error_status_leaves_aggregate_unchanged, .timeout = 200)
{
	run_script("errors.py");
}

Test(e2e_errors, arena_full_gives_503_and_leaves_aggregate_unchanged, .timeout = 200)
{
	run_script("arena_full.py");
}

Test(e2e_rounds, fan_in_2_multi_round_with_long_poll, .timeout = 200)
{
	run_script("multiround.py");
}

Test(e2e_rounds, many_short_rounds_all_complete, .timeout = 200)
{
	run_script("stress_rounds.py");
}

Test(e2e_functions, processes_live_during_round_and_exit_after, .timeout = 200)
{
	run_script("fnproc.py");
}

Test(e2e_restart, jobs_tokens_rounds_and_models_survive, .timeout = 200)
{
	run_script("restart.py");
}

Test(e2e_model, put_starting_model_then_round, .timeout = 200)
{
	run_script("putmodel.py");
}

Test(e2e_http, keep_alive_and_pipelining, .timeout = 200)
{
	run_script("keepalive.py");
}

Test(e2e_dataplane, three_planes_give_bit_identical_models, .timeout = 200)
{
	run_script("dataplanes.py");
}

Test(e2e_dataplane, without_capability_falls_back_to_shm_unix_loudly, .timeout = 200)
{
	run_script("fallback.py");
}

Test(e2e_dataplane, basic_on_shm_unix, .timeout = 200)
{
	run_script_on("basic.sh", "shm+unix");
}

Test(e2e_dataplane, basic_on_tcp, .timeout = 200)
{
	run_script_on("basic.sh", "tcp");
}

Test(e2e_dataplane, multi_round_on_shm_unix, .timeout = 200)
{
	run_script_on("multiround.py", "shm+unix");
}

Test(e2e_dataplane, multi_round_on_tcp, .timeout = 200)
{
	run_script_on("multiround.py", "tcp");
}

Test(e2e_dataplane, errors_on_tcp, .timeout = 200)
{
	run_script_on("errors.py", "tcp");
}

Test(e2e_lifecycle, cold_start_warm_reuse_across_rounds_and_jobs_then_scale_to_zero, .timeout = 200)
{
	run_script("lifecycle.py");
}

Test(e2e_recovery, kill_9_of_leaf_top_and_warm_function_loses_no_update, .timeout = 200)
{
	run_script("recovery.py");
}

Test(e2e_recovery, kill_9_on_shm_unix, .timeout = 200)
{
	run_script_on("recovery.py", "shm+unix");
}

Test(e2e_recovery, kill_9_on_tcp, .timeout = 200)
{
	run_script_on("recovery.py", "tcp");
}

Test(e2e_deadline, closes_with_min_clients_waits_with_fewer_then_409, .timeout = 200)
{
	run_script("deadline.py");
}

Test(e2e_autoscale, leaves_grow_with_clients_and_load_then_back_to_zero, .timeout = 200)
{
	run_script("autoscale.py");
}

Test(e2e_algorithms, fedavg_variants_server_optimisers_clipping_and_dp, .timeout = 200)
{
	run_script("algorithms.py");
}

Test(e2e_algorithms, compressed_updates_dequantised_while_folding, .timeout = 200)
{
	run_script("compressed.py");
}

Test(e2e_algorithms, compressed_updates_on_tcp, .timeout = 200)
{
	run_script_on("compressed.py", "tcp");
}

Test(e2e_algorithms, fedbuff_async_versions_with_staleness_weights, .timeout = 200)
{
	run_script("fedbuff.py");
}

Test(e2e_algorithms, robust_rules_exact_and_inside_the_honest_range, .timeout = 200)
{
	run_script("robust.py");
}

Test(e2e_algorithms, robust_rules_on_shm_unix, .timeout = 200)
{
	run_script_on("robust.py", "shm+unix");
}

Test(e2e_lifecycle, round_larger_than_the_arena_completes, .timeout = 200)
{
	run_script("small_arena.py");
}

Test(e2e_restart, clean_stop_writes_the_full_round_in_flight, .timeout = 200)
{
	run_script("drain.py");
}

Test(e2e_http, random_and_near_valid_requests_crash_nothing_and_lose_nothing, .timeout = 200)
{
	run_script("fuzz_server.py");
}

Test(e2e_cluster, three_netns_nodes_locality_one_edge_per_node_and_a_killed_node, .timeout = 200)
{
	run_script("cluster.py");
}
