package dev.distillery.runtime;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayDeque;
import java.util.HashMap;
import java.util.Map;

import dev.distillery.kernels.DType;
import dev.distillery.kernels.Kernels;

/**
 * One native block for a step's activations and their gradients, bump-allocated during the step
 * and {@link #reset()} after it (llm.c's design): nothing is allocated in a steady training loop.
 *
 * <p>The block's size is learnt, not guessed: when a step needs more than the block holds, the
 * overflow is served from a side arena and the high-water mark is recorded; the next
 * {@link #reset()} frees the side arena and replaces the block with one of the high-water size.
 * From the second step of a fixed-shape loop on, every allocation is a pointer bump.
 *
 * <p>The overflow comes in slabs of at least {@value #SLAB_BYTES} bytes rather than one allocation
 * per tensor: glibc serves allocations below its (adaptive) mmap threshold from its heap and keeps
 * them resident after they are freed, so a first step's hundreds of tensor-sized overflows would
 * stay in the process' memory beside the block that replaces them.
 *
 * <p>A segment that is dead before the step ends (an activation's gradient once the op that made
 * the activation has run its backward) can be {@link #release released}; the next request of the
 * same size takes it instead of fresh memory, so a backward pass needs about one layer's
 * gradients at a time, not all of them.
 *
 * <p>The block lives where the kernels compute (host memory on the CPU, one device allocation on
 * CUDA). Segments handed out are 64-byte aligned and invalid after the next {@code reset()}.
 */
public final class Workspace implements AutoCloseable {

    private static final long ALIGN = 64;
    private static final long SLAB_BYTES = 64L << 20;

    private final Kernels kernels;
    private final Device device;
    private Arena blockArena;
    private MemorySegment block;
    private long offset;
    private Arena overflowArena;
    private MemorySegment slab;
    private long slabOffset;
    private long overflowBytes;
    private final Map<Long, ArrayDeque<MemorySegment>> released = new HashMap<>();
    private long highWater;
    private int growths;
    private boolean poison;

    public Workspace(Kernels kernels, long initialBytes) {
        this.kernels = kernels;
        this.device = Device.of(kernels);
        allocateBlock(Math.max(ALIGN, initialBytes));
    }

    private void allocateBlock(long bytes) {
        blockArena = Arena.ofShared();
        block = kernels.allocate(blockArena, bytes);
    }

    /**
     * From now on every segment handed out is filled with NaN first: for tests, so that a reader of
     * memory that nothing wrote this step (a gradient assumed zero) shows in its results.
     */
    public Workspace poisonAllocations() {
        poison = true;
        return this;
    }

    /** A 64-byte-aligned region of at least {@code bytes}; contents are undefined. */
    public MemorySegment allocate(long bytes) {
        MemorySegment s = take(bytes);
        if (poison) kernels.fill(s, Float.NaN, bytes / Float.BYTES);
        return s;
    }

    private MemorySegment take(long bytes) {
        ArrayDeque<MemorySegment> free = released.get(bytes);
        if (free != null && !free.isEmpty()) return free.pop();
        long size = Math.max(ALIGN, (bytes + ALIGN - 1) / ALIGN * ALIGN);
        if (overflowBytes == 0 && offset + size <= block.byteSize()) {
            MemorySegment s = block.asSlice(offset, bytes);
            offset += size;
            highWater = Math.max(highWater, offset);
            return s;
        }
        // Past the block: serve from slabs of the side arena, remember how much the step really needed.
        if (overflowArena == null) overflowArena = Arena.ofShared();
        if (slab == null || slabOffset + size > slab.byteSize()) {
            slab = kernels.allocate(overflowArena, Math.max(SLAB_BYTES, size));
            slabOffset = 0;
        }
        MemorySegment s = slab.asSlice(slabOffset, bytes);
        slabOffset += size;
        overflowBytes += size;
        highWater = Math.max(highWater, offset + overflowBytes);
        return s;
    }

    /**
     * Gives back a segment of this step that nothing reads any more: a later {@link #allocate} of
     * exactly its size takes it. The caller must hold no other reference that it still uses.
     */
    public void release(MemorySegment segment) {
        released.computeIfAbsent(segment.byteSize(), k -> new ArrayDeque<>()).push(segment);
    }

    /** An uninitialised fp32 tensor. */
    public Tensor tensor(String name, int... shape) {
        return tensor(name, DType.F32, shape);
    }

    public Tensor tensor(String name, DType dtype, int... shape) {
        return new Tensor(name, shape, dtype, device, allocate(Tensor.numel(shape) * dtype.bytes()), false);
    }

    /** A zero-filled fp32 tensor (gradients start here). */
    public Tensor zeros(String name, int... shape) {
        Tensor t = tensor(name, shape);
        kernels.fill(t.data(), 0f, t.numel());
        return t;
    }

    /** The allocation point now (bytes handed out since the last reset): {@link #rewind} to it frees what was handed out since. */
    public long mark() {
        return offset + overflowBytes;
    }

    /**
     * Frees what was handed out since {@code mark} (a forward pass that needs no backward drops
     * each block's activations). What came from the side arena past an overflow stays allocated
     * until the next {@link #reset()}, but counts as freed, so the block that reset makes is sized
     * for the peak of the rewound pass, not for the sum of its blocks.
     */
    public void rewind(long mark) {
        if (mark < 0 || mark > offset + overflowBytes) throw new IllegalArgumentException("mark " + mark + " is past the allocation point");
        released.clear();   // a released segment may lie past the mark, where the next bump hands it out again
        if (mark <= offset) {
            offset = mark;
            overflowBytes = 0;
        } else {
            overflowBytes = mark - offset;
        }
    }

    /** Frees everything handed out since the last reset; grows the block if the step overflowed. */
    public void reset() {
        released.clear();
        if (overflowArena != null) {
            overflowArena.close();
            overflowArena = null;
            slab = null;
            overflowBytes = 0;
            blockArena.close();
            allocateBlock(highWater);
            growths++;
        }
        offset = 0;
    }

    /** Bytes of the current block. */
    public long capacity() {
        return block.byteSize();
    }

    /** Most bytes any step has needed so far. */
    public long highWater() {
        return highWater;
    }

    /** How many times the block was replaced by a larger one. */
    public int growths() {
        return growths;
    }

    @Override
    public void close() {
        if (overflowArena != null) overflowArena.close();
        blockArena.close();
    }
}
