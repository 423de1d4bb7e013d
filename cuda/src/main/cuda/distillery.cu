// The one translation unit nvcc builds into distillery.fatbin (the jar resource
// dev/distillery/cuda/distillery.fatbin): every kernel file of this folder. Each file also
// compiles on its own under the CPU emulation gate (cuda/src/test/emulation).
#include "distill_loss.cu"
#include "transformer_ops.cu"
