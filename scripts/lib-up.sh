# SPDX-License-Identifier: MIT
# Sourced by the demo and the benchmarks: one `tributary up` in a temporary directory, started,
# waited for, and always stopped (a trap), so no script leaves a server or a directory behind.
#
#   . scripts/lib-up.sh
#   up_init NAME            make $dir (/tmp/tributary-NAME.XXXXXX) and the cleanup trap
#   up_start BUILD [ARGS]   start BUILD/tributary up with ARGS; sets $pid, $port, $url, $admin
#   up_stop                 SIGTERM and wait; returns the server's exit status
# The server's stderr goes to $dir/up.log.

up_init() {
	dir=$(mktemp -d "/tmp/tributary-$1.XXXXXX")
	pid=""
	trap up_cleanup EXIT INT TERM
}

up_cleanup() {
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid"
		wait "$pid" 2>/dev/null
	fi
	rm -rf "$dir"
}

up_start() {
	_build=$1
	shift
	rm -rf "$dir/data" "$dir/port"
	"$_build/tributary" up --listen 127.0.0.1:0 --port-file "$dir/port" \
		--data-dir "$dir/data" "$@" 2>"$dir/up.log" &
	pid=$!
	_i=0
	# Up to 30 s: reserving and populating huge pages for a large arena takes a while.
	while [ ! -s "$dir/port" ]; do
		_i=$((_i + 1))
		if [ $_i -gt 300 ] || ! kill -0 "$pid" 2>/dev/null; then
			echo "tributary up did not start:" >&2
			cat "$dir/up.log" >&2
			return 1
		fi
		sleep 0.1
	done
	port=$(cat "$dir/port")
	url="http://127.0.0.1:$port"
	admin=$(cat "$dir/data/admin-token")
}

up_stop() {
	kill -TERM "$pid"
	wait "$pid"
	_rc=$?
	pid=""
	return $_rc
}
