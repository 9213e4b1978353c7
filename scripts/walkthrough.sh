#!/usr/bin/env bash
# The README's "Before you start: the whole path" walk-through on the shipped model: estimate, serve with an
# audit log, train with held-out evaluation and --act-bits, audit verify and match. Run from the repo root after
# npm ci; writes into the folder given (default /tmp/helora-walkthrough). Port 8470 must be free.
set -euo pipefail
W=${1:-/tmp/helora-walkthrough}; R=$PWD; mkdir -p "$W"
helora() { node "$R/dist/cli/main.js" "$@"; }
rm -rf $W/run1 $W/server-audit.jsonl $W/serve.log
node -e "import('$R/dist/train/gloss-demo.js').then((m) => { for (const r of m.glossRecords(m.demoGlosses(600, 0))) console.log(JSON.stringify({ prompt: r.prompt, completion: r.completion })); })" > $W/glosses.jsonl
echo '$ helora estimate --model models/helora-tiny --data glosses.jsonl --steps 8 --batch-tokens 1024'
helora estimate --model models/helora-tiny --data $W/glosses.jsonl --steps 8 --batch-tokens 1024
echo '$ helora serve --model models/helora-tiny --port 8470 --audit-log server-audit.jsonl &'
helora serve --model models/helora-tiny --port 8470 --audit-log $W/server-audit.jsonl > $W/serve.log 2>&1 &
SP=$!
for i in $(seq 1 120); do grep -q "listening" $W/serve.log && break; sleep 1; done
echo '$ helora train --server ws://127.0.0.1:8470 --model models/helora-tiny --data glosses.jsonl --out run1 --steps 8 --batch-tokens 1024 --lr 3e-3 --eval-split 0.1 --eval-every 4 --act-bits 5 --no-progress'
helora train --server ws://127.0.0.1:8470 --model models/helora-tiny --data $W/glosses.jsonl --out $W/run1 --steps 8 --batch-tokens 1024 --lr 3e-3 --eval-split 0.1 --eval-every 4 --act-bits 5 --no-progress 2>&1
kill $SP; wait $SP || true
echo '$ helora audit verify run1/audit.jsonl'
helora audit verify $W/run1/audit.jsonl
echo '$ helora audit match run1/audit.jsonl server-audit.jsonl'
helora audit match $W/run1/audit.jsonl $W/server-audit.jsonl
