package dev.distillery.runtime.autograd;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.util.concurrent.atomic.AtomicInteger;

import org.junit.jupiter.api.Test;

class TapeTest {

    /**
     * A hold kept for the backward (a linear's input, rounded once on CUDA) closes when the
     * backward has run, when a backward step fails, and when the next pass clears a tape whose
     * backward never ran: never later, since the workspace hands its addresses out again.
     */
    @Test
    void holdsKeptForTheBackwardCloseWhenItEndsFailsOrNeverRuns() {
        AtomicInteger closed = new AtomicInteger();
        Tape tape = new Tape();

        tape.keepUntilBackward(closed::incrementAndGet);
        tape.record(() -> assertEquals(0, closed.get(), "open while the backward runs"));
        tape.backward();
        assertEquals(1, closed.get(), "closed after the backward");

        tape.keepUntilBackward(closed::incrementAndGet);
        tape.keepUntilBackward(closed::incrementAndGet);
        tape.record(() -> {
            throw new IllegalStateException("a backward step failed");
        });
        assertThrows(IllegalStateException.class, tape::backward);
        assertEquals(3, closed.get(), "both closed after a failed backward");
        assertEquals(0, tape.size());

        tape.keepUntilBackward(closed::incrementAndGet);
        tape.record(() -> { });
        tape.clear();
        assertEquals(4, closed.get(), "closed by the next pass's clear when no backward ran");
        tape.clear();
        assertEquals(4, closed.get(), "closed once");
    }
}
