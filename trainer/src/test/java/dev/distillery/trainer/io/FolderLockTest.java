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

    @Test
    void aCommandOnAFolderAnotherProcessWritesIsRefusedAndRunsOnceTheHolderIsGone(@TempDir Path dir) throws Exception {
        Path out = dir.resolve("shards");
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        Process holder = new ProcessBuilder(List.of(java, "-cp", System.getProperty("java.class.path"), FolderLockHolder.class.getName(),
                out.toString())).redirectErrorStream(true).start();
        try {
            BufferedReader lines = new BufferedReader(new InputStreamReader(holder.getInputStream()));
            assertEquals("locked", lines.readLine());
            StringWriter err = new StringWriter();
            int status = Main.execute(new String[]{"teacher", "dump-logits", "--teacher", dir.resolve("none").toString(), "--tokens",
                    dir.resolve("none.bin").toString(), "--out", out.toString(), "--device", "cpu"}, new PrintWriter(new StringWriter()),
                    new PrintWriter(err, true));
            assertEquals(Main.EXIT_FAILED, status);
            assertTrue(err.toString().contains("is being written by another Distillery process (PID " + holder.pid() + ")"), err.toString());
            assertEquals(1, err.toString().strip().lines().count(), err.toString());
        } finally {
            holder.destroyForcibly().waitFor();
        }
        // the holder is gone: the OS released its lock, and the same command now gets as far as its input
        StringWriter err = new StringWriter();
        Main.execute(new String[]{"teacher", "dump-logits", "--teacher", dir.resolve("none").toString(), "--tokens",
                dir.resolve("none.bin").toString(), "--out", out.toString(), "--device", "cpu"}, new PrintWriter(new StringWriter()),
                new PrintWriter(err, true));
        assertTrue(!err.toString().contains("being written"), err.toString());
    }
}
