package dev.distillery.trainer.io;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Path;
import java.util.List;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import dev.distillery.trainer.cli.Main;
import dev.distillery.trainer.data.TokenFile;

/** One writer per folder, within a process and across processes, released when its holder ends. */
class FolderLockTest {

    @Test
    void aSecondWriterInTheSameProcessIsRefusedNamingThePid(@TempDir Path dir) throws IOException {
        try (FolderLock first = FolderLock.acquire(dir, "--out")) {
            IOException e = assertThrows(IOException.class, () -> FolderLock.acquire(dir, "--out"));
            assertTrue(e.getMessage().contains("being written by another Distillery process (PID " + ProcessHandle.current().pid() + ")"),
                    e.getMessage());
            assertTrue(e.getMessage().endsWith("choose another --out"), e.getMessage());
        }
        try (FolderLock again = FolderLock.acquire(dir, "--out")) {
            assertTrue(FolderLock.holdsFiles(dir) == false, "the lock file alone is not a file of the folder's");
        }
    }

    /** {@code teacher train} of one tiny step on {@code tokens} into {@code out}. */
    private static int trainOneStep(Path tokens, Path out, StringWriter err) {
        return Main.execute(new String[]{"teacher", "train", "--tokens", tokens.toString(), "--out", out.toString(), "--vocab", "16",
                "--layers", "1", "--channels", "8", "--heads", "2", "--context", "8", "--batch", "2", "--steps", "1", "--warmup", "0",
                "--device", "cpu", "--threads", "1"}, new PrintWriter(new StringWriter()), new PrintWriter(err, true));
    }

    @Test
    void aCommandOnAFolderAnotherProcessWritesIsRefusedAndRunsOnceTheHolderIsGone(@TempDir Path dir) throws Exception {
        Path out = dir.resolve("run");
        Path tokens = dir.resolve("tokens.bin");
        int[] ids = new int[64];
        for (int i = 0; i < ids.length; i++) ids[i] = (i * 7) % 16;
        TokenFile.write(tokens, ids);
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        Process holder = new ProcessBuilder(List.of(java, "-cp", System.getProperty("java.class.path"), FolderLockHolder.class.getName(),
                out.toString())).redirectErrorStream(true).start();
        try {
            BufferedReader lines = new BufferedReader(new InputStreamReader(holder.getInputStream()));
            assertEquals("locked", lines.readLine());
            StringWriter err = new StringWriter();
            assertEquals(Main.EXIT_FAILED, trainOneStep(tokens, out, err));
            assertTrue(err.toString().contains("is being written by another Distillery process (PID " + holder.pid() + ")"), err.toString());
            assertEquals(1, err.toString().strip().lines().count(), err.toString());
        } finally {
            holder.destroyForcibly().waitFor();
        }
        // the holder is gone: the OS released its lock, and the same command runs
        StringWriter err = new StringWriter();
        assertEquals(0, trainOneStep(tokens, out, err), err.toString());
    }
}
