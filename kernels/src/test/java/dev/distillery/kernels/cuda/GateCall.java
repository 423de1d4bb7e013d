package dev.distillery.kernels.cuda;

import java.io.ByteArrayOutputStream;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * One launch of a registry kernel under the emulation gate ({@code cuda/src/test/emulation/kernel_gate.cpp}):
 * the arguments in the order of {@link CudaKernel#signature()}, checked against it here and by the
 * gate against the kernel's C++ signature; every buffer argument comes back after the launch.
 */
final class GateCall {

    private sealed interface Arg {
    }

    private record Buffer(byte[] bytes) implements Arg {
    }

    private record Alias(int of) implements Arg {
    }

    private record Null() implements Arg {
    }

    private record Value(Object boxed) implements Arg {
    }

    /** What a run gave: null problem and every buffer's bytes, by argument index, or what went wrong. */
    record Outcome(String problem, List<byte[]> buffers) {
        float[] floats(int arg) {
            ByteBuffer b = ByteBuffer.wrap(buffers.get(arg)).order(ByteOrder.LITTLE_ENDIAN);
            float[] out = new float[b.capacity() / 4];
            for (int i = 0; i < out.length; i++) out[i] = b.getFloat();
            return out;
        }

        short[] shorts(int arg) {
            ByteBuffer b = ByteBuffer.wrap(buffers.get(arg)).order(ByteOrder.LITTLE_ENDIAN);
            short[] out = new short[b.capacity() / 2];
            for (int i = 0; i < out.length; i++) out[i] = b.getShort();
            return out;
        }

        int[] ints(int arg) {
            ByteBuffer b = ByteBuffer.wrap(buffers.get(arg)).order(ByteOrder.LITTLE_ENDIAN);
            int[] out = new int[b.capacity() / 4];
            for (int i = 0; i < out.length; i++) out[i] = b.getInt();
            return out;
        }
    }

    private final CudaKernel kernel;
    private final int grid, block;
    private final List<Arg> args = new ArrayList<>();

    GateCall(CudaKernel kernel, int grid, int block) {
        this.kernel = kernel;
        this.grid = grid;
        this.block = block;
    }

    GateCall floats(float[] x) {
        ByteBuffer b = ByteBuffer.allocate(4 * x.length).order(ByteOrder.LITTLE_ENDIAN);
        for (float v : x) b.putFloat(v);
        return add(new Buffer(b.array()));
    }

    GateCall ints(int[] x) {
        ByteBuffer b = ByteBuffer.allocate(4 * x.length).order(ByteOrder.LITTLE_ENDIAN);
        for (int v : x) b.putInt(v);
        return add(new Buffer(b.array()));
    }

    /** A buffer of {@code n} 16-bit elements, every one 0xffff (a NaN as bf16): an output. */
    GateCall poisonedShorts(int n) {
        byte[] b = new byte[2 * n];
        java.util.Arrays.fill(b, (byte) 0xff);
        return add(new Buffer(b));
    }

    /** A buffer holding a segment's bytes (teacher logits of any type). */
    GateCall bytes(MemorySegment s) {
        return add(new Buffer(s.toArray(java.lang.foreign.ValueLayout.JAVA_BYTE)));
    }

    /** The same pointer as buffer argument {@code of} (a gradient written in place). */
    GateCall alias(int of) {
        return add(new Alias(of));
    }

    GateCall nullPointer() {
        return add(new Null());
    }

    GateCall i32(int x) {
        return add(new Value(x));
    }

    GateCall i64(long x) {
        return add(new Value(x));
    }

    GateCall f32(float x) {
        return add(new Value(x));
    }

    /** A struct passed by value: its bytes. */
    GateCall struct(MemorySegment s) {
        return add(new Value(s));
    }

    private GateCall add(Arg a) {
        args.add(a);
        return this;
    }

    /** A copy of this call with buffer argument {@code arg} replaced by {@code x}. */
    GateCall withFloats(int arg, float[] x) {
        GateCall c = new GateCall(kernel, grid, block);
        c.args.addAll(args);
        ByteBuffer b = ByteBuffer.allocate(4 * x.length).order(ByteOrder.LITTLE_ENDIAN);
        for (float v : x) b.putFloat(v);
        c.args.set(arg, new Buffer(b.array()));
        return c;
    }

    private byte[] input() {
        Object[] forCheck = new Object[args.size()];
        for (int i = 0; i < forCheck.length; i++) {
            forCheck[i] = args.get(i) instanceof Value v ? v.boxed() : new CudaBackend.Ptr(1);
        }
        kernel.check(forCheck);
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        byte[] name = kernel.symbol().getBytes(StandardCharsets.US_ASCII);
        write(out, le(16 + name.length).putInt(name.length).put(name).putInt(grid).putInt(block).putInt(args.size()));
        for (Arg a : args) {
            switch (a) {
                case Buffer b -> {
                    write(out, le(12).putInt(0).putLong(b.bytes().length));
                    out.writeBytes(b.bytes());
                }
                case Alias al -> write(out, le(8).putInt(1).putInt(al.of()));
                case Null n -> write(out, le(4).putInt(2));
                case Value v -> {
                    switch (v.boxed()) {
                        case Integer x -> write(out, le(8).putInt(3).putInt(x));
                        case Long x -> write(out, le(12).putInt(4).putLong(x));
                        case Float x -> write(out, le(8).putInt(5).putFloat(x));
                        case MemorySegment s -> {
                            write(out, le(8).putInt(6).putInt((int) s.byteSize()));
                            out.writeBytes(s.toArray(java.lang.foreign.ValueLayout.JAVA_BYTE));
                        }
                        default -> throw new IllegalArgumentException("argument " + v.boxed());
                    }
                }
            }
        }
        return out.toByteArray();
    }

    private static ByteBuffer le(int bytes) {
        return ByteBuffer.allocate(bytes).order(ByteOrder.LITTLE_ENDIAN);
    }

    private static void write(ByteArrayOutputStream out, ByteBuffer b) {
        out.write(b.array(), 0, b.position());
    }

    /** Runs the launch with {@code gate} in {@code work}. */
    Outcome run(Path gate, Path work) throws Exception {
        Path in = work.resolve("gate-in.bin"), out = work.resolve("gate-out.bin");
        Files.write(in, input());
        Files.deleteIfExists(out);
        Process p = new ProcessBuilder(gate.toString(), in.toString(), out.toString()).redirectErrorStream(true).start();
        String log = new String(p.getInputStream().readAllBytes());
        if (!p.waitFor(120, TimeUnit.SECONDS)) {
            p.destroyForcibly();
            return new Outcome(kernel.symbol() + ": the emulation timed out", List.of());
        }
        if (p.exitValue() != 0) return new Outcome(kernel.symbol() + ": the emulation exited " + p.exitValue() + ": " + log.strip(), List.of());
        ByteBuffer result = ByteBuffer.wrap(Files.readAllBytes(out));
        List<byte[]> buffers = new ArrayList<>();
        for (Arg a : args) {
            if (a instanceof Buffer b) {
                byte[] bytes = new byte[b.bytes().length];
                result.get(bytes);
                buffers.add(bytes);
            } else {
                buffers.add(null);
            }
        }
        return new Outcome(null, buffers);
    }

    /** {@link #run}, failing the test with the gate's log when the launch fails. */
    Outcome runOrFail(Path gate, Path work) throws Exception {
        Outcome o = run(gate, work);
        if (o.problem() != null) throw new AssertionError(o.problem());
        return o;
    }
}
