package dev.distillery.kernels;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.util.Arrays;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/**
 * The k largest logits of a row in host memory, by id (ties to the lower id, NaN below every
 * number): for the CPU's sampler ({@code kernels.cpu.RowSampler}) and for code that selects
 * outside a kernel (a teacher dump's top k). One pass with the machine's vectors for a bound,
 * then a bounded heap over the blocks that can hold the top k (docs/KERNELS.md#sampling-a-token).
 */
public final class HostTopK {

    private static final VectorSpecies<Float> FLOATS = FloatVector.SPECIES_PREFERRED;
    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;
    /** Blocks a top-k id stands for in the first pass ({@link #ids}): about 4k blocks a row. */
    static final int BLOCKS_PER_ID = 4;
    /** {@link #byLogit} sorts this many ids or fewer by insertion. */
    private static final int INSERTION_MAX = 64;

    private HostTopK() {
    }

    /** Scratch for {@link #ids} with k ids. */
    public static float[] scratch(int k) {
        return new float[2 * BLOCKS_PER_ID * k];
    }

    /**
     * ids[0, n) reordered by logit, the largest first, ties to the lower id, NaN last: an insertion
     * sort up to {@value #INSERTION_MAX} ids (a top k's usual size), a merge sort past it.
     */
    public static void byLogit(MemorySegment x, long from, int[] ids, int n) {
        if (n > INSERTION_MAX) {
            Integer[] boxed = new Integer[n];
            for (int i = 0; i < n; i++) boxed[i] = ids[i];
            Arrays.sort(boxed, (a, b) -> worse(x, from, a, b) ? 1 : worse(x, from, b, a) ? -1 : 0);
            for (int i = 0; i < n; i++) ids[i] = boxed[i];
            return;
        }
        for (int i = 1; i < n; i++) {
            int id = ids[i], j = i;
            for (; j > 0 && worse(x, from, ids[j - 1], id); j--) ids[j] = ids[j - 1];
            ids[j] = id;
        }
    }

    /**
     * The ids of the k = heap.length largest of x[from, from + v) (ties to the lower id, NaN below
     * every number), into heap in ascending order; returns how many (k, or v when smaller). A
     * bounded heap whose root is the worst kept, offered the row's logits in id order: O(v log k)
     * at worst, and about k ln(v/k) of them get in after the first k on a row in random order,
     * each a sift whose branches depend on the logits. So a first pass takes the row in about
     * {@value #BLOCKS_PER_ID} k blocks and their maxima (NaN skipped): the k-th largest maximum,
     * tau, bounds the k-th largest logit from below (k blocks each hold a logit of at least tau),
     * so a block whose maximum is under tau holds no id of the top k and is passed over, and the
     * heap is filled only with logits of at least tau. Once the heap is full, a vector of logits
     * none of which beats the root is passed over whole, and of the others only the lanes above
     * the root are offered. Each id is looked at after every id below it, so one equal to the
     * root's never displaces it. scratch: {@link #scratch}(k).
     */
    public static int ids(MemorySegment x, long from, int v, int[] heap, float[] scratch) {
        int k = heap.length, lanes = FLOATS.length();
        int block = lanes * Math.max(1, (v + BLOCKS_PER_ID * k * lanes - 1) / (BLOCKS_PER_ID * k * lanes)), blocks = v / block;
        int size;
        if (blocks < 2 * k) {
            size = offerRange(x, from, heap, 0, 0, v, Float.NEGATIVE_INFINITY);
            Arrays.sort(heap, 0, size);
            return size;
        }
        for (int b = 0; b < blocks; b++) {
            FloatVector m = FloatVector.broadcast(FLOATS, Float.NEGATIVE_INFINITY);
            for (int j = b * block; j < (b + 1) * block; j += lanes) {
                FloatVector xv = vector(x, from + j);
                m = m.blend(xv, xv.compare(VectorOperators.GT, m));   // NaN never greater: skipped
            }
            scratch[b] = scratch[blocks + b] = m.reduceLanes(VectorOperators.MAX);
        }
        Arrays.sort(scratch, blocks, 2 * blocks);
        float tau = scratch[2 * blocks - k];
        if (tau == Float.NEGATIVE_INFINITY) {   // fewer than k blocks hold a number above -inf: no bound
            size = offerRange(x, from, heap, 0, 0, v, Float.NEGATIVE_INFINITY);
        } else {
            size = 0;
            for (int b = 0; b < blocks; b++) if (scratch[b] >= tau) size = offerRange(x, from, heap, size, b * block, (b + 1) * block, tau);
            size = offerRange(x, from, heap, size, blocks * block, v, tau);
        }
        Arrays.sort(heap, 0, size);
        return size;
    }

    /**
     * x[j0, j1) offered to the heap of size ids (k = heap.length) in id order; returns its size
     * after. While it fills, every id is taken where floor is -inf, else only those with a logit
     * of at least floor; once full, only the lanes above its root are offered (the root only rises).
     */
    private static int offerRange(MemorySegment x, long from, int[] heap, int size, int j0, int j1, float floor) {
        int k = heap.length, lanes = FLOATS.length(), j = j0;
        if (floor != Float.NEGATIVE_INFINITY) {   // the lanes at or above floor, a vector at a time
            for (; j + lanes <= j1 && size < k; j += lanes) {
                long at = vector(x, from + j).compare(VectorOperators.GE, floor).toLong();
                for (; at != 0 && size < k; at &= at - 1) size = push(x, from, heap, size, j + Long.numberOfTrailingZeros(at));
                for (; at != 0; at &= at - 1) offer(x, from, heap, j + Long.numberOfTrailingZeros(at));   // full within the vector
            }
        }
        for (; j < j1 && size < k; j++) {
            float xj = x.getAtIndex(F32, from + j);
            if (xj >= floor || floor == Float.NEGATIVE_INFINITY) size = push(x, from, heap, size, j);
        }
        if (size < k) return size;
        float worst = x.getAtIndex(F32, from + heap[0]);
        for (; j + lanes <= j1; j += lanes) {
            if (worst == worst) {
                long above = vector(x, from + j).compare(VectorOperators.GT, worst).toLong();
                if (above == 0) continue;
                for (; above != 0; above &= above - 1) offer(x, from, heap, j + Long.numberOfTrailingZeros(above));
            } else {   // a NaN root is passed by any number: every lane is offered
                for (int q = j; q < j + lanes; q++) offer(x, from, heap, q);
            }
            worst = x.getAtIndex(F32, from + heap[0]);
        }
        for (; j < j1; j++) offer(x, from, heap, j);
        return size;
    }

    /** Id j into the heap of size ids, not yet full; returns its size after. */
    private static int push(MemorySegment x, long from, int[] heap, int size, int j) {
        heap[size] = j;
        for (int i = size; i > 0 && worse(x, from, heap[i], heap[(i - 1) / 2]); i = (i - 1) / 2) swap(heap, i, (i - 1) / 2);
        return size + 1;
    }

    private static FloatVector vector(MemorySegment x, long i) {
        return FloatVector.fromMemorySegment(FLOATS, x, 4 * i, ByteOrder.nativeOrder());
    }

    /** Id j into the full heap in place of its root, where the root ranks below it. */
    private static void offer(MemorySegment x, long from, int[] heap, int j) {
        if (!worse(x, from, heap[0], j)) return;
        int k = heap.length;
        heap[0] = j;
        for (int i = 0; ; ) {
            int l = 2 * i + 1, r = l + 1, w = i;
            if (l < k && worse(x, from, heap[l], heap[w])) w = l;
            if (r < k && worse(x, from, heap[r], heap[w])) w = r;
            if (w == i) break;
            swap(heap, i, w);
            i = w;
        }
    }

    /** Whether id a ranks below id b: a smaller logit (NaN the smallest), or the same one and a larger id. */
    private static boolean worse(MemorySegment x, long from, int a, int b) {
        float xa = x.getAtIndex(F32, from + a), xb = x.getAtIndex(F32, from + b);
        boolean nanA = xa != xa, nanB = xb != xb;
        if (nanA || nanB) return nanA && (!nanB || a > b);
        return xa < xb || (xa == xb && a > b);
    }

    private static void swap(int[] heap, int i, int j) {
        int t = heap[i];
        heap[i] = heap[j];
        heap[j] = t;
    }
}
