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
import java.util.Set;
import java.util.TreeSet;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.junit.jupiter.api.Test;

/**
 * Without a GPU, what can be checked of the launch path is checked: the fatbin is on the class
 * path, and every kernel the Java side launches by name was compiled by nvcc for sm_80 and sm_90
 * (a misspelt name would otherwise only fail on a user's GPU, in cuModuleGetFunction).
 */
class CudaKernelNamesTest {

    private static final Path PTXAS_LOG = Path.of("").toAbsolutePath().getParent().resolve("cuda/target/ptxas.log");

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
    void everyLaunchedKernelWasCompiledForEveryArchitecture() throws IOException {
        assumeTrue(Files.isRegularFile(PTXAS_LOG), "skipped: this build ran without nvcc (no cuda/target/ptxas.log)");
        String log = Files.readString(PTXAS_LOG);
        Set<String> launched = new TreeSet<>();
        Matcher m = Pattern.compile("launch\\(\"(\\w+)\"").matcher(Files.readString(Path.of("src/main/java/dev/distillery/kernels/cuda/CudaConformance.java")));
        while (m.find()) launched.add(m.group(1));
        m = Pattern.compile("launch\\(\"(\\w+)\"").matcher(Files.readString(Path.of("src/main/java/dev/distillery/kernels/cuda/CudaDevice.java")));
        while (m.find()) launched.add(m.group(1));
        assertTrue(launched.size() >= 15, launched.toString());
        for (String kernel : launched) {
            for (String arch : new String[]{"sm_80", "sm_90"}) {
                assertTrue(log.contains("Compiling entry function '" + kernel + "' for '" + arch + "'"), kernel + " was not compiled for " + arch);
            }
        }
    }
}
