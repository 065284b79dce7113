#!/bin/sh
# Regenerates every figure in docs/figures/ops (see docs/operators.md).
set -eu
A=${AELAB:-.venv/bin/aelab}
OUT=docs/figures/ops
$A ops matrix --length 7 --kernel 3 --out $OUT/matrix-7-k3.png
$A ops matrix --length 7 --kernel 3 --stride 2 --out $OUT/matrix-7-k3-s2.png
$A ops artefacts --kernel 4 --stride 3 --out-dir $OUT
$A ops artefacts --kernel 4 --stride 2 --out-dir $OUT
for s in 1 2; do
  $A ops frames --stride $s --out-dir $OUT/frames
  $A ops frames --stride $s --transposed --out-dir $OUT/frames
done
