package dev.distillery.runtime.nn;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import dev.distillery.kernels.Precision;
import dev.distillery.kernels.cuda.CudaKernels;
import dev.distillery.kernels.cuda.EmulatedCudaBackend;
import dev.distillery.kernels.cuda.EmulationBuild;
import dev.distillery.runtime.Rng;
import dev.distillery.runtime.optim.AdamW;
import dev.distillery.runtime.optim.LearningRateSchedule;

/**
 * What a training step costs a GPU in launches: at config B's sizes a step is bound by kernel
 * launches rather than by the card (docs/PERFORMANCE.md, on an H100/H200), so their number is
 * held to a budget. A GPT-2 step shaped like config B (6 layers, 6 heads, batch 8; small widths,
 * which do not change the count, and the LM head in one chunk), counted on the emulated device:
 * kernels plus cuBLAS calls, the same at every step, within the budget in each precision.
 */
class CudaStepLaunchesTest {

    private static EmulationBuild gcc;
    private static Path library;

    @BeforeAll
    static void compile() throws Exception {
        gcc = new EmulationBuild("distillery-emu-launches");
        library = gcc.build("emu_device.cpp", "libdistillery_emu.so", "-O2", "-DEMU_FIBERS", "-U_FORTIFY_SOURCE", "-shared", "-fPIC");
    }

    @AfterAll
    static void cleanUp() throws Exception {
        if (gcc != null) gcc.close();
    }

    @Test
    void aConfigBShapedStepStaysWithinItsLaunchBudget() {
        assertTrue(launchesPerStep(Precision.FP32) <= 295);
        assertTrue(launchesPerStep(Precision.BF16) <= 415);
    }

    /** Kernels and cuBLAS calls of one hard-label training step, checked to be the same over three steps. */
    private static int launchesPerStep(Precision precision) {
        int b = 8, t = 16, vocab = 256;
        int[] counts = new int[3];
        try (EmulatedCudaBackend device = new EmulatedCudaBackend(library); CudaKernels kernels = new CudaKernels(device, precision);
             LanguageModel model = new Gpt2(new Gpt2Config(vocab, t, 6, 48, 6), kernels);
             TrainingSession session = new TrainingSession(model, kernels, AdamW.Config.defaults(), new LearningRateSchedule(1e-3, 1e-4, 1, 4),
                     1.0, b, t)) {
            model.initialize(5);
            Rng data = new Rng(3);
            for (int step = 0; step < counts.length; step++) {
                int[] windows = new int[b * (t + 1)];
                for (int i = 0; i < windows.length; i++) windows[i] = data.nextInt(vocab);
                int before = device.launches() + device.gemms();
                session.inputs().setWindows(windows);
                session.beginStep();
                session.finishStep(session.backwardCrossEntropy(1f));
                counts[step] = device.launches() + device.gemms() - before;
            }
            System.out.printf("%s: %d kernels and cuBLAS calls a step (%d of them cuBLAS)%n", precision, counts[2], device.gemms() / counts.length);
        }
        assertEquals(counts[1], counts[0], precision + ": launches of steps 1 and 2");
        assertEquals(counts[2], counts[1], precision + ": launches of steps 2 and 3");
        return counts[2];
    }
}
