package dev.distillery.trainer.data;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class TokenFileTest {

    @TempDir
    Path dir;

    @Test
    void uint16AndUint32FilesRoundTrip() throws IOException {
        int[] small = {0, 1, 50256, 65535, 7};
        int[] large = {0, 65536, 128255, 3};
        Path a = dir.resolve("small.bin"), b = dir.resolve("large.bin");
        TokenFile.write(a, small);
        TokenFile.write(b, large);
        try (TokenFile f = TokenFile.open(a); TokenFile g = TokenFile.open(b)) {
            assertEquals(2, f.tokenWidth());
            assertEquals(4, g.tokenWidth());
            int[] got = new int[small.length];
            f.read(0, small.length, got);
            assertArrayEquals(small, got);
            int[] got2 = new int[large.length];
            g.read(0, large.length, got2);
            assertArrayEquals(large, got2);
            assertEquals(1024 + 2 * small.length, Files.size(a));
        }
    }

    private Path raw(String name, int magic, int version, int count, int payloadBytes) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(1024 + payloadBytes).order(ByteOrder.LITTLE_ENDIAN);
        b.putInt(magic).putInt(version).putInt(count);
        Path p = dir.resolve(name);
        Files.write(p, b.array());
        return p;
    }

    @Test
    void malformedFilesNameTheFileAndTheProblem() throws IOException {
        Path badMagic = raw("magic.bin", 123, 1, 0, 0);
        var e = assertThrows(IOException.class, () -> TokenFile.open(badMagic).close());
        assertTrue(e.getMessage().contains("magic.bin") && e.getMessage().contains("magic 123"), e.getMessage());
        Path truncated = raw("truncated.bin", TokenFile.MAGIC_U16, TokenFile.VERSION_U16, 10, 6);
        e = assertThrows(IOException.class, () -> TokenFile.open(truncated).close());
        assertTrue(e.getMessage().contains("10 tokens") && e.getMessage().contains("1030 bytes"), e.getMessage());
        Path tiny = dir.resolve("tiny.bin");
        Files.write(tiny, new byte[100]);
        e = assertThrows(IOException.class, () -> TokenFile.open(tiny).close());
        assertTrue(e.getMessage().contains("shorter than"), e.getMessage());
    }

    @Test
    void outOfRangeReadsNameTheFile() throws IOException {
        Path a = dir.resolve("a.bin");
        TokenFile.write(a, new int[]{1, 2, 3});
        try (TokenFile f = TokenFile.open(a)) {
            var e = assertThrows(IndexOutOfBoundsException.class, () -> f.read(2, 2, new int[2]));
            assertTrue(e.getMessage().contains("a.bin"), e.getMessage());
        }
    }
}
