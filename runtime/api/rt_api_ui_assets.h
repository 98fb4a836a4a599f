// SPDX-License-Identifier: MIT
/* The /ui page's files, compiled in by scripts/embed-ui-assets.py (rt_api_ui_assets.c). */
#ifndef RT_API_UI_ASSETS_H
#define RT_API_UI_ASSETS_H

#include <stddef.h>

struct rt_ui_asset {
	const char *name;          /* served at /ui/<name>; NULL ends the table */
	const char *ctype;         /* Content-Type */
	const unsigned char *data;
	size_t len;
};

extern const struct rt_ui_asset rt_ui_assets[];

#endif
