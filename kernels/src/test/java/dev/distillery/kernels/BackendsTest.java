package dev.distillery.kernels;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/** Which CUDA device a process takes: its node-local rank under mpirun, spread over the devices it sees. */
class BackendsTest {

    @Test
    void eachRankOfANodeTakesItsOwnDeviceAndOneProcessTakesTheFirst() {
        assertEquals(0, Backends.deviceOrdinal(null, 8));
        assertEquals(3, Backends.deviceOrdinal("3", 8));
        assertEquals(1, Backends.deviceOrdinal(" 9 ", 8));   // more ranks than devices: shared round robin
        assertEquals(0, Backends.deviceOrdinal("5", 1));     // one visible device (CUDA_VISIBLE_DEVICES per rank)
        assertEquals(0, Backends.deviceOrdinal("2", 0));
        var e = assertThrows(IllegalStateException.class, () -> Backends.deviceOrdinal("two", 4));
        assertTrue(e.getMessage().contains("OMPI_COMM_WORLD_LOCAL_RANK is \"two\""), e.getMessage());
    }
}
