package dev.distillery.runtime;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Every parameter of a model in one persistent native block, their gradients in a second block of
 * the same layout (optimizer moments use the same layout again). Each tensor starts on a 64-byte
 * boundary; the padding between tensors is zero in every block, so whole-block kernels (gradient
 * norm, zeroing) see only real values.
 */
public final class ParameterStore implements AutoCloseable {

    /** A parameter's name, shape and position (in fp32 elements) inside the blocks. */
    public record Slot(String name, int[] shape, long offset, long numel) {
    }

    private static final long ALIGN_ELEMENTS = 16; // 64 bytes of fp32

    private final Arena arena = Arena.ofShared();
    private final Map<String, Slot> slots;
    private final Map<String, Tensor> params = new LinkedHashMap<>();
    private final long totalElements;
    private final MemorySegment paramBlock;
    private final MemorySegment gradBlock;

    private ParameterStore(List<Slot> layout, long totalElements) {
        Map<String, Slot> bySlot = new LinkedHashMap<>();
        for (Slot s : layout) bySlot.put(s.name(), s);
        this.slots = Collections.unmodifiableMap(bySlot);
        this.totalElements = totalElements;
        this.paramBlock = arena.allocate(4 * Math.max(1, totalElements), 64);
        this.gradBlock = arena.allocate(4 * Math.max(1, totalElements), 64);
        paramBlock.fill((byte) 0);
        gradBlock.fill((byte) 0);
        for (Slot s : layout) {
            Tensor p = new Tensor(s.name(), s.shape(), DType.F32, Device.CPU, slice(paramBlock, s), true);
            p.setGrad(new Tensor(s.name() + ".grad", s.shape(), DType.F32, Device.CPU, slice(gradBlock, s), false));
            params.put(s.name(), p);
        }
    }

    private static MemorySegment slice(MemorySegment block, Slot s) {
        return block.asSlice(4 * s.offset(), 4 * s.numel());
    }

    /** Declares the parameters in order, then {@link #build()} allocates them together. */
    public static final class Builder {
        private final List<Slot> layout = new ArrayList<>();
        private long next;

        public Builder add(String name, int... shape) {
            for (Slot s : layout) {
                if (s.name().equals(name)) throw new IllegalArgumentException("parameter " + name + " declared twice");
            }
            long n = Tensor.numel(shape);
            layout.add(new Slot(name, shape.clone(), next, n));
            next += (n + ALIGN_ELEMENTS - 1) / ALIGN_ELEMENTS * ALIGN_ELEMENTS;
            return this;
        }

        public ParameterStore build() {
            return new ParameterStore(List.copyOf(layout), next);
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

    public MemorySegment gradBlock() {
        return gradBlock;
    }

    /** A new zeroed block with this store's layout (optimizer moments), owned by this store. */
    public MemorySegment allocateLikeBlock() {
        MemorySegment s = arena.allocate(4 * Math.max(1, totalElements), 64);
        s.fill((byte) 0);
        return s;
    }

    /** Zeroes every gradient with one whole-block kernel call (gradients accumulate during backward). */
    public void zeroGrad(dev.distillery.kernels.Kernels kernels) {
        kernels.fill(gradBlock, 0f, totalElements);
    }

    @Override
    public void close() {
        arena.close();
    }
}
