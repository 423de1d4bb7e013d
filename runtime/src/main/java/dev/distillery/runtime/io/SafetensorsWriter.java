package dev.distillery.runtime.io;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import com.fasterxml.jackson.databind.ObjectMapper;

import dev.distillery.kernels.DType;

/** Writes safetensors files, crash-safely through {@link AtomicFileWriter}. */
public final class SafetensorsWriter {

    /** One tensor to write: its raw bytes must hold exactly dtype × shape. */
    public record Item(String name, DType dtype, int[] shape, MemorySegment bytes) {
    }

    private static final ObjectMapper JSON = new ObjectMapper();

    private SafetensorsWriter() {
    }

    public static void write(Path target, List<Item> items, Map<String, String> metadata) throws IOException {
        write(target, items, metadata, null);
    }

    /**
     * As {@link #write(Path, List, Map)}, with every byte of the file also fed to {@code digest}
     * (or null) as it is written: a file's hash without reading it back (a dense teacher shard is
     * gigabytes). A digest that saw a failed write is the caller's to drop.
     */
    public static void write(Path target, List<Item> items, Map<String, String> metadata, MessageDigest digest) throws IOException {
        Map<String, Object> header = new LinkedHashMap<>();
        if (metadata != null && !metadata.isEmpty()) header.put("__metadata__", new LinkedHashMap<>(metadata));
        long offset = 0;
        for (Item item : items) {
            if (item.name().equals("__metadata__") || header.containsKey(item.name())) {
                throw new IllegalArgumentException(target + ": tensor name '" + item.name() + "' is reserved or repeated");
            }
            long n = 1;
            for (int d : item.shape()) n *= d;
            long bytes = n * item.dtype().bytes();
            if (item.bytes().byteSize() < bytes) {
                throw new IllegalArgumentException(target + ": tensor '" + item.name() + "' needs " + bytes
                        + " bytes, its segment has " + item.bytes().byteSize());
            }
            Map<String, Object> entry = new LinkedHashMap<>();
            entry.put("dtype", item.dtype().safetensorsName());
            entry.put("shape", item.shape());
            entry.put("data_offsets", new long[]{offset, offset + bytes});
            header.put(item.name(), entry);
            offset += bytes;
        }
        byte[] json = JSON.writeValueAsBytes(header);
        // Pad with spaces so the byte buffer starts 8-byte aligned (the spec allows trailing whitespace).
        int padded = (json.length + 7) / 8 * 8;
        ByteBuffer head = ByteBuffer.allocate(8 + padded).order(ByteOrder.LITTLE_ENDIAN);
        head.putLong(padded).put(json);
        while (head.hasRemaining()) head.put((byte) ' ');
        head.flip();

        AtomicFileWriter.write(target, ch -> {
            if (digest != null) digest.update(head.duplicate());
            AtomicFileWriter.writeFully(ch, head);
            for (Item item : items) {
                long n = 1;
                for (int d : item.shape()) n *= d;
                long bytes = n * item.dtype().bytes();
                long done = 0;
                while (done < bytes) {
                    int chunk = (int) Math.min(bytes - done, 1 << 26);
                    ByteBuffer part = item.bytes().asSlice(done, chunk).asByteBuffer();
                    if (digest != null) digest.update(part.duplicate());
                    AtomicFileWriter.writeFully(ch, part);
                    done += chunk;
                }
            }
        });
    }
}
