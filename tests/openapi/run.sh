#!/bin/sh
# SPDX-License-Identifier: MIT
# The OpenAPI document through tests/openapi/validate.js (@apidevtools/swagger-parser).
# Skips (77) only when node is not installed at all; no npm packages (run scripts/deps-openapi.sh)
# or an invalid document is a failure.
set -u
here=$(cd "$(dirname "$0")" && pwd)
if ! command -v node >/dev/null 2>&1; then
	echo "SKIP: no node (scripts/deps.sh --test installs it)"
	exit 77
fi
if [ ! -d "$here/node_modules/@apidevtools/swagger-parser" ]; then
	echo "FAIL: tests/openapi/node_modules has no @apidevtools/swagger-parser: run scripts/deps-openapi.sh"
	exit 1
fi
exec node "$here/validate.js" "$1"
