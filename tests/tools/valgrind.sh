#!/usr/bin/env bash
# make valgrind: redis-server (Debian's) under valgrind memcheck with the module
# loaded, a short mixed workload (the fuzzer's driver in tests/fuzz.rs, default
# config then inval-sync-max 0, with FETCH waiters, DEBUG RELOAD, DUMP/RESTORE),
# SHUTDOWN, then the valgrind log is read: any "Invalid read/write" or
# "definitely lost" record whose stack mentions tcache (or the redis_module
# crate, linked into libtcache) fails the target. Known open leaks are listed
# in tests/tools/valgrind-known.supp (counted as "suppressed").
#
# env: REDIS_SERVER (default /usr/bin/redis-server), TCACHE_MODULE (default
# target/release/libtcache.so), VALGRIND_COMMANDS (commands per configuration,
# default 5000), TCACHE_FUZZ_SEED (replay).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
server=${REDIS_SERVER:-/usr/bin/redis-server}
module=${TCACHE_MODULE:-$root/target/release/libtcache.so}
commands=${VALGRIND_COMMANDS:-5000}
command -v valgrind >/dev/null || { echo "valgrind not found (make deps)"; exit 1; }
command -v redis-cli >/dev/null || { echo "redis-cli not found (make deps)"; exit 1; }
[ -f "$module" ] || { echo "module $module not found (make build)"; exit 1; }

# Build the driver first, so that nothing compiles while valgrind runs.
(cd "$root" && cargo test --release --test fuzz --no-run -q 2>&1 | tail -3)

mkdir -p "$root/target"
dir=$(mktemp -d "$root/target/valgrind.XXXXXX")
vg=""
cleanup() {
	if [ -n "$vg" ] && kill -0 "$vg" 2>/dev/null; then kill -9 "$vg" 2>/dev/null || true; fi
}
trap cleanup EXIT

# A free loopback port: nothing answers on it.
free_port() {
	local p
	for _ in $(seq 50); do
		p=$((20000 + RANDOM % 30000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
	done
	echo "no free port found" >&2
	return 1
}

# Starts the server under valgrind (with the module, or "without-module" for
# the control run) and waits for PONG. Returns 0 when up,
# 2 when the port was taken in between (the caller retries on another one),
# 3 when valgrind cannot run the server on this machine (an instruction its
# CPU emulation does not know: nothing to do with the module), 1 otherwise.
start_server() {
	local load=(--loadmodule "$module")
	[ "${1:-}" = "without-module" ] && load=()
	rm -f "$dir"/valgrind.*.log "$dir/server.log" "$dir/stdio.log"
	port=$(free_port) || return 1
	valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite \
		--errors-for-leak-kinds=definite --num-callers=40 \
		--suppressions="$root/tests/tools/valgrind-known.supp" \
		--soname-synonyms=somalloc='libjemalloc.so*' \
		--log-file="$dir/valgrind.%p.log" \
		"$server" --port "$port" --bind 127.0.0.1 --dir "$dir" --save "" --appendonly no \
		--enable-debug-command yes --logfile "$dir/server.log" \
		"${load[@]}" >"$dir/stdio.log" 2>&1 </dev/null &
	vg=$!
	# Start-up under valgrind takes a while (the module's debug info is large).
	local deadline=$((SECONDS + 300))
	until [ "$(redis-cli -p "$port" ping 2>/dev/null)" = "PONG" ]; do
		if ! kill -0 "$vg" 2>/dev/null; then
			wait "$vg" || true
			echo "valgrind/redis-server exited during start-up (port $port); its logs:"
			for f in "$dir/stdio.log" "$dir/server.log" "$dir"/valgrind.*.log; do
				[ -f "$f" ] && { echo "== $f"; tail -n 40 "$f"; }
			done
			if grep -qs 'Address already in use' "$dir/server.log"; then return 2; fi
			if grep -qs 'unhandled instruction bytes' "$dir"/valgrind.*.log; then return 3; fi
			return 1
		fi
		if [ $SECONDS -gt $deadline ]; then echo "server under valgrind did not start in 300 s"; return 1; fi
		sleep 0.5
	done
}

start=$(date +%s)
for attempt in 1 2 3; do
	rc=0
	start_server || rc=$?
	[ "$rc" = 0 ] && break
	if [ "$rc" = 3 ]; then
		echo "valgrind: SKIPPED: valgrind $(valgrind --version) cannot emulate an instruction this machine's server or libc uses (see the log above); the module was not checked"
		exit 0
	fi
	if [ "$rc" = 1 ]; then
		# Does valgrind run this server at all here, without the module?
		echo "valgrind: control start without the module:"
		crc=0
		start_server without-module || crc=$?
		cleanup
		if [ "$crc" = 0 ]; then echo "valgrind: the server runs without the module, so the module is at fault"; exit 1; fi
		if [ "$crc" = 1 ] || [ "$crc" = 3 ]; then
			echo "valgrind: SKIPPED: valgrind cannot run $server on this machine even without the module (logs above); the module was not checked"
			exit 0
		fi
	fi
	if [ "$attempt" = 3 ]; then exit 1; fi
	echo "valgrind: retrying on another port"
done
echo "valgrind: server up on port $port after $(( $(date +%s) - start )) s (logs in $dir)"

driver=0
(cd "$root" && TCACHE_FUZZ_PORT=$port TCACHE_FUZZ_COMMANDS=$commands \
	cargo test --release --test fuzz valgrind_workload_driver -- --ignored --exact --nocapture \
	>"$dir/driver.log" 2>&1) || driver=1
grep -E '^fuzz\[|^test |panicked|test result' "$dir/driver.log" || true
redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
deadline=$((SECONDS + 300))
while kill -0 "$vg" 2>/dev/null; do
	if [ $SECONDS -gt $deadline ]; then echo "valgrind did not exit in 300 s after SHUTDOWN"; exit 1; fi
	sleep 0.5
done
wait "$vg" || true
trap - EXIT

# One record per blank-line-separated block of a valgrind log.
awk '
	{ sub(/^==[0-9]+== ?/, "") }
	/^$/ { flush(); next }
	{ block = block $0 "\n"; if (head == "") head = $0 }
	function flush() {
		if (head ~ /^Invalid (read|write)/) { invalid++; if (block ~ /tcache|redis_module::/) { bad++; print "---\n" block } }
		else if (head ~ /definitely lost in loss record/) { lost++; if (block ~ /tcache|redis_module::/) { bad++; print "---\n" block } }
		else if (head ~ /^(Conditional jump|Use of uninitialised|Syscall param|Mismatched free|Invalid free|Source and destination overlap|Argument)/) {
			kind = head; sub(/ at 0x.*/, "", kind); others[kind]++
			if (block ~ /tcache/) { other_tcache[kind]++ }
		}
		block = ""; head = ""
	}
	/ERROR SUMMARY/ { summary = $0 }
	END {
		flush()
		printf "valgrind: %d invalid reads/writes, %d definitely-lost records in all; %d involving tcache\n", invalid, lost, bad
		for (k in others) printf "valgrind: other: %s (%d records, %d with tcache in the stack)\n", k, others[k], other_tcache[k]
		if (summary != "") print "valgrind: " summary
		exit bad > 0 ? 1 : 0
	}
' "$dir"/valgrind.*.log || { echo "valgrind: errors in libtcache (logs kept in $dir)"; exit 1; }
echo "valgrind: took $(( $(date +%s) - start )) s in all"
if [ "$driver" != 0 ]; then
	echo "valgrind: the workload failed (driver log and server logs kept in $dir):"
	tail -40 "$dir/driver.log"
	exit 1
fi
if [ -z "${VALGRIND_KEEP:-}" ]; then rm -rf "$dir"; else echo "valgrind: logs kept in $dir"; fi
