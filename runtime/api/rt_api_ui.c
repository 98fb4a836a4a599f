// SPDX-License-Identifier: MIT
/*
 * GET /ui: the operator's live page (issue 18). Its html, script and style are
 * compiled into the binary (runtime/api/ui/, scripts/embed-ui-assets.py); the
 * page itself holds no data: it polls the same JSON endpoints as any client,
 * with the token the operator types, so it sees exactly what that token may
 * see. The page needs no token and reveals nothing: anyone may load it
 * (/ui/node.json says only whether this node is part of a cluster).
 */
#include "api_priv.h"

#include <string.h>

#include "rt_api_ui_assets.h"

/*
 * Why each header: the script and style come only from this origin, never
 * inline, so an injected string (a job name, an error text) cannot run; the
 * page talks only to this origin; it may not be framed (clickjacking on the
 * token field); nothing is cached (a shared proxy must not keep a page a
 * token shaped) and no Referer carries the URL off the page.
 */
#define UI_HEADERS                                                                            \
	"Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; "  \
	"connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "     \
	"frame-ancestors 'none'\r\n"                                                          \
	"X-Content-Type-Options: nosniff\r\n"                                                 \
	"X-Frame-Options: DENY\r\n"                                                           \
	"Referrer-Policy: no-referrer\r\n"                                                    \
	"Cross-Origin-Opener-Policy: same-origin\r\n"                                         \
	"Cross-Origin-Resource-Policy: same-origin\r\n"                                       \
	"Cache-Control: no-store\r\n"

/* @path starts with "/ui". */
void rt__api_handle_ui(struct rt_conn *c, const char *path)
{
	const char *name;

	if (c->req.method != HTTP_GET) {
		rt_conn_error(c, 405, "method not allowed here (GET /ui)", -1, NULL);
		return;
	}
	if (!strcmp(path, "/ui/node.json")) {
		/* Whether to ask /v1/cluster: a single node would answer 404 to every poll. */
		const char *b = API(c)->clustered ? "{\"clustered\":true}" : "{\"clustered\":false}";

		rt_conn_respond(c, 200, "application/json", b, strlen(b), UI_HEADERS);
		return;
	}
	if (!strcmp(path, "/ui") || !strcmp(path, "/ui/"))
		name = "index.html";
	else if (!strncmp(path, "/ui/", 4))
		name = path + 4;
	else
		name = "";
	for (const struct rt_ui_asset *a = rt_ui_assets; a->name; a++) {
		if (!strcmp(a->name, name)) {
			rt_conn_respond(c, 200, a->ctype, a->data, a->len, UI_HEADERS);
			return;
		}
	}
	rt_conn_error(c, 404, "no such file under /ui", -1, UI_HEADERS);
}
