package dev.distillery.kernels.cuda;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.junit.jupiter.api.Test;

/**
 * One registry of CUDA kernels: cuda/src/main/cuda/kernels.def lists them, {@link CudaKernel} names
 * the same ones in the same order with the same argument lists as their C++ signatures (read from
 * the emulated device, whose table kernels.def generates), and nvcc compiled every one of them for
 * sm_80 and sm_90 (a misspelt name would otherwise only fail on a user's GPU, in
 * cuModuleGetFunction).
 */
class CudaKernelRegistryTest {

    private static final Path CUDA = Path.of("").toAbsolutePath().getParent().resolve("cuda");
    private static final Path PTXAS_LOG = CUDA.resolve("target/ptxas.log");

    private static List<String> registry() throws IOException {
        Matcher m = Pattern.compile("^DISTILLERY_KERNEL\\((\\w+)\\)", Pattern.MULTILINE)
                .matcher(Files.readString(CUDA.resolve("src/main/cuda/kernels.def")));
        List<String> names = new ArrayList<>();
        while (m.find()) names.add(m.group(1));
        return names;
    }

    private static List<String> javaNames() {
        return Arrays.stream(CudaKernel.values()).map(CudaKernel::symbol).toList();
    }

    @Test
    void cudaKernelNamesTheKernelsOfTheRegistryInItsOrder() throws IOException {
        assertEquals(registry(), javaNames());
    }

    @Test
    void everyKernelHasTheArgumentsOfItsCppSignature() throws Exception {
        try (EmulationBuild gcc = new EmulationBuild("distillery-registry")) {
            Path library = gcc.build("emu_device.cpp", "libdistillery_emu.so", "-O0", "-DEMU_FIBERS", "-U_FORTIFY_SOURCE", "-shared", "-fPIC");
            try (EmulatedCudaBackend device = new EmulatedCudaBackend(library)) {
                assertEquals(registry(), device.registry(), "the emulated device's table");
                for (CudaKernel k : CudaKernel.values()) assertEquals(device.signature(k.symbol()), k.signature(), k.symbol());
            }
        }
    }

    @Test
    void aLaunchWithTheWrongArgumentsIsRefusedNamingTheArgument() {
        IllegalArgumentException e = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                () -> CudaKernel.OPS_GELU_FORWARD.check(new CudaBackend.Ptr(8), new CudaBackend.Ptr(16), 7));
        assertTrue(e.getMessage().contains("ops_gelu_forward: argument 2 must be 'l'"), e.getMessage());
    }

    @Test
    void theFatbinIsAJarResource() throws IOException {
        assumeTrue(Files.isRegularFile(PTXAS_LOG), "skipped: this build ran without nvcc (no cuda/target/ptxas.log)");
        try (InputStream in = CudaDevice.class.getResourceAsStream(CudaDevice.FATBIN)) {
            assertTrue(in != null, CudaDevice.FATBIN + " is not on the class path");
            byte[] head = in.readNBytes(4);
            assertEquals(0xBA55ED50, ByteBuffer.wrap(head).order(ByteOrder.LITTLE_ENDIAN).getInt(), "fatbin magic");
        }
    }

    @Test
    void everyKernelWasCompiledForEveryArchitecture() throws IOException {
        assumeTrue(Files.isRegularFile(PTXAS_LOG), "skipped: this build ran without nvcc (no cuda/target/ptxas.log)");
        String log = Files.readString(PTXAS_LOG);
        for (String kernel : registry()) {
            for (String arch : new String[]{"sm_80", "sm_90"}) {
                assertTrue(log.contains("Compiling entry function '" + kernel + "' for '" + arch + "'"), kernel + " was not compiled for " + arch);
            }
        }
    }
}
