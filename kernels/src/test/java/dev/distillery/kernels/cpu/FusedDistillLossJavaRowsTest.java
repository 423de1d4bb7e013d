package dev.distillery.kernels.cpu;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;

/**
 * {@link FusedDistillLossTest} again with {@link NativeRows} turned off: where the native rows are
 * available they take the commonest dense rows, and the parent suite alone would leave the Java
 * path of those rows untested.
 */
class FusedDistillLossJavaRowsTest extends FusedDistillLossTest {

    @BeforeAll
    static void javaRowsOnly() {
        NativeRows.enable(false);
    }

    @AfterAll
    static void nativeRowsAgain() {
        NativeRows.enable(true);
    }
}
