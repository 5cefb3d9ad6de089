#!/bin/bash
# time from exec of `passbridge run` (demo) to the first 200 on /healthz
bin=$(realpath "${PASSBRIDGE:-bin/passbridge}"); d=$(mktemp -d); cd "$d"
s=$(date +%s%N)
"$bin" run --listen 127.0.0.1:18080 >/dev/null 2>&1 &
pid=$!
until curl -sf -o /dev/null http://127.0.0.1:18080/healthz; do sleep 0.005; done
e=$(date +%s%N)
echo "$(( (e-s)/1000000 )) ms"
kill -TERM $pid; wait $pid; echo "exit $?"; rm -rf $d
