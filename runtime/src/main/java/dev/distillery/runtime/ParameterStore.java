package dev.distillery.runtime;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.function.DoubleSupplier;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

import dev.distillery.kernels.DType;
import dev.distillery.kernels.Kernels;

/**
 * Every parameter of a model in one persistent native block, their gradients in a second block of
 * the same layout (optimizer moments use the same layout again). Each tensor starts on a 64-byte
 * boundary; the padding between tensors is zero in every block, so whole-block kernels (gradient
 * norm, zeroing) see only real values.
 *
 * <p>The blocks live where the kernels compute; {@link #read} and {@link #write} move values
 * between them and the host (initialisation, checkpoints, tests).
 */
public final class ParameterStore implements AutoCloseable {

    /** A parameter's name, shape and position (in fp32 elements) inside the blocks. */
    public record Slot(String name, int[] shape, long offset, long numel) {
    }

    private static final long ALIGN_ELEMENTS = 16; // 64 bytes of fp32

    private final Arena arena = Arena.ofShared();
    private final Kernels kernels;
    private final Map<String, Slot> slots;
    private final Map<String, Tensor> params = new LinkedHashMap<>();
    private final long totalElements;
    private final MemorySegment paramBlock;
    private final MemorySegment gradBlock;

    private ParameterStore(Kernels kernels, List<Slot> layout, long totalElements, boolean trainable) {
        this.kernels = kernels;
        Map<String, Slot> bySlot = new LinkedHashMap<>();
        for (Slot s : layout) bySlot.put(s.name(), s);
        this.slots = Collections.unmodifiableMap(bySlot);
        this.totalElements = totalElements;
        this.paramBlock = allocateLikeBlock();
        this.gradBlock = trainable ? allocateLikeBlock() : null;
        Device device = Device.of(kernels);
        for (Slot s : layout) {
            Tensor p = new Tensor(s.name(), s.shape(), DType.F32, device, slice(paramBlock, s), trainable);
            if (trainable) p.setGrad(new Tensor(s.name() + ".grad", s.shape(), DType.F32, device, slice(gradBlock, s), false));
            params.put(s.name(), p);
        }
    }

    private static MemorySegment slice(MemorySegment block, Slot s) {
        return block.asSlice(4 * s.offset(), 4 * s.numel());
    }

    /** Declares the parameters in order, then {@link #build()} allocates them together. */
    public static final class Builder {
        private final List<Slot> layout = new ArrayList<>();
        private final Set<String> names = new HashSet<>();
        private long next;

        public Builder add(String name, int... shape) {
            if (!names.add(name)) throw new IllegalArgumentException("parameter " + name + " declared twice");
            long n = Tensor.numel(shape);
            layout.add(new Slot(name, shape.clone(), next, n));
            next += (n + ALIGN_ELEMENTS - 1) / ALIGN_ELEMENTS * ALIGN_ELEMENTS;
            return this;
        }

        /** Allocates the blocks where {@code kernels} compute, zero-filled. */
        public ParameterStore build(Kernels kernels) {
            return new ParameterStore(kernels, List.copyOf(layout), next, true);
        }

        /** The parameters alone, needing no gradient (a teacher): no gradient block, half the memory. */
        public ParameterStore buildFrozen(Kernels kernels) {
            return new ParameterStore(kernels, List.copyOf(layout), next, false);
        }
    }

    public static Builder builder() {
        return new Builder();
    }

    /** @throws IllegalArgumentException naming the parameter when it does not exist */
    public Tensor get(String name) {
        Tensor t = params.get(name);
        if (t == null) throw new IllegalArgumentException("no parameter named '" + name + "'");
        return t;
    }

    /** Parameters in declaration order. */
    public List<Tensor> parameters() {
        return List.copyOf(params.values());
    }

    public Map<String, Slot> layout() {
        return slots;
    }

    /** Real parameter count (without alignment padding). */
    public long parameterCount() {
        long n = 0;
        for (Slot s : slots.values()) n += s.numel();
        return n;
    }

    /** Elements of each block, padding included: the length of whole-block kernels. */
    public long blockElements() {
        return totalElements;
    }

    public MemorySegment paramBlock() {
        return paramBlock;
    }

    /** @throws IllegalStateException for a store built frozen */
    public MemorySegment gradBlock() {
        if (gradBlock == null) throw new IllegalStateException("the parameters were built frozen (a teacher's): they have no gradients");
        return gradBlock;
    }

    /** A new zeroed block with this store's layout (optimizer moments), owned by this store. */
    public MemorySegment allocateLikeBlock() {
        MemorySegment s = kernels.allocate(arena, 4 * Math.max(1, totalElements));
        kernels.fill(s, 0f, Math.max(1, totalElements));
        return s;
    }

    /** The kernels whose memory holds the blocks. */
    public Kernels kernels() {
        return kernels;
    }

    /** Zeroes every gradient with one whole-block kernel call (gradients accumulate during backward). */
    public void zeroGrad() {
        kernels.fill(gradBlock(), 0f, totalElements);
    }

    /** A copy of an fp32 tensor of this store's memory (a parameter or its gradient) on the host. */
    public float[] read(Tensor t) {
        try (Arena host = Arena.ofConfined()) {
            return kernels.hostView(t.data(), t.byteSize(), host).toArray(ValueLayout.JAVA_FLOAT);
        }
    }

    /** Sets an fp32 tensor of this store's memory from {@code values} (exactly its element count). */
    public void write(Tensor t, float[] values) {
        if (values.length != t.numel()) {
            throw new IllegalArgumentException(t.name() + " has " + t.numel() + " elements, got " + values.length + " values");
        }
        try (Arena host = Arena.ofConfined()) {
            write(t, host.allocateFrom(ValueLayout.JAVA_FLOAT, values));
        }
    }

    /**
     * Sets every element of t to {@code next}'s value, drawn in index order, through native host
     * memory: an initialisation makes no heap array of the tensor's size (the JVM would keep a
     * 49 MB embedding's array resident long after it is garbage).
     */
    public void fill(Tensor t, DoubleSupplier next) {
        try (Arena host = Arena.ofConfined()) {
            MemorySegment values = host.allocate(t.byteSize(), 64);
            for (long i = 0, n = t.numel(); i < n; i++) values.setAtIndex(ValueLayout.JAVA_FLOAT, i, (float) next.getAsDouble());
            write(t, values);
        }
    }

    /** Sets a tensor of this store's memory from {@code t.byteSize()} bytes of host memory. */
    public void write(Tensor t, MemorySegment host) {
        kernels.copyFromHost(t.data(), host, t.byteSize());
    }

    @Override
    public void close() {
        arena.close();
    }
}
