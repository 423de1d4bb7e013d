package dev.distillery.kernels.cpu.distill;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;

/**
 * {@link FusedDistillLossTest} again with {@link NativeRowPasses} turned off: where the native rows are
 * available they take the commonest dense rows, and the parent suite alone would leave the Java
 * path of those rows untested.
 */
class FusedDistillLossJavaRowsTest extends FusedDistillLossTest {

    @BeforeAll
    static void javaRowsOnly() {
        NativeRowPasses.enable(false);
    }

    @AfterAll
    static void nativeRowsAgain() {
        NativeRowPasses.enable(true);
    }
}
