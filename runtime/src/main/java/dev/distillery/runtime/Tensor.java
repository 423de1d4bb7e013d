package dev.distillery.runtime;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;

import dev.distillery.kernels.DType;

/**
 * A view of row-major, contiguous storage: shape, dtype and device over a {@link MemorySegment}
 * that someone else owns (a {@link Workspace}, a {@link ParameterStore}, a mapped file).
 *
 * <p>For autograd a tensor may carry a gradient of the same shape, set by the tape or the
 * parameter store; {@code requiresGrad} says whether backward should produce one.
 */
public final class Tensor {

    private final String name;
    private final int[] shape;
    private final DType dtype;
    private final Device device;
    private final MemorySegment data;
    private final boolean requiresGrad;
    private Tensor grad;
    private MemorySegment hostCopy;

    public Tensor(String name, int[] shape, DType dtype, Device device, MemorySegment data, boolean requiresGrad) {
        this.name = name;
        this.shape = shape.clone();
        this.dtype = dtype;
        this.device = device;
        long need = numel(shape) * dtype.bytes();
        if (data.byteSize() < need) {
            throw new IllegalArgumentException("tensor " + name + " " + Arrays.toString(shape) + " " + dtype
                    + " needs " + need + " bytes, storage has " + data.byteSize());
        }
        this.data = data;
        this.requiresGrad = requiresGrad;
    }

    public static long numel(int[] shape) {
        long n = 1;
        for (int d : shape) {
            if (d < 0) throw new IllegalArgumentException("negative dimension in " + Arrays.toString(shape));
            try {
                n = Math.multiplyExact(n, d);
            } catch (ArithmeticException e) {
                throw new IllegalArgumentException("shape " + Arrays.toString(shape) + " has more than 2^63 elements", e);
            }
        }
        return n;
    }

    public String name() {
        return name;
    }

    public int[] shape() {
        return shape.clone();
    }

    public int dim(int i) {
        return shape[i < 0 ? shape.length + i : i];
    }

    public int rank() {
        return shape.length;
    }

    public long numel() {
        return numel(shape);
    }

    public DType dtype() {
        return dtype;
    }

    public Device device() {
        return device;
    }

    public MemorySegment data() {
        return data;
    }

    public long byteSize() {
        return numel() * dtype.bytes();
    }

    public boolean requiresGrad() {
        return requiresGrad;
    }

    public Tensor grad() {
        return grad;
    }

    public void setGrad(Tensor grad) {
        if (grad != null && grad.numel() != numel()) {
            throw new IllegalArgumentException("gradient of " + name + " must have " + numel() + " elements, got " + grad.numel());
        }
        this.grad = grad;
    }

    /**
     * A copy of this tensor's values in host memory that its owner keeps equal to them (it writes
     * the host copy and copies it over, as {@code ModelInputs} does with the token ids), or null:
     * a device backend reads small values there instead of back from the device.
     */
    public MemorySegment hostCopy() {
        return hostCopy;
    }

    /** Declares {@link #hostCopy}: the owner writes this tensor only by copying {@code host} over it. */
    public void keepHostCopy(MemorySegment host) {
        if (host != null && host.byteSize() < byteSize()) {
            throw new IllegalArgumentException("host copy of " + name + " has " + host.byteSize() + " bytes, the tensor " + byteSize());
        }
        this.hostCopy = host;
    }

    /** The same storage under another shape with as many elements. */
    public Tensor view(int... newShape) {
        if (numel(newShape) != numel()) {
            throw new IllegalArgumentException("cannot view " + name + " " + Arrays.toString(shape) + " as " + Arrays.toString(newShape));
        }
        Tensor t = new Tensor(name, newShape, dtype, device, data, requiresGrad);
        t.grad = grad == null ? null : grad.view(newShape);
        t.hostCopy = hostCopy;
        return t;
    }

    /**
     * Elements [from, from + count) of the same storage as a tensor of {@code newShape} (count
     * elements), needing no gradient: a row of a table, a column block of a row.
     */
    public Tensor slice(long from, int... newShape) {
        long count = numel(newShape);
        if (from < 0 || from + count > numel()) {
            throw new IllegalArgumentException("elements [" + from + ", " + (from + count) + ") of " + name + " " + Arrays.toString(shape));
        }
        return new Tensor(name, newShape, dtype, device, data.asSlice(from * dtype.bytes(), count * dtype.bytes()), false);
    }

    public float getFloat(long index) {
        requireHostF32();
        return data.getAtIndex(ValueLayout.JAVA_FLOAT, index);
    }

    public void setFloat(long index, float value) {
        requireHostF32();
        data.setAtIndex(ValueLayout.JAVA_FLOAT, index, value);
    }

    /** Copies this fp32 host tensor into a new array (tests, checkpoints, small reads). */
    public float[] toFloatArray() {
        requireHostF32();
        return data.asSlice(0, byteSize()).toArray(ValueLayout.JAVA_FLOAT);
    }

    private void requireHostF32() {
        if (dtype != DType.F32 || device != Device.CPU) {
            throw new IllegalStateException("tensor " + name + " is " + dtype + " on " + device + ", not F32 on CPU");
        }
    }

    @Override
    public String toString() {
        return name + Arrays.toString(shape) + " " + dtype + " " + device;
    }
}
