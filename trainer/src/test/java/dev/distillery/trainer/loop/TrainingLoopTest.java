package dev.distillery.trainer.loop;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;

import org.junit.jupiter.api.Test;

class TrainingLoopTest {

    /** Kept attention probabilities of 256 MiB a step or more get a line naming the option; fewer get none. */
    @Test
    void attentionMemoryNoteNamesTheOptionFromItsThresholdOn() {
        assertNull(TrainingLoop.attentionMemoryNote(0, "--recompute-attention"));
        assertNull(TrainingLoop.attentionMemoryNote(TrainingLoop.ATTENTION_NOTE_BYTES - 1, "--recompute-attention"));
        // config L of the benchmarks: batch 1, 6 heads, 2,048 tokens, 6 layers
        long l = 4L * 6 * 2048 * 2048 * 7;
        assertEquals("attention: its probabilities take 672 MB a step (batch x heads x seq_len^2 floats a layer); "
                + "'recompute_attention': true keeps none of them, for one more score product a layer",
                TrainingLoop.attentionMemoryNote(l, "'recompute_attention': true"));
    }
}
