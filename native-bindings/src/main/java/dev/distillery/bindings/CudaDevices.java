package dev.distillery.bindings;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.List;

import dev.distillery.bindings.cuda.CudaDriver;

/**
 * Which CUDA devices this machine has. Never throws: no driver, a failing {@code cuInit} or zero
 * devices all come back as an empty list with the reason (DJL's "0 devices" probe).
 */
public final class CudaDevices {

    /** One device. */
    public record Device(int ordinal, String name, int major, int minor, int multiprocessors, long totalBytes) {
        public String describe() {
            return String.format("%s (sm_%d%d, %d SMs, %.1f GiB)", name, major, minor, multiprocessors, totalBytes / (double) (1L << 30));
        }
    }

    /** The devices found, or none and why. */
    public record Probe(List<Device> devices, String reason) {
        public boolean available() {
            return !devices.isEmpty();
        }
    }

    private static Probe cached;

    private CudaDevices() {
    }

    public static synchronized Probe probe() {
        if (cached == null) cached = find();
        return cached;
    }

    private static Probe find() {
        SharedLibraries.Probe lib = CudaLibraries.driver();
        if (!lib.loaded()) return new Probe(List.of(), "no CUDA driver: libcuda.so.1 " + lib.describe());
        try (Arena a = Arena.ofConfined()) {
            CudaCalls.driver(CudaDriver.cuInit(0), "cuInit(0)");
            MemorySegment count = a.allocate(ValueLayout.JAVA_INT);
            CudaCalls.driver(CudaDriver.cuDeviceGetCount(count), "cuDeviceGetCount");
            int n = count.get(ValueLayout.JAVA_INT, 0);
            if (n == 0) return new Probe(List.of(), "the CUDA driver (" + lib.path() + ") reports 0 devices");
            List<Device> devices = new ArrayList<>();
            for (int i = 0; i < n; i++) {
                MemorySegment dev = a.allocate(ValueLayout.JAVA_INT);
                CudaCalls.driver(CudaDriver.cuDeviceGet(dev, i), "cuDeviceGet(" + i + ")");
                int d = dev.get(ValueLayout.JAVA_INT, 0);
                MemorySegment name = a.allocate(256);
                CudaCalls.driver(CudaDriver.cuDeviceGetName(name, 256, d), "cuDeviceGetName(" + i + ")");
                MemorySegment bytes = a.allocate(ValueLayout.JAVA_LONG);
                CudaCalls.driver(CudaDriver.cuDeviceTotalMem_v2(bytes, d), "cuDeviceTotalMem(" + i + ")");
                devices.add(new Device(i, name.getString(0), attribute(a, d, CudaDriver.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR()),
                        attribute(a, d, CudaDriver.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR()),
                        attribute(a, d, CudaDriver.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT()), bytes.get(ValueLayout.JAVA_LONG, 0)));
            }
            return new Probe(List.copyOf(devices), null);
        } catch (CudaException e) {
            return new Probe(List.of(), e.getMessage());
        }
    }

    private static int attribute(Arena a, int device, int attribute) {
        MemorySegment v = a.allocate(ValueLayout.JAVA_INT);
        CudaCalls.driver(CudaDriver.cuDeviceGetAttribute(v, attribute, device), "cuDeviceGetAttribute(" + attribute + ")");
        return v.get(ValueLayout.JAVA_INT, 0);
    }
}
