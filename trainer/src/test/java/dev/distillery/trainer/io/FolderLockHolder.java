package dev.distillery.trainer.io;

import java.nio.file.Path;

/** Run in a child JVM by {@link FolderLockTest}: locks a folder, says so, and holds it until killed. */
public final class FolderLockHolder {

    public static void main(String[] args) throws Exception {
        try (FolderLock lock = FolderLock.acquire(Path.of(args[0]), "--out")) {
            System.out.println("locked");
            System.out.flush();
            Thread.sleep(Long.MAX_VALUE);
        }
    }
}
