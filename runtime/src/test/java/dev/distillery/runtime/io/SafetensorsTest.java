package dev.distillery.runtime.io;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import dev.distillery.kernels.DType;
import dev.distillery.runtime.Tensor;

class SafetensorsTest {

    @TempDir
    Path dir;

    @Test
    void roundTripKeepsNamesShapesDtypesBytesAndMetadata() throws IOException {
        Path file = dir.resolve("model.safetensors");
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment f = arena.allocate(4L * 6);
            for (int i = 0; i < 6; i++) f.setAtIndex(ValueLayout.JAVA_FLOAT, i, i * 1.5f - 2);
            MemorySegment ids = arena.allocateFrom(ValueLayout.JAVA_INT, 7, -3, 11);
            MemorySegment half = arena.allocateFrom(ValueLayout.JAVA_SHORT, (short) 0x3c00, (short) 0xc000, (short) 1, (short) 2, (short) 3);
            MemorySegment empty = arena.allocate(1);
            SafetensorsWriter.write(file, List.of(
                    new SafetensorsWriter.Item("h.0.weight", DType.F32, new int[]{2, 3}, f),
                    new SafetensorsWriter.Item("ids", DType.I32, new int[]{3}, ids),
                    new SafetensorsWriter.Item("odd", DType.BF16, new int[]{5}, half),
                    new SafetensorsWriter.Item("empty", DType.F32, new int[]{0, 4}, empty)),
                    Map.of("format", "pt", "vocab", "37"));
        }
        try (SafetensorsFile st = SafetensorsFile.open(file)) {
            assertEquals(Map.of("format", "pt", "vocab", "37"), st.metadata());
            assertEquals(List.of("h.0.weight", "ids", "odd", "empty"), List.copyOf(st.entries().keySet()));
            assertEquals(0, st.headerBytes() % 8, "header padded to 8 bytes");
            Tensor w = st.tensor("h.0.weight");
            assertArrayEquals(new int[]{2, 3}, w.shape());
            assertEquals(DType.F32, w.dtype());
            for (int i = 0; i < 6; i++) assertEquals(i * 1.5f - 2, w.getFloat(i));
            assertEquals(-3, st.bytes("ids").getAtIndex(ValueLayout.JAVA_INT_UNALIGNED, 1));
            assertEquals((short) 0xc000, st.bytes("odd").getAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, 1));
            assertEquals(0, st.bytes("empty").byteSize());
            var e = assertThrows(IllegalArgumentException.class, () -> st.tensor("missing"));
            assertTrue(e.getMessage().contains("missing") && e.getMessage().contains(file.toString()));
        }
        try (var stream = Files.list(dir)) {
            assertEquals(1, stream.count(), "no temporary file left behind");
        }
    }

    /** The digest a writer is given sees the file's bytes, header and every chunk of a tensor past 64 MB. */
    @Test
    void theDigestGivenToTheWriterHashesTheFileAsWritten() throws IOException, NoSuchAlgorithmException {
        Path file = dir.resolve("shard.safetensors");
        MessageDigest digest = MessageDigest.getInstance("SHA-256");
        try (Arena arena = Arena.ofConfined()) {
            long n = (1L << 26) / 2 + 12_345;   // bf16 elements: one 64 MB chunk and a part
            MemorySegment big = arena.allocate(2 * n);
            for (long i = 0; i < n; i++) big.setAtIndex(ValueLayout.JAVA_SHORT, i, (short) (i * 2_654_435_761L >>> 7));
            MemorySegment ids = arena.allocateFrom(ValueLayout.JAVA_INT, 5, 6, 7);
            SafetensorsWriter.write(file, List.of(new SafetensorsWriter.Item("input_ids", DType.I32, new int[]{3}, ids),
                    new SafetensorsWriter.Item("logits", DType.BF16, new int[]{(int) n}, big)), Map.of("teacher", "t"), digest);
        }
        MessageDigest read = MessageDigest.getInstance("SHA-256");
        read.update(Files.readAllBytes(file));
        assertEquals(HexFormat.of().formatHex(read.digest()), HexFormat.of().formatHex(digest.digest()));
    }

    /** A file with the given header text and data bytes; the length field is the header's true length. */
    private Path raw(String name, String header, int dataBytes) throws IOException {
        byte[] h = header.getBytes(StandardCharsets.UTF_8);
        ByteBuffer b = ByteBuffer.allocate(8 + h.length + dataBytes).order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(h.length).put(h);
        Path p = dir.resolve(name);
        Files.write(p, b.array());
        return p;
    }

    private static String rejected(Path p) {
        SafetensorsFormatException e = assertThrows(SafetensorsFormatException.class, () -> SafetensorsFile.open(p).close());
        assertTrue(e.getMessage().startsWith(p.toString()), "message names the file: " + e.getMessage());
        return e.getMessage();
    }

    @Test
    void headerLengthPastEndOfFileIsRejected() throws IOException {
        Path p = dir.resolve("huge.safetensors");
        ByteBuffer b = ByteBuffer.allocate(16).order(ByteOrder.LITTLE_ENDIAN).putLong(1L << 40).putLong(0);
        Files.write(p, b.array());
        assertTrue(rejected(p).contains("header length"));
        Path negative = dir.resolve("negative.safetensors");
        Files.write(negative, ByteBuffer.allocate(12).order(ByteOrder.LITTLE_ENDIAN).putLong(-1L).putInt(0).array());
        assertTrue(rejected(negative).contains("header length"));
        Path tiny = dir.resolve("tiny.safetensors");
        Files.write(tiny, new byte[]{1, 2, 3});
        assertTrue(rejected(tiny).contains("shorter than"));
    }

    @Test
    void overlappingOffsetsAreRejected() throws IOException {
        Path p = raw("overlap.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                + "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12);
        assertTrue(rejected(p).contains("overlap"));
    }

    @Test
    void holeyOffsetsAreRejected() throws IOException {
        Path p = raw("hole.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                + "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12);
        assertTrue(rejected(p).contains("hole"));
        Path trailing = raw("trailing.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 9);
        assertTrue(rejected(trailing).contains("trailing"));
    }

    @Test
    void wrongByteCountsAreRejected() throws IOException {
        Path p = raw("count.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8);
        String m = rejected(p);
        assertTrue(m.contains("'a'") && m.contains("needs 12"), m);
        Path past = raw("past.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}", 8);
        assertTrue(rejected(past).contains("past the file"));
    }

    @Test
    void unknownDtypeIsRejected() throws IOException {
        Path p = raw("dtype.safetensors", "{\"a\":{\"dtype\":\"F31\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
        String m = rejected(p);
        assertTrue(m.contains("F31") && m.contains("'a'"), m);
    }

    @Test
    void headerThatIsNotJsonIsRejected() throws IOException {
        assertTrue(rejected(raw("json.safetensors", "{\"a\": [1, 2", 0)).contains("not valid JSON"));
        assertTrue(rejected(raw("array.safetensors", "[1, 2, 3]", 0)).contains("JSON object"));
        assertTrue(rejected(raw("dup.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                + "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4)).contains("not valid JSON"));
        assertTrue(rejected(raw("meta.safetensors", "{\"__metadata__\":{\"k\":1}}", 0)).contains("__metadata__"));
        assertTrue(rejected(raw("shape.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4)).contains("shape"));
    }
}
