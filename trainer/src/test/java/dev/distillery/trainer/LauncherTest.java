package dev.distillery.trainer;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.Test;

class LauncherTest {

    @Test
    void featureVersionReadsOldAndNewSpecStrings() {
        assertEquals(8, Launcher.featureVersion("1.8"));
        assertEquals(17, Launcher.featureVersion("17"));
        assertEquals(25, Launcher.featureVersion("25"));
        assertEquals(0, Launcher.featureVersion("x"));
    }
}
