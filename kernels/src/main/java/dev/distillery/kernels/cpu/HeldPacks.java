package dev.distillery.kernels.cpu;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.function.Consumer;

import dev.distillery.kernels.Kernels.ConstantHold;

/**
 * The segments held constant ({@code Kernels.holdConstant}) for a GEMM that packs its B operand,
 * and the packs made of them: a B inside a held segment is packed once per (address, shape,
 * transpose) and reused until the hold closes. Shared by {@link Bf16Gemm} and {@link NativeF32Gemm},
 * which differ only in how a pack is laid out.
 */
final class HeldPacks {

    /** The bytes of op(B) (k, n) packed. */
    interface PackedBytes {
        long of(int k, int n);
    }

    /** op(B) (k, n) at address b packed into the bytes at address packed. */
    interface Pack {
        void into(boolean transB, int k, int n, long b, int ldb, boolean bBf16, long packed);
    }

    private final PackedBytes bytes;
    private final Pack packer;
    private final List<Held> held = new CopyOnWriteArrayList<>();

    HeldPacks(PackedBytes bytes, Pack packer) {
        this.bytes = bytes;
        this.packer = packer;
    }

    /** Which packed B a held segment keeps: one per slice and shape that the GEMMs read. */
    private record PackKey(long address, boolean transB, int k, int n, int ldb) {
    }

    /**
     * A held segment's bytes, and the packs made of it, freed together when the hold closes. The
     * arena is made with the first pack: a segment read only as A (a gradient read by two GEMMs)
     * keeps nothing and costs no arena.
     */
    private final class Held implements ConstantHold {
        final long start, end;
        private Arena arena;
        final Map<PackKey, MemorySegment> packs = new ConcurrentHashMap<>();

        Held(MemorySegment operand) {
            start = operand.address();
            end = start + operand.byteSize();
        }

        synchronized MemorySegment allocate(long bytes) {
            if (arena == null) arena = Arena.ofShared();
            return arena.allocate(bytes, 64);
        }

        @Override
        public synchronized void close() {
            if (held.remove(this) && arena != null) arena.close();
        }
    }

    /** Keeps the packs of B operands inside {@code operand} until the returned hold closes. */
    ConstantHold hold(MemorySegment operand) {
        Held h = new Held(operand);
        held.add(h);
        return h;
    }

    /** Whether op(B) lies inside a held segment, so that it is packed once and not at every call. */
    boolean holds(boolean transB, int k, int n, MemorySegment b, boolean bBf16, int ldb) {
        return holding(transB, k, n, b, bBf16, ldb) != null;
    }

    /** The hold op(B) lies inside, or null. */
    private Held holding(boolean transB, int k, int n, MemorySegment b, boolean bBf16, int ldb) {
        if (held.isEmpty() || k == 0 || n == 0) return null;
        long first = b.address(), last = first + (bBf16 ? 2L : 4L) * (transB ? (long) (n - 1) * ldb + k : (long) (k - 1) * ldb + n);
        for (Held h : held) {
            if (first >= h.start && last <= h.end) return h;
        }
        return null;
    }

    /** op(B) packed, when B lies inside a held segment (packed now if this slice and shape are new), else null. */
    MemorySegment pack(boolean transB, int k, int n, MemorySegment b, boolean bBf16, int ldb) {
        long first = b.address();
        return pack(transB, k, n, b, bBf16, ldb, bp -> packer.into(transB, k, n, first, ldb, bBf16, bp.address()));
    }

    /**
     * {@link #pack} with the packing done by {@code fill} into the segment it is given (the threads
     * of a pool, a share of the columns each, where {@link #pack} packs on the calling thread).
     */
    MemorySegment pack(boolean transB, int k, int n, MemorySegment b, boolean bBf16, int ldb, Consumer<MemorySegment> fill) {
        Held h = holding(transB, k, n, b, bBf16, ldb);
        if (h == null) return null;
        return h.packs.computeIfAbsent(new PackKey(b.address(), transB, k, n, ldb), key -> {
            MemorySegment bp = h.allocate(bytes.of(k, n));
            fill.accept(bp);
            return bp;
        });
    }

    /** op(B)'s pack where one was made already under a hold, else null: never packs. */
    MemorySegment packed(boolean transB, int k, int n, MemorySegment b, boolean bBf16, int ldb) {
        Held h = holding(transB, k, n, b, bBf16, ldb);
        return h == null ? null : h.packs.get(new PackKey(b.address(), transB, k, n, ldb));
    }
}
