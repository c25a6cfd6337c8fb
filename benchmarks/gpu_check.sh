#!/usr/bin/env bash
# One GPU session: correctness of the Lyapunov engine on the accelerator, then the
# benchmark table. Usage on the device machine: bash benchmarks/gpu_check.sh OUTDIR
set -u
out=${1:-/tmp}
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
nvidia-smi -L
python3 -c "import jax, equinox, diffrax, optimistix; print('jax', jax.__version__, jax.devices())"
timeout 150 python3 -m pytest -q -x -p no:cacheprovider -m "not slow" -k "not shard" \
  tests/test_lyapunov.py tests/test_lyapunov_tools.py tests/test_trajectory.py 2>&1 | tee "$out/gpu_tests.log" | tail -15
timeout 150 python3 benchmarks/lyapunov.py --skip dysts,jitcode --repeats 3 \
  2>&1 | tee "$out/gpu_bench.log"
timeout 120 python3 benchmarks/lyapunov.py --skip dysts,jitcode,lorenz,partial --repeats 3 \
  --rrn-d 4000 --sweep-n 4096 2>&1 | tee "$out/gpu_bench_large.log"
