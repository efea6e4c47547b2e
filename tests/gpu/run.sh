#!/bin/bash
# GPUs in sandboxes on a host that has an NVIDIA GPU and its driver (not
# part of `make check`: run by hand, as root, from the repository):
#
#   tests/gpu/run.sh [path/to/sbx]
#
# Starts a server on a free port, creates a sandbox with one GPU, and checks
# that nvidia-smi lists exactly that GPU inside it and that CUDA (through
# the driver's libcuda, with ctypes) can allocate memory on it; then that a
# second exclusive request for the same GPU is refused while the first
# holds it.
set -euo pipefail
SBX=${1:-build/sbx}
dir=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$dir"' EXIT

"$SBX" check | grep -E '^ *GPU' || { echo "sbx check lists no GPU"; exit 1; }
"$SBX" serve --listen 127.0.0.1:0 --port-file "$dir/port" \
	--state-dir "$dir/state" >"$dir/log" 2>&1 &
pid=$!
for _ in $(seq 100); do [ -s "$dir/port" ] && break; sleep 0.1; done
url=http://127.0.0.1:$(cat "$dir/port")

post() { curl -sS -X POST -H 'Content-Type: application/json' -d "$2" "$url$1"; }
field() { python3 -c 'import json,sys; print(json.load(sys.stdin)'"$1"')'; }

curl -sS "$url/v1/health" | field '["gpus"]'
id=$(post /v1/sandboxes '{"gpus": [0]}' | field '["id"]')
echo "sandbox $id"

out=$(post "/v1/sandboxes/$id/exec" '{"cmd": "nvidia-smi -L"}')
echo "$out" | field '["stdout"]'
[ "$(echo "$out" | field '["stdout"]' | grep -c '^GPU ')" = 1 ] ||
	{ echo "FAIL: nvidia-smi does not list exactly one GPU"; exit 1; }

cuda='import ctypes
cuda = ctypes.CDLL("libcuda.so.1")
assert cuda.cuInit(0) == 0, "cuInit"
n = ctypes.c_int()
assert cuda.cuDeviceGetCount(ctypes.byref(n)) == 0 and n.value == 1, n.value
dev, ctx, ptr = ctypes.c_int(), ctypes.c_void_p(), ctypes.c_uint64()
assert cuda.cuDeviceGet(ctypes.byref(dev), 0) == 0
assert cuda.cuCtxCreate_v2(ctypes.byref(ctx), 0, dev) == 0, "context"
assert cuda.cuMemAlloc_v2(ctypes.byref(ptr), 64 << 20) == 0, "alloc"
assert cuda.cuMemFree_v2(ptr) == 0
print("cuda ok")'
body=$(python3 -c 'import json,sys; print(json.dumps({"argv": ["python3", "-c", sys.argv[1]]}))' "$cuda")
out=$(post "/v1/sandboxes/$id/exec" "$body")
echo "$out" | field '["stdout"]'
[ "$(echo "$out" | field '["stdout"]')" = "cuda ok" ] ||
	{ echo "FAIL: CUDA allocation: $(echo "$out" | field '["stderr"]')"; exit 1; }

code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -d '{"gpus": [0]}' \
	"$url/v1/sandboxes")
[ "$code" = 409 ] || { echo "FAIL: a second holder of GPU 0 got $code"; exit 1; }
curl -sS -X DELETE "$url/v1/sandboxes/$id" >/dev/null
echo "PASS"
